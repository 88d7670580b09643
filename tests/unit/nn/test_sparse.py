"""Sparse sharing: identical masks = hard sharing; masked weights, their gradients and every
optimiser's updates exactly zero outside the masks; the pruning per round against a hand
computation; the search's rewinding."""

import math

import pytest
import torch

from maxl.nn.architectures import build_network, search_masks
from maxl.nn.architectures.sparse import SparseSharing, magnitude_prune, round_rate
from maxl.nn.backbones import tiny_cnn
from maxl.nn.networks import MultiTaskNetwork


def network(seed=0):
    torch.manual_seed(seed)
    return build_network("sparse", lambda: tiny_cnn(1), 2, 10, hidden=8).double()


def random_masks(trunk, keep=(0.6, 0.4), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        {n: (torch.rand(m.shape, generator=g) < k).double() for n, m in trunk.masks(t).items()}
        for t, k in enumerate(keep)
    ]


def test_identical_masks_are_hard_sharing():
    net = network()
    trunk = net.backbone
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    hard = MultiTaskNetwork.from_modules(trunk.backbone, net.primary_head[1:], net.aux_head[1:])
    for masks in (None, random_masks(trunk, keep=(0.5, 0.5))[:1] * 2):  # all ones; one mask for both tasks
        if masks is not None:
            trunk.set_masks(masks)  # zeroes the weights outside it: the hard-sharing network's weights
        for ours, theirs in zip(net(x), hard(x)):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-13)
    assert trunk.shared_fraction() == 1.0


def test_masked_weights_and_gradients_are_exactly_zero():
    net = network()
    trunk = net.backbone
    masks = random_masks(trunk)
    trunk.set_masks(masks)
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    primary, aux = net(x)
    loss_p = torch.nn.functional.cross_entropy(primary, y)
    loss_a = torch.nn.functional.cross_entropy(aux, y * 5)
    for n in trunk.prunable:
        w = trunk.backbone.get_parameter(n)
        union = torch.maximum(masks[0][n], masks[1][n])
        assert torch.all(w[union == 0] == 0)
        (g_p,) = torch.autograd.grad(loss_p, w, retain_graph=True)
        (g_a,) = torch.autograd.grad(loss_a, w, retain_graph=True)
        assert torch.all(g_p[masks[0][n] == 0] == 0) and torch.all(g_a[masks[1][n] == 0] == 0)
        assert torch.count_nonzero(g_p) > 0 and torch.count_nonzero(g_a) > 0
    assert 0.0 < trunk.shared_fraction() < 1.0
    assert trunk.density(0) == pytest.approx(0.6, abs=0.05)


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=1e-3),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=1e-2),
    ],
    ids=["sgd-momentum-wd", "nesterov", "adam", "adamw"],
)
def test_no_optimiser_moves_a_weight_outside_every_mask(make_opt):
    net = network()
    trunk = net.backbone
    masks = random_masks(trunk)
    trunk.set_masks(masks)
    opt = make_opt(net.parameters())
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    for _ in range(5):
        opt.zero_grad()
        primary, aux = net(x)
        (torch.nn.functional.cross_entropy(primary, y) + torch.nn.functional.cross_entropy(aux, y * 5)).backward()
        opt.step()
    for n in trunk.prunable:
        w = trunk.backbone.get_parameter(n)
        union = torch.maximum(masks[0][n], masks[1][n])
        assert torch.all(w[union == 0] == 0)
        assert torch.count_nonzero(w[union == 1]) == int(union.sum())


def test_pruning_rate_per_round_by_hand():
    rate = round_rate(0.1, 20)
    assert rate == pytest.approx(1 - 0.1 ** (1 / 20), rel=1e-15) and rate == pytest.approx(0.108749, abs=1e-6)
    torch.manual_seed(0)
    w = torch.randn(40, 25)  # 1000 weights
    mask = torch.ones_like(w)
    remaining, expected = 1000, []
    for _ in range(20):
        remaining -= math.floor(rate * remaining + 0.5)
        expected.append(remaining)
    counts = []
    for _ in range(20):
        new = magnitude_prune(w, mask, rate)
        # the pruned ones are the smallest in magnitude among the remaining
        pruned, kept = w[(mask == 1) & (new == 0)].abs(), w[new == 1].abs()
        assert pruned.max() <= kept.min()
        mask = new
        counts.append(int(mask.sum()))
    assert counts == expected
    assert expected[0] == 891 and abs(expected[-1] - 100) <= 5  # ≈ 10 % after 20 rounds
    with pytest.raises(ValueError, match="pruning rate"):
        magnitude_prune(w, mask, 1.0)


def test_search_rewinds_to_the_warm_up_weights():
    net = network().float()
    torch.manual_seed(2)
    xs, ys = torch.randn(4, 8, 1, 8, 8), torch.randint(0, 2, (4, 8))

    def batches():
        for x, y in zip(xs, ys):
            yield x, y, y * 5 + 1

    ce = torch.nn.functional.cross_entropy
    losses = [lambda out, y, a: ce(out[0], y), lambda out, y, a: ce(out[1], a)]
    ref = network().float()
    search_masks(ref, batches, losses, rounds=0, rate=0.0, steps=0, warmup_steps=3)  # the warm-up alone
    masks = search_masks(net, batches, losses, rounds=3, rate=0.2, steps=4, warmup_steps=3)
    trunk = net.backbone
    for n in trunk.prunable:
        for t in (0, 1):
            kept = masks[t][n]
            assert int(kept.sum()) < kept.numel()  # pruned
        union = torch.maximum(masks[0][n], masks[1][n])
        w, w_warm = trunk.backbone.get_parameter(n), ref.backbone.backbone.get_parameter(n)
        torch.testing.assert_close(w, w_warm * union, rtol=0, atol=0)  # rewound to θ_w, zero outside
    assert trunk.density(0) == pytest.approx(trunk.density(1), abs=0.02)  # same rate for both tasks
    with pytest.raises(ValueError, match="SparseSharing"):
        search_masks(build_network("hard", lambda: tiny_cnn(1), 2, 10), batches, losses, rounds=1, rate=0.1, steps=1)


def test_clear_errors():
    trunk = SparseSharing(lambda: tiny_cnn(1), 2)
    with pytest.raises(ValueError, match="2 tasks"):
        trunk.set_masks([trunk.masks(0)])
    bad = {n: 2 * m for n, m in trunk.masks(0).items()}
    with pytest.raises(ValueError, match="expected 0/1"):
        trunk.set_masks([bad, bad])
