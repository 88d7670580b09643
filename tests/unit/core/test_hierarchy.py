"""The hierarchy ψ and the hierarchy-masked softmax (Liu et al. 2019, Sec. 3.2)."""

import pytest
import torch

from maxl.core.hierarchy import Hierarchy, masked_log_softmax, masked_softmax, validate_psi


def naive_masked_softmax(logits, primary, psi):
    """Loop reference: softmax over the sample's own block, zero elsewhere."""
    out = torch.zeros_like(logits)
    for b in range(logits.shape[0]):
        start = sum(psi[: primary[b]])
        stop = start + psi[primary[b]]
        block = logits[b, start:stop]
        e = [float(torch.exp(v - block.max())) for v in block]
        for j, v in enumerate(e):
            out[b, start + j] = v / sum(e)
    return out


def test_mask_of_the_issue_example():
    h = Hierarchy([2, 2, 1])
    assert h.mask.int().tolist() == [[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]
    assert h.num_primary == 3 and h.num_aux == 5
    assert h.parent.tolist() == [0, 0, 1, 1, 2]


@pytest.mark.parametrize("psi", [[2, 2, 1], [1], [5] * 4, [3, 1, 4, 1, 5]])
def test_masked_softmax_rows_sum_to_one_and_are_zero_outside_block(psi):
    torch.manual_seed(0)
    h = Hierarchy(psi)
    logits = torch.randn(64, h.num_aux, dtype=torch.float64) * 3
    primary = torch.randint(0, len(psi), (64,))
    p = masked_softmax(logits, primary, psi)
    torch.testing.assert_close(p.sum(1), torch.ones(64, dtype=torch.float64))
    outside = ~h.mask[primary]
    assert (p[outside] == 0).all()
    assert (p[~outside] > 0).all()
    torch.testing.assert_close(p, naive_masked_softmax(logits, primary, psi), rtol=1e-12, atol=1e-12)


def test_masked_softmax_is_finite_for_huge_logits():
    psi = [2, 3]
    logits = torch.tensor([[1e4, -1e4, 1e4, 1e4, -1e4], [-1e4, 1e4, 1e4, -1e4, 1e4]])
    primary = torch.tensor([0, 1])
    p = masked_softmax(logits, primary, psi)
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p, torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0.5, 0, 0.5]]))
    logits.requires_grad_(True)
    masked_softmax(logits, primary, psi)[:, 0].sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.isfinite(masked_log_softmax(logits.detach(), primary, psi)[~Hierarchy(psi).mask[primary]]).sum() == 0


@pytest.mark.parametrize(
    "psi, match",
    [
        ([], "empty"),
        ([2, 0], r"psi\[1\] = 0"),
        ([3, -1], r"psi\[1\] = -1"),
        ([2, 1.5], "not an integer"),
        ("22", "sequence"),
        ([True, 2], "not an integer"),
    ],
)
def test_bad_psi_is_rejected(psi, match):
    with pytest.raises(ValueError, match=match):
        validate_psi(psi)
    with pytest.raises(ValueError, match=match):
        masked_softmax(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), psi)


def test_numpy_ints_are_accepted():
    import numpy as np

    assert validate_psi([np.int64(2), 3]) == (2, 3)


def test_primary_label_out_of_range():
    with pytest.raises(ValueError, match=r"primary label 3 is out of range.*\[0, 2\]"):
        masked_softmax(torch.zeros(2, 5), torch.tensor([0, 3]), [2, 2, 1])
    with pytest.raises(ValueError, match="primary label -1"):
        masked_softmax(torch.zeros(1, 5), torch.tensor([-1]), [2, 2, 1])


def test_logits_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"\[B, sum\(psi\)\] = \[B, 5\]"):
        masked_softmax(torch.zeros(2, 4), torch.tensor([0, 1]), [2, 2, 1])


def test_aux_labels_outside_their_block_are_rejected():
    h = Hierarchy([2, 3, 1])  # blocks [0, 2), [2, 5), [5, 6)
    primary = torch.tensor([0, 1, 2, 1, 0])
    h.check_aux_labels(torch.tensor([1, 4, 5, 2, 0]), primary)  # every label in its block
    with pytest.raises(
        ValueError,
        match=r"auxiliary label 2 of sample 0 \(primary class 0\) lies outside the "
        r"block of class 0, which is \[0, 2\)",
    ):
        h.check_aux_labels(torch.tensor([2, 4, 5, 2, 0]), primary)
    with pytest.raises(ValueError, match=r"auxiliary label 6 of sample 2 .* \[5, 6\) for psi = \[2, 3, 1\]"):
        h.check_aux_labels(torch.tensor([1, 4, 6, 2, 0]), primary)
    with pytest.raises(ValueError, match=r"auxiliary labels must be integers of shape \(5,\)"):
        h.check_aux_labels(torch.tensor([1, 4, 5]), primary)
    with pytest.raises(ValueError, match="primary label 3 is out of range"):
        h.check_aux_labels(torch.tensor([1, 4, 5, 2, 0]), torch.tensor([0, 1, 3, 1, 0]))
