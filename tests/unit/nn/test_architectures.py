"""The multi-task architectures: parameter counts against their formulas, shapes, the initial
equivalences (cross-stitch at α = I is independent networks; NDDR at its diagonal initialisation
is cross-stitch), the soft-sharing penalties against direct computations, and clear errors."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from maxl.nn.architectures import ARCHITECTURES, NDDR, CrossStitch, build_network, cross_stitch, nddr, soft_sharing
from maxl.nn.backbones import ConvNet, cnn3, tiny_cnn, vgg16_bn
from maxl.nn.networks import MultiTaskNetwork

P, K, H = 3, 7, 6  # primary classes, auxiliary classes, hidden width
PLAIN = [a for a in ARCHITECTURES if a != "adashare"]  # those on any blocks view (AdaShare: residual only)


def count(module):
    return sum(p.numel() for p in module.parameters())


def heads(f, hidden=H):
    """Parameters of the two heads Linear(F, h) → ReLU → Linear(h, P or K)."""
    return (f + 1) * hidden + (hidden + 1) * P + (f + 1) * hidden + (hidden + 1) * K


def convnet_count(in_c, widths, convs, bn=True):
    """A ConvNet's parameters: 3×3 kernels and biases, BatchNorm scale and shift."""
    total, c = 0, in_c
    for w, n in zip(widths, convs):
        for _ in range(n):
            total += c * w * 9 + w + (2 * w if bn else 0)
            c = w
    return total


@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize(
    "make,spec",
    [
        (lambda bn: tiny_cnn(1, bn), (1, (16, 32), (1, 1))),
        (lambda bn: cnn3(3, bn), (3, (32, 64, 128), (1, 1, 1))),
        (lambda bn: vgg16_bn(3, bn), (3, (64, 128, 256, 512, 512), (2, 2, 3, 3, 3))),
    ],
    ids=["tiny", "cnn3", "vgg16"],
)
def test_parameter_counts_follow_the_formulas(make, spec, bn):
    in_c, widths, convs = spec
    backbone = convnet_count(in_c, widths, convs, bn)
    f, t, n = widths[-1], 2, len(widths)
    expected = {
        "hard": backbone + heads(f),
        "soft": t * backbone + heads(f),
        "sparse": backbone + heads(f),  # the masks are buffers
        # a gate logit per edge (n(n+1) of them) and per target (t, i) a 1×1 conv from the own and
        # every source layer j ≤ i of the other tower, + BN
        "mtl-nas": t * backbone
        + n * (n + 1)
        + t * sum(w * (w + sum(widths[: i + 1])) + (2 * w if bn else 0) for i, w in enumerate(widths))
        + heads(f),
        "cross-stitch": t * backbone + n * t * t + heads(f),
        "nddr": t * backbone + sum(t * (t * w * w + (2 * w if bn else 0)) for w in widths) + heads(f),
        "mtan": backbone
        + heads(f)
        + t
        * sum(
            ((w if b == 0 else w + widths[b - 1]) + 1) * w + (w + 1) * w + (4 * w if bn else 0)
            for b, w in enumerate(widths)
        ),
    }
    for arch in PLAIN:
        net = build_network(arch, lambda: make(bn), P, K, H, batchnorm=bn)
        assert count(net) == expected[arch], arch
        primary, aux = net.eval()(torch.randn(2, in_c, 32, 32))
        assert primary.shape == (2, P) and aux.shape == (2, K)


@pytest.mark.parametrize("arch", PLAIN)
def test_shapes_with_and_without_an_auxiliary_head(arch):
    net = build_network(arch, lambda: tiny_cnn(1), P, K, H)
    primary, aux = net(torch.randn(5, 1, 8, 8))
    assert primary.shape == (5, P) and aux.shape == (5, K)
    assert (net.num_primary, net.num_aux) == (P, K)
    single = build_network(arch, lambda: tiny_cnn(1), P, 0, H)
    primary, aux = single(torch.randn(5, 1, 8, 8))
    assert primary.shape == (5, P) and aux is None
    if arch != "hard":
        assert single.backbone(torch.randn(2, 1, 8, 8)).shape == (2, 1, 32)  # [B, T, F] with T = 1


def test_hard_sharing_is_the_multitask_network_of_before():
    torch.manual_seed(3)
    old = MultiTaskNetwork(tiny_cnn(1), P, K, H)
    torch.manual_seed(3)
    new = build_network("hard", lambda: tiny_cnn(1), P, K, H)
    assert type(new) is MultiTaskNetwork
    assert list(old.state_dict()) == list(new.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))


def test_blocks_view_equals_the_backbone_forward():
    net = ConvNet(3, (4, 5, 6), (2, 1, 1), pools=(True, False, True)).eval()
    x = torch.randn(2, 3, 8, 8)
    h = x
    for b in range(net.num_blocks):
        h = net.block(b, h)
    torch.testing.assert_close(net.pool(h), net(x), rtol=0, atol=0)
    assert net.block_widths == (4, 5, 6)
    with pytest.raises(IndexError):
        net.block(3, h)


def independent_outputs(net, x):
    """Each task's backbone and head on its own, as if the networks were separate."""
    trunk = net.backbone
    primary = net.primary_head[1:](trunk.backbones[0](x))  # the head without its TaskSlice
    aux = net.aux_head[1:](trunk.backbones[1](x))
    return primary, aux


def test_cross_stitch_at_the_identity_equals_independent_networks():
    torch.manual_seed(0)
    net = cross_stitch(lambda: tiny_cnn(1), P, K, H, self_weight=1.0).double()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    for mode in (net.train, net.eval):
        mode()
        ours, ref = net(x), independent_outputs(copy.deepcopy(net), x)
        torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=1e-12)
    # and near (not at) the identity by default: the tasks mix
    mixed = cross_stitch(lambda: tiny_cnn(1), P, K, H)
    torch.testing.assert_close(mixed.backbone.alpha[0], torch.tensor([[0.9, 0.1], [0.1, 0.9]]))
    mixed.load_state_dict({k: v for k, v in net.float().state_dict().items() if "alpha" not in k}, strict=False)
    assert not torch.allclose(mixed(x.float())[0], net(x.float())[0])


@pytest.mark.parametrize("self_weight", [0.9, 0.7])
def test_nddr_at_its_diagonal_initialisation_equals_cross_stitch(self_weight):
    torch.manual_seed(1)
    stitch = cross_stitch(lambda: tiny_cnn(1), P, K, H, self_weight=self_weight).double().eval()
    net = nddr(lambda: tiny_cnn(1), P, K, H, self_weight=self_weight).double().eval()
    state = {k: v for k, v in stitch.state_dict().items() if not k.startswith("backbone.alpha")}
    missing = net.load_state_dict(state, strict=False).missing_keys
    assert all(k.startswith("backbone.reduce.") for k in missing)  # only the NDDR layers are its own
    for m in net.backbone.reduce.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0  # fresh statistics (mean 0, var 1): BatchNorm is the identity
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    for a, b in zip(net(x), stitch(x)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def direct_l2(trunk):
    total = 0.0
    for (_, w0), (_, w1) in zip(trunk.backbones[0].named_parameters(), trunk.backbones[1].named_parameters()):
        if w0.ndim >= 2:
            total += float(((w0.detach().double() - w1.detach().double()) ** 2).sum())
    return total


def direct_trace(trunk):
    total = 0.0
    for w0, w1 in zip(trunk.backbones[0].parameters(), trunk.backbones[1].parameters()):
        if w0.ndim < 2:
            continue
        stacked = np.stack([w0.detach().double().numpy(), w1.detach().double().numpy()], axis=-1)
        for mode in range(stacked.ndim):
            total += np.linalg.norm(np.moveaxis(stacked, mode, 0).reshape(stacked.shape[mode], -1), ord="nuc")
    return total


@pytest.mark.parametrize("penalty,direct", [("l2", direct_l2), ("trace", direct_trace)])
def test_soft_sharing_penalties_equal_a_direct_computation(penalty, direct):
    net = soft_sharing(lambda: tiny_cnn(1), P, K, H, penalty=penalty, weight=0.3)
    trunk = net.backbone
    assert trunk.has_penalty and len(trunk.tied) == 2  # the two conv kernels, not biases or BatchNorm
    torch.testing.assert_close(float(trunk.penalty().detach()), 0.3 * direct(trunk), rtol=1e-5, atol=0)
    # equal backbones: no L2 tie; the penalty_from form at other parameters
    params = {n: p.detach().clone() for n, p in trunk.named_parameters()}
    for n in list(params):
        if n.startswith("backbones.1."):
            params[n] = params[n.replace("backbones.1.", "backbones.0.", 1)]
    value = float(trunk.penalty_from(params).detach())
    assert value == 0.0 if penalty == "l2" else value > 0
    assert soft_sharing(lambda: tiny_cnn(1), P, 0, H).backbone.penalty() is None  # one task: nothing to tie


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("sluice", lambda: tiny_cnn(1), P, K)
    flat = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 8))  # noqa: E731
    for arch in ("cross-stitch", "nddr", "mtan"):
        with pytest.raises(ValueError, match="blocks view"):
            build_network(arch, flat, P, K)
    with pytest.raises(ValueError, match="penalty"):
        soft_sharing(lambda: tiny_cnn(1), P, K, penalty="l1")
    with pytest.raises(ValueError, match="weight"):
        soft_sharing(lambda: tiny_cnn(1), P, K, weight=-1.0)
    with pytest.raises(ValueError, match="too small"):
        build_network("mtan", lambda: tiny_cnn(1), P, K)(torch.randn(2, 1, 2, 2))
    assert isinstance(CrossStitch(lambda: tiny_cnn(1), 2), nn.Module)
    assert isinstance(NDDR(lambda: tiny_cnn(1), 3), nn.Module)
