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
    """With the sources' initial weight β = 0 (``source_init=0``). The default β = 0.1 (the paper's
    0.9 / 0.1) mixes the sources in from the start, so that the gates have a gradient there
    (:func:`test_every_gate_has_a_gradient_at_initialisation`)."""
    torch.manual_seed(0)
    trunk = MTLNAS(make, 2, batchnorm=False, source_init=0.0).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    for mode in (trunk.train, trunk.eval):
        mode()
        for t, features in enumerate(trunk.task_features(x)):
            torch.testing.assert_close(features, trunk.backbones[t](x), rtol=0, atol=1e-12)
    # with BatchNorm at its initial statistics (evaluation): the same up to BN's 1/sqrt(1 + eps)
    torch.manual_seed(0)
    bn = MTLNAS(make, 2, source_init=0.0).double().eval()
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
    assert trunk.penalty() is None  # the alternation: the regulariser of the architecture updates only
    trunk.train()
    with trunk.arch_step():  # an architecture update: σ(α), no sample, the regulariser
        assert trunk.penalty().item() == pytest.approx(0.3 * by_hand, rel=1e-6)
        torch.testing.assert_close(trunk.gates(), torch.sigmoid(trunk.gate_logits))
    joint = MTLNAS(lambda: ConvNet(1, (3, 4), (1, 1)), 2, entropy_weight=0.3, alternate=False)
    joint.gate_logits.data.copy_(trunk.gate_logits.data)
    assert joint.penalty().item() == pytest.approx(0.3 * by_hand, rel=1e-6)
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
    assert count(fixed) == towers + fusion  # no gate logits: the gates are fixed (issue 25)
    assert "gate_logits" not in dict(fixed.named_parameters()) and fixed.arch_parameters() == []
    assert count(searched) == towers + fusion + 3 * 3 + 4 * 4 + 4 * 4 + 6  # + the off edges' weights, the logits
    torch.testing.assert_close(derive_edges(fixed), fixed.kept_mask())
    primary, aux = build_network("mtl-nas", lambda: tiny_cnn(1), 2, 10, hidden=8)(torch.randn(4, 1, 8, 8))
    assert primary.shape == (4, 2) and aux.shape == (4, 10)


@pytest.mark.parametrize("edges", ["1,0,1,0,1,1", "0,0,0,0,0,0", "1,1,1,1,1,1"])
def test_a_derived_architecture_uses_every_parameter_it_holds(edges):
    """What the look-ahead differentiates (every trainable parameter) is what the forward uses: each
    parameter of a derived MTL-NAS network has a gradient of the multi-task loss (issue 25: MAXL's
    meta-gradient crashed on the unused gate logits), in training and in evaluation mode."""
    torch.manual_seed(0)
    net = build_network("mtl-nas", lambda: ConvNet(1, (3, 4), (1, 1)), 2, 10, hidden=8, settings={"edges": edges})
    x, y, z = torch.randn(4, 1, 8, 8), torch.randint(0, 2, (4,)), torch.randint(0, 10, (4,))
    for mode in (net.train, net.eval):
        mode()
        primary, aux = net(x)
        loss = torch.nn.functional.cross_entropy(primary, y) + torch.nn.functional.cross_entropy(aux, z)
        named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        assert [n for (n, _), g in zip(named, grads) if g is None] == []


def test_a_derived_architecture_loads_weights_saved_with_gate_logits():
    """Runs saved before issue 25's fix hold ``gate_logits`` in a derived network's weights (unused
    there): they load, the entry ignored; anything else unexpected is still refused."""
    torch.manual_seed(0)
    make = lambda: build_network(  # noqa: E731
        "mtl-nas", lambda: ConvNet(1, (3, 4), (1, 1)), 2, 10, hidden=8, settings={"edges": "1,0,1,0,1,1"}
    )
    saved = make().state_dict()
    saved["backbone.gate_logits"] = torch.zeros(6)
    net = make()
    net.load_state_dict(saved)
    for k, v in net.state_dict().items():
        assert torch.equal(v, saved[k]), k
    saved["backbone.other"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="other"):
        net.load_state_dict(saved)


def test_clear_errors():
    with pytest.raises(ValueError, match="expected 6 entries"):
        parse_edges("1,0", 6)
    with pytest.raises(ValueError, match="tau must be > 0"):
        MTLNAS(lambda: tiny_cnn(1), 2, tau=0.0)
    fixed = MTLNAS(lambda: ConvNet(1, (3, 4), (1, 1)), 2, edges="1,0,1,0,1,1")
    with pytest.raises(ValueError, match=r"make_arch_optimizer\(\) needs the edge search.*no gate logits"):
        fixed.make_arch_optimizer()
    with pytest.raises(ValueError, match=r"arch_step\(\) needs the edge search"), fixed.arch_step():
        pass


def test_the_fusion_starts_as_the_ndrr_mixture_of_own_feature_and_sources():
    """W = [(1 − β) I, β/m I, …] (rectangular I for a source of another width), by hand at the
    first layer of a BatchNorm-free trunk with every gate at 1."""
    torch.manual_seed(0)
    make = lambda: ConvNet(1, (3, 4), (1, 1))  # noqa: E731
    trunk = MTLNAS(make, 2, batchnorm=False, source_init=0.2, edges="1,1,1,1,1,1").double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    r = [blk.block(0, x) for blk in trunk.backbones]  # [B, 3, 4, 4] each
    for t in range(2):
        own, other = r[t], r[1 - t]
        expected = torch.relu(0.8 * own + 0.2 * other)  # one source into layer 0
        conv = trunk.fuse[t][0][0]
        torch.testing.assert_close(conv(torch.cat([own, other], 1)), 0.8 * own + 0.2 * other)
        torch.testing.assert_close(trunk.fuse[t][0](torch.cat([own, other], 1)), expected)
    w = trunk.fuse[0][1][0].weight[:, :, 0, 0]  # layer 1 of tower 0 (width 4): own 4, sources j=0 (3), j=1 (4)
    torch.testing.assert_close(w[:, :4], 0.8 * torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(w[:, 4:7], 0.1 * torch.eye(4, 3, dtype=torch.float64))
    torch.testing.assert_close(w[:, 7:], 0.1 * torch.eye(4, dtype=torch.float64))


@pytest.mark.parametrize("make", [lambda: ConvNet(1, (3, 4, 5), (1, 1, 1)), lambda: cifar_resnet(8, 1)])
def test_every_gate_has_a_gradient_at_initialisation(make):
    torch.manual_seed(0)
    net = build_network("mtl-nas", make, 2, 10, hidden=8)
    trunk = net.backbone
    x, y, z = torch.randn(8, 1, 8, 8), torch.randint(0, 2, (8,)), torch.randint(0, 10, (8,))
    for arch_update in (True, False):  # σ(α) in an architecture update; a sample in the joint scheme
        trunk.alternate = not arch_update
        with trunk.arch_step():
            primary, aux = net(x)
            loss = torch.nn.functional.cross_entropy(primary, y) + torch.nn.functional.cross_entropy(aux, z)
            (grad,) = torch.autograd.grad(loss, trunk.gate_logits)
        assert torch.all(grad != 0), grad
    # β = 0: no gradient at all (the stuck gates of issue 25's real-data run)
    torch.manual_seed(0)
    stuck = build_network("mtl-nas", make, 2, 10, hidden=8, settings={"source_init": 0.0})
    with stuck.backbone.arch_step():
        primary, aux = stuck(x)
        loss = torch.nn.functional.cross_entropy(primary, y) + torch.nn.functional.cross_entropy(aux, z)
        (grad,) = torch.autograd.grad(loss, stuck.backbone.gate_logits)
    assert torch.all(grad == 0)


def test_the_first_steps_move_every_gate_only_with_sources_in_the_initial_fusion():
    """The joint scheme, one SGD step of the multi-task loss: with β = 0.1 every gate logit moves; with
    β = 0 none does (the sources' weights first have to grow away from 0)."""
    x, y, z = torch.randn(32, 1, 8, 8), torch.randint(0, 2, (32,)), torch.randint(0, 10, (32,))
    for beta in (0.1, 0.0):
        torch.manual_seed(0)
        make = lambda: ConvNet(1, (4, 4), (1, 1))  # noqa: E731
        net = build_network("mtl-nas", make, 2, 10, hidden=8, settings={"source_init": beta, "alternate": False})
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        primary, aux = net(x)
        loss = torch.nn.functional.cross_entropy(primary, y) + torch.nn.functional.cross_entropy(aux, z)
        loss.backward()
        opt.step()
        moved = net.backbone.gate_logits.detach() != 0
        assert bool(moved.all()) if beta > 0 else not bool(moved.any())


def test_a_few_architecture_updates_move_every_gate():
    """The alternation's architecture updates (Adam, lr 3e-3, σ(α) gates) on a fixed random batch:
    every gate logit moves by more than one lr in 3 updates; with β = 0 none moves."""
    x, y, z = torch.randn(16, 1, 8, 8), torch.randint(0, 2, (16,)), torch.randint(0, 10, (16,))
    for beta in (0.1, 0.0):
        torch.manual_seed(0)
        net = build_network(
            "mtl-nas", lambda: ConvNet(1, (4, 4), (1, 1)), 2, 10, hidden=8, settings={"source_init": beta}
        )
        trunk = net.backbone
        opt = trunk.make_arch_optimizer()
        weights = {k: v.clone() for k, v in net.state_dict().items() if k != "backbone.gate_logits"}
        for _ in range(3):
            with trunk.arch_step():
                primary, aux = net(x)
                loss = torch.nn.functional.cross_entropy(primary, y) + torch.nn.functional.cross_entropy(aux, z)
                opt.zero_grad()
                loss.backward()
                opt.step()
        moved = trunk.gate_logits.detach().abs()
        assert bool((moved > 3e-3).all()) if beta > 0 else bool((moved == 0).all()), moved
        for k, v in weights.items():  # the weights have no gradient in an architecture update
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
                assert torch.equal(net.state_dict()[k], v), k
