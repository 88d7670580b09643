"""Hard auxiliary labels through a straight-through Gumbel-softmax (``LabelGenerator(gumbel_tau=τ)``).

In training mode the auxiliary head learns from h = one_hot(argmax_c (z_c + G_c)) inside each
image's block, passed straight through as h + r − r.detach() with r = masked softmax((z + G)/τ)
(Jang, Gu, Poole, ICLR 2017, Sec. 2–3), while J's entropy term and the statistics keep the
noise-free masked softmax of z. The meta-gradient of every engine is checked against a naive
computation with the same noise (torch reseeded before each call): the hard target as a leaf,
the look-ahead by a deep copy of the network, u = ∂J/∂h by autograd, then
∇θ2 = (∂r/∂θ2)ᵀ u + ∇θ2 λ Σ ȳ log ȳ.
"""

import copy

import pytest
import torch

from maxl.core.losses import classification_loss, negative_entropy
from maxl.meta import MetaConfig, ObjectiveConfig, fused_step, meta_gradient
from maxl.meta.lookahead import generated_targets
from maxl.nn.backbones import ConvNet
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork

from tests.unit.meta.tiny import EXACT_VARIANTS, PSI, exact_meta_result, flat, outer_batch

SEED = 1234  # torch's generator is reseeded before every call that draws the noise


def gumbel_networks(tau=0.7, weight_range=0.0, seed=0):
    torch.manual_seed(seed)
    net = MultiTaskNetwork(ConvNet(1, (3,), (1,)), len(PSI), sum(PSI), hidden=5).double()
    gen = LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5, weight_range=weight_range, gumbel_tau=tau).double()
    with torch.no_grad():  # spread the logits so that the labels are far from uniform
        gen.head[-1].weight.mul_(8.0)
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 2, 1])
    return net, gen, x, y


def block_of(c):
    start = sum(PSI[:c])
    return range(start, start + PSI[c])


def naive_noise(gen, x, y, tau):
    """(z, G, h, r) drawn independently of LabelGenerator: G = −log E, E ~ Exp(1) on [B, K] from
    torch's generator (the draw of torch.nn.functional.gumbel_softmax), h and r per block by loops."""
    z = gen.logits(x)[:, : sum(PSI)]
    g = -torch.empty_like(z).exponential_().log()
    h = torch.zeros_like(z)
    r = torch.zeros_like(z)
    for b, c in enumerate(y.tolist()):
        idx = list(block_of(c))
        perturbed = z[b, idx] + g[b, idx]
        h[b, idx[int(perturbed.argmax())]] = 1.0
        r[b, idx] = torch.softmax(perturbed / tau, 0)
    return z, g, h, r


def naive_gumbel_gradient(net, gen, x, y, loss_fn, alpha, lam, tau, outer=None, steps=1):
    """∇θ2 J with the hard labels straight through, independently of maxl.meta."""
    x_o, y_o = (x, y) if outer is None else outer
    torch.manual_seed(SEED)
    _, _, h, r = naive_noise(gen, x, y, tau)
    leaf = h.clone().requires_grad_()  # the hard target as a leaf: u = ∂J/∂h
    look = copy.deepcopy(net)
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    fast = dict(look.named_parameters())
    for _ in range(steps):  # θ1^(j+1) = θ1^(j) − α ∇θ1 (L_pri + L_aux(·, h)), differentiable in h
        pri, aux = torch.func.functional_call(look, {**fast, **buffers}, (x,))
        grads = torch.autograd.grad(loss_fn(pri, y) + loss_fn(aux, leaf), list(fast.values()), create_graph=True)
        fast = {n: p - alpha * g for (n, p), g in zip(fast.items(), grads)}
    outer_loss = loss_fn(torch.func.functional_call(look, {**fast, **buffers}, (x_o,))[0], y_o)
    (u,) = torch.autograd.grad(outer_loss, leaf)
    params = list(gen.parameters())
    look_part = torch.autograd.grad(r, params, grad_outputs=u, allow_unused=True)
    soft = gen.hierarchy.masked_softmax(gen.logits(x)[:, : sum(PSI)], y)  # the noise-free labels
    entropy = torch.autograd.grad(lam * negative_entropy(soft), params, allow_unused=True)
    zero = [torch.zeros_like(p) for p in params]
    return [(z if a is None else a) + (z if b is None else b) for a, b, z in zip(look_part, entropy, zero)]


def test_the_training_target_is_one_hot_inside_the_block_and_soft_stays_the_distribution():
    net, gen, x, y = gumbel_networks()
    torch.manual_seed(SEED)
    soft, target = generated_targets(gen, x, y)
    assert target.requires_grad and soft.requires_grad
    assert set(target.detach().unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(target.detach().sum(1), torch.ones(6, dtype=torch.float64), rtol=0, atol=0)
    for b, c in enumerate(y.tolist()):
        assert target[b].argmax().item() in block_of(c)
    torch.testing.assert_close(soft, gen.hierarchy.masked_softmax(gen.logits(x), y), rtol=0, atol=0)
    torch.testing.assert_close(gen(x, y), soft, rtol=0, atol=0)  # forward never samples
    torch.manual_seed(SEED)
    _, _, h, _ = naive_noise(gen, x, y, 0.7)
    torch.testing.assert_close(target.detach(), h, rtol=0, atol=0)  # the argmax of z + G


def test_the_sample_frequencies_approach_the_masked_softmax():
    _, gen, x, y = gumbel_networks(tau=0.5)
    n = 20000  # draws per image; a block-constant batch repeated, so the BatchNorm statistics stay the batch's
    with torch.no_grad():
        torch.manual_seed(SEED)
        soft, target = generated_targets(gen, x.repeat(n, 1, 1, 1), y.repeat(n))
    p = soft[:6]
    freq = target.view(n, 6, -1).mean(0)
    # tolerance: 5 binomial standard deviations sqrt(p (1 − p) / n) of each frequency, plus 1e-3
    tol = 5 * (p * (1 - p) / n).sqrt() + 1e-3
    assert ((freq - p).abs() <= tol).all(), f"max deviation {(freq - p).abs().max():.4f}"
    assert p.max() > 0.6 and p[p > 0].min() < 0.2  # the test sees a distribution far from uniform


def test_eval_mode_gives_the_soft_labels():
    _, gen, x, y = gumbel_networks()
    gen.eval()
    soft, target = generated_targets(gen, x, y)
    torch.testing.assert_close(target, soft, rtol=0, atol=0)
    assert soft[y != 1].max() < 1  # (class 1's block has one auxiliary class)


def test_per_image_weights_scale_the_hard_targets():
    _, gen, x, y = gumbel_networks(weight_range=1.5)
    torch.manual_seed(SEED)
    soft, target = generated_targets(gen, x, y)
    _, scale = gen.labels_and_scales(x, y)
    torch.manual_seed(SEED)
    _, _, h, _ = naive_noise(gen, x, y, 0.7)
    torch.testing.assert_close(target.detach(), h * scale[:, None].detach(), rtol=0, atol=0)
    torch.testing.assert_close(soft.sum(1).detach(), torch.ones(6, dtype=torch.float64))


def test_a_negative_temperature_is_refused():
    with pytest.raises(ValueError, match="gumbel_tau must be >= 0"):
        LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5, gumbel_tau=-0.5)
    assert LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5).gumbel_tau == 0


@pytest.mark.parametrize("variant", EXACT_VARIANTS)
@pytest.mark.parametrize("with_outer", [False, True])
def test_the_straight_through_meta_gradient_equals_the_naive_computation(variant, with_outer):
    net, gen, x, y = gumbel_networks()
    loss_fn = classification_loss("focal", gamma=2.0)
    outer = outer_batch() if with_outer else None
    cfg = MetaConfig(inner_lr=0.5, engine=variant.split("-")[1])
    torch.manual_seed(SEED)
    result = exact_meta_result(variant, net, gen, x, y, loss_fn, cfg, outer, ObjectiveConfig(record_parts=with_outer))
    want = naive_gumbel_gradient(net, gen, x, y, loss_fn, 0.5, 0.2, 0.7, outer)
    rel = (flat(result.grads) - flat(want)).norm() / flat(want).norm()
    assert rel < 1e-9, f"relative error {rel:.2e}"
    torch.manual_seed(SEED)
    _, _, h, _ = naive_noise(gen, x, y, 0.7)
    torch.testing.assert_close(result.targets, h, rtol=0, atol=0)  # the sample the look-ahead learnt from
    torch.testing.assert_close(result.soft_labels, gen(x, y).detach(), rtol=0, atol=0)
    assert result.image_scales is None
    gen.gumbel_tau = 0.0  # the soft labels' meta-gradient differs
    soft_grads = meta_gradient(net, gen, x, y, loss_fn, cfg, outer_batch=outer).grads
    assert (flat(soft_grads) - flat(want)).norm() > 1e-3 * flat(want).norm()


@pytest.mark.parametrize("variant", ["meta-func", "meta-higher", "fused-func"])
def test_the_straight_through_meta_gradient_through_two_look_ahead_steps(variant):
    net, gen, x, y = gumbel_networks()
    loss_fn = classification_loss("ce")
    cfg = MetaConfig(inner_lr=0.3, engine=variant.split("-")[1], inner_steps=2)
    torch.manual_seed(SEED)
    got = exact_meta_result(variant, net, gen, x, y, loss_fn, cfg).grads
    want = naive_gumbel_gradient(net, gen, x, y, loss_fn, 0.3, 0.2, 0.7, steps=2)
    rel = (flat(got) - flat(want)).norm() / flat(want).norm()
    assert rel < 1e-9, f"relative error {rel:.2e}"


def test_the_first_order_engine_approximates_the_straight_through_meta_gradient():
    net, gen, x, y = gumbel_networks()
    loss_fn = classification_loss("ce")
    torch.manual_seed(SEED)
    exact = flat(meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.01, engine="func")).grads)
    torch.manual_seed(SEED)
    first = flat(meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.01, order="first")).grads)
    assert (first - exact).norm() / exact.norm() < 1e-2


def test_the_fused_multitask_gradient_learns_from_the_same_hard_sample():
    net, gen, x, y = gumbel_networks()
    loss_fn = classification_loss("ce")
    torch.manual_seed(SEED)
    r = fused_step(copy.deepcopy(net), gen, x, y, loss_fn, MetaConfig(inner_lr=0.5, engine="jvp"))
    pri, aux = net(x)
    want = torch.autograd.grad(loss_fn(pri, y) + loss_fn(aux, r.meta.targets), list(net.parameters()))
    torch.testing.assert_close(flat(r.net_grads), flat(want), rtol=1e-12, atol=1e-14)
    assert r.meta.targets.max() == 1 and r.meta.soft_labels[y != 1].max() < 1


def test_centring_refuses_hard_labels():
    net, gen, x, y = gumbel_networks()
    with pytest.raises(ValueError, match="Gumbel"):
        meta_gradient(
            net, gen, x, y, classification_loss("ce"), MetaConfig(), objective=ObjectiveConfig(centre_by_class=True)
        )
