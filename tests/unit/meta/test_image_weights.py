"""Per-image auxiliary loss weights learnt by the meta-gradient (WAMAL).

The generator's extra output w ∈ (0, 1) scales each image's auxiliary loss by s = 2^(2r·w − r).
Checked against an independent computation: float64 central finite differences of J(θ2) where
the look-ahead's auxiliary loss is written as an explicit per-image loop, mean_b s_b ℓ(z_b, ŷ_b),
not through the weighted targets that the engines use.
"""

import copy

import pytest
import torch

from maxl.core.losses import classification_loss, negative_entropy
from maxl.meta import MetaConfig, meta_gradient
from maxl.nn.backbones import ConvNet
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork

from tests.unit.meta.tiny import EXACT_VARIANTS, PSI, exact_meta_result, finite_difference_gradient, flat, outer_batch


def weighted_networks(weight_range=1.5, seed=0):
    torch.manual_seed(seed)
    net = MultiTaskNetwork(ConvNet(1, (3,), (1,)), len(PSI), sum(PSI), hidden=5).double()
    gen = LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5, weight_range=weight_range).double()
    with torch.no_grad():  # spread the weights' logits so that the scales differ clearly per image
        gen.head[-1].weight[-1].mul_(20.0)
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 2, 1])
    return net, gen, x, y


def naive_weighted_objective(net, gen, x, y, loss_fn, alpha, lam, outer=None):
    """J = L_pri(f(x_o; θ1⁺)) + λ Σ ȳ log ȳ with θ1⁺ = θ1 − α ∇ [L_pri + mean_b s_b ℓ_b], one image at a time."""
    x_o, y_o = (x, y) if outer is None else outer
    soft, scale = gen.labels_and_scales(x, y)
    look = copy.deepcopy(net)
    pri, aux = look(x)
    aux_loss = sum(scale[b] * loss_fn(aux[b : b + 1], soft[b : b + 1]) for b in range(x.shape[0])) / x.shape[0]
    grads = torch.autograd.grad(loss_fn(pri, y) + aux_loss, list(look.parameters()))
    with torch.no_grad():
        for p, g in zip(look.parameters(), grads):
            p -= alpha * g
    return loss_fn(look(x_o)[0], y_o) + lam * negative_entropy(soft)


def test_the_generator_gives_labels_in_the_block_and_scales_in_the_range():
    net, gen, x, y = weighted_networks(weight_range=1.5)
    soft, scale = gen.labels_and_scales(x, y)
    assert soft.shape == (6, sum(PSI)) and scale.shape == (6,)
    torch.testing.assert_close(soft.sum(1), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(gen(x, y), soft)  # forward stays the distribution
    w = torch.sigmoid(gen.logits(x)[:, -1])
    torch.testing.assert_close(scale, 2.0 ** (2 * 1.5 * w - 1.5))
    assert scale.min() >= 2.0**-1.5 and scale.max() <= 2.0**1.5
    assert scale.max() - scale.min() > 0.3  # the images get different weights
    masked = soft.clone()
    for b, c in enumerate(y.tolist()):
        start = sum(PSI[:c])
        masked[b, start : start + PSI[c]] = 0
    assert masked.abs().max() == 0


def test_without_a_range_the_generator_has_no_weight_output():
    gen = LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5)
    assert gen.head[-1].out_features == sum(PSI) and gen.weight_range == 0
    with pytest.raises(ValueError, match="weight_range must be >= 0"):
        LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5, weight_range=-1.0)


@pytest.mark.parametrize("variant", EXACT_VARIANTS)
@pytest.mark.parametrize("with_outer", [False, True])
def test_weighted_meta_gradient_equals_finite_differences(variant, with_outer):
    net, gen, x, y = weighted_networks()
    loss_fn = classification_loss("focal", gamma=2.0)
    outer = outer_batch() if with_outer else None
    cfg = MetaConfig(inner_lr=0.5, engine=variant.split("-")[1])
    exact = flat(exact_meta_result(variant, net, gen, x, y, loss_fn, cfg, outer).grads)
    with torch.no_grad():
        fd = flat(
            finite_difference_gradient(
                lambda: (
                    torch.enable_grad().__enter__()
                    or naive_weighted_objective(net, gen, x, y, loss_fn, 0.5, 0.2, outer)
                ),
                list(gen.parameters()),
            )
        )
    rel = (exact - fd).norm() / fd.norm()
    assert rel < 1e-5, f"relative error {rel:.2e}"
    # the weight output gets a meta-gradient of its own (the last row of the head's last layer)
    last = meta_gradient(net, gen, x, y, loss_fn, cfg, outer_batch=outer).grads[-2][-1]
    assert last.abs().max() > 1e-8


def test_the_first_order_engine_approximates_the_weighted_meta_gradient():
    net, gen, x, y = weighted_networks()
    loss_fn = classification_loss("ce")
    exact = flat(meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.01, engine="func")).grads)
    first = flat(meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.01, order="first")).grads)
    assert (first - exact).norm() / exact.norm() < 1e-2


def test_the_learner_trains_on_weighted_targets_and_counts_the_labels_as_distributions():
    from auxtasks import AuxiliaryLearner, GeneratedLabels
    from maxl.train.diagnostics import LabelUsage

    net, gen, x, y = weighted_networks()
    loss_fn = classification_loss("ce")
    task = GeneratedLabels(gen, meta=MetaConfig(inner_lr=0.1), loss_fn=loss_fn, head=net.aux_head)
    learner = AuxiliaryLearner(net.backbone, net.primary_head, [task], primary_loss=loss_fn)
    out = learner(x, y)
    soft, scale = gen.labels_and_scales(x, y)
    target = out.targets["generated"]
    torch.testing.assert_close(target, soft * scale[:, None])
    aux = net(x)[1]
    per_image = torch.stack([loss_fn(aux[b : b + 1], soft[b : b + 1]) for b in range(6)])
    torch.testing.assert_close(out.losses["generated"], (scale * per_image).mean())

    usage, reference = LabelUsage(PSI), LabelUsage(PSI)
    usage.update(target, y)
    reference.update(soft, y)
    got, want = usage.summary(), reference.summary()
    assert got["label_counts"] == want["label_counts"]
    for key in ("label_entropy", "label_max_prob", "label_sharpness", "label_used_fraction"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key
