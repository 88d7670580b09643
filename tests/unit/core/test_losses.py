"""Focal / cross-entropy losses with hard and soft targets, and the entropy term."""

import math

import pytest
import torch
import torch.nn.functional as F

from maxl.core.losses import classification_loss, focal_loss, negative_entropy


def test_focal_with_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 5, (8,))
    torch.testing.assert_close(focal_loss(logits, y, 0.0), F.cross_entropy(logits, y))
    soft = torch.softmax(torch.randn(8, 5, dtype=torch.float64), 1)
    torch.testing.assert_close(focal_loss(logits, soft, 0.0), F.cross_entropy(logits, soft))


def test_focal_matches_the_formula_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    p = torch.softmax(logits, 1)[0]
    expected = -((1 - p[0]) ** 2 * math.log(p[0]))
    assert focal_loss(logits, torch.tensor([0]), 2.0).item() == pytest.approx(expected.item(), rel=1e-12)
    soft = torch.tensor([[0.25, 0.75, 0.0]], dtype=torch.float64)
    expected = -(0.25 * (1 - p[0]) ** 2 * torch.log(p[0]) + 0.75 * (1 - p[1]) ** 2 * torch.log(p[1]))
    assert focal_loss(logits, soft, 2.0).item() == pytest.approx(expected.item(), rel=1e-12)
    # hard labels and their one-hot rows give the same loss
    assert focal_loss(logits, torch.tensor([1]), 2.0).item() == pytest.approx(
        focal_loss(logits, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), 2.0).item()
    )


def test_loss_errors():
    with pytest.raises(ValueError, match="soft target shape"):
        focal_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), -1)
    with pytest.raises(ValueError, match="unknown loss"):
        classification_loss("hinge")


def test_negative_entropy_values_and_zero_classes():
    uniform = torch.full((4, 8), 1 / 8, dtype=torch.float64)
    assert negative_entropy(uniform).item() == pytest.approx(-math.log(8))
    onehot = torch.eye(8, dtype=torch.float64)[[3, 3, 3]]
    assert negative_entropy(onehot).item() == 0.0
    # classes that no sample can take give 0 and a finite gradient
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    p = torch.cat([torch.softmax(logits, 1), torch.zeros(3, 2, dtype=torch.float64)], 1)
    h = negative_entropy(p)
    h.backward()
    assert torch.isfinite(h) and torch.isfinite(logits.grad).all()


def test_mean_entropy_of_rows_against_a_loop_and_its_gradient_in_float64():
    import math

    from maxl.core.losses import mean_entropy

    probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    expected = sum(-sum(p * math.log(p) for p in row if p > 0) for row in probs.tolist()) / 3
    value = mean_entropy(probs)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    (grad,) = torch.autograd.grad(value, probs)
    inside = probs.detach() > 0
    torch.testing.assert_close(grad[inside], (-(probs.detach().log() + 1) / 3)[inside])
    assert torch.all(grad[~inside] == 0)  # outside the blocks: no NaN, no pull


def test_paired_mutual_information_against_a_direct_sum_and_its_extremes():
    import math

    from maxl.core.losses import paired_mutual_information

    torch.manual_seed(0)
    p = torch.softmax(torch.randn(7, 4, dtype=torch.float64), 1)
    q = torch.softmax(torch.randn(7, 4, dtype=torch.float64), 1)
    joint = [
        [sum(p[b, k] * q[b, m] + p[b, m] * q[b, k] for b in range(7)).item() / 14 for m in range(4)] for k in range(4)
    ]
    row = [sum(r) for r in joint]
    expected = sum(joint[k][m] * math.log(joint[k][m] / (row[k] * row[m])) for k in range(4) for m in range(4))
    assert paired_mutual_information(p, q).item() == pytest.approx(expected, rel=1e-12)
    one_hot = torch.eye(4, dtype=torch.float64).repeat(3, 1)  # the same sharp, balanced label for both views
    assert paired_mutual_information(one_hot, one_hot).item() == pytest.approx(math.log(4), rel=1e-9)
    uniform = torch.full((8, 4), 0.25, dtype=torch.float64)
    assert paired_mutual_information(uniform, one_hot.repeat(1, 1)[:8]).item() == pytest.approx(0.0, abs=1e-12)
