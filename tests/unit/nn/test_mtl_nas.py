"""MTL-NAS: the edge count of the search space, independent towers at initialisation, the gates,
the minimum-entropy regulariser and the temperature by hand, a fixed architecture's parameters."""

import math

import pytest
import torch

from maxl.nn.architectures import build_network
from maxl.nn.architectures.mtl_nas import MTLNAS, derive_edges, edges_text, gate_entropy, parse_edges, search_space
from maxl.nn.backbones import ConvNet, tiny_cnn
from maxl.nn.resnet import cifar_resnet


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("tasks,blocks,depth", [(2, 4, None), (2, 4, 1), (3, 5, 2), (2, 10, 0)])
def test_edge_count_of_the_search_space(tasks, blocks, depth):
    d = blocks if depth is None else depth
    assert len(search_space(tasks, blocks, depth)) == tasks * (tasks - 1) * sum(min(i, d) + 1 for i in range(blocks))
    if depth is None:
        assert len(search_space(tasks, blocks)) == tasks * (tasks - 1) * blocks * (blocks + 1) // 2
    for t, i, s, j in search_space(tasks, blocks, depth):
        assert s != t and j <= i and (depth is None or i - j <= depth)


@pytest.mark.parametrize("make", [lambda: ConvNet(1, (3, 4, 5), (1, 1, 1)), lambda: cifar_resnet(8, 1)])
def test_at_initialisation_the_towers_are_independent(make):
    torch.manual_seed(0)
    trunk = MTLNAS(make, 2, batchnorm=False).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    for mode in (trunk.train, trunk.eval):
        mode()
        for t, features in enumerate(trunk.task_features(x)):
            torch.testing.assert_close(features, trunk.backbones[t](x), rtol=0, atol=1e-12)
    # with BatchNorm at its initial statistics (evaluation): the same up to BN's 1/sqrt(1 + eps)
    torch.manual_seed(0)
    bn = MTLNAS(make, 2).double().eval()
    for t, features in enumerate(bn.task_features(x)):
        torch.testing.assert_close(features, bn.backbones[t](x), rtol=1e-4, atol=1e-6)


def test_gates_entropy_and_temperature_by_hand():
    trunk = MTLNAS(lambda: ConvNet(1, (3, 4), (1, 1)), 2, tau=2.0, tau_decay=0.5, entropy_weight=0.3)
    assert len(trunk.edges) == 2 * (1 + 2)
    trunk.gate_logits.data[:] = torch.tensor([0.0, 1.0, -2.0, 3.0, 0.5, -0.5])
    noise = torch.tensor([0.1, -0.2, 0.3, 0.0, 1.0, -1.0])
    trunk.gumbel_noise = noise
    torch.testing.assert_close(trunk.gates(), torch.sigmoid((trunk.gate_logits + noise) / 2.0))
    log = [trunk.begin_epoch(e)["mtlnas_tau"] for e in range(3)]
    assert log == [2.0, 1.0, 0.5]
    trunk.eval()
    torch.testing.assert_close(trunk.gates(), torch.sigmoid(trunk.gate_logits))
    by_hand = 0.0
    for a in trunk.gate_logits.tolist():
        p = 1 / (1 + math.exp(-a))
        by_hand -= p * math.log(p) + (1 - p) * math.log(1 - p)
    assert gate_entropy(trunk.gate_logits).item() == pytest.approx(by_hand, rel=1e-6)
    assert trunk.penalty().item() == pytest.approx(0.3 * by_hand, rel=1e-6)
    kept = derive_edges(trunk)
    assert kept.tolist() == [0, 1, 0, 1, 1, 0]
    assert edges_text(kept) == "0,1,0,1,1,0"
    torch.testing.assert_close(parse_edges("0,1,0,1,1,0", 6), kept)


def test_a_fixed_architecture_has_only_its_edges():
    make = lambda: ConvNet(1, (3, 4), (1, 1))  # noqa: E731
    searched = MTLNAS(make, 2)
    fixed = MTLNAS(make, 2, edges="0,1,0,1,1,0")
    assert fixed.penalty() is None and fixed.gates().tolist() == [0, 1, 0, 1, 1, 0]
    # edges (t, i, s, j): kept (0,1,1,0) width 3 into width 4; (1,0,0,0) width 3 into 3; (1,1,0,0) 3 into 4
    assert search_space(2, 2) == [(0, 0, 1, 0), (0, 1, 1, 0), (0, 1, 1, 1), (1, 0, 0, 0), (1, 1, 0, 0), (1, 1, 0, 1)]
    towers = 2 * count(make())
    fusion = 3 * (3 + 0) + 4 * (4 + 3) + 3 * (3 + 3) + 4 * (4 + 3) + 2 * 2 * (3 + 4)  # 1×1 convs + BN
    assert count(fixed) == towers + fusion + 6  # + the (unused) gate logits
    assert count(searched) > count(fixed)
    primary, aux = build_network("mtl-nas", lambda: tiny_cnn(1), 2, 10, hidden=8)(torch.randn(4, 1, 8, 8))
    assert primary.shape == (4, 2) and aux.shape == (4, 10)


def test_clear_errors():
    with pytest.raises(ValueError, match="expected 6 entries"):
        parse_edges("1,0", 6)
    with pytest.raises(ValueError, match="tau must be > 0"):
        MTLNAS(lambda: tiny_cnn(1), 2, tau=0.0)
