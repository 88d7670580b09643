"""AdaShare: the initial equivalence with the plain ResNet, a skipped block's identity path, the
Gumbel-softmax mixture, the sparsity and sharing losses, the temperature and curriculum schedules
against hand computations, the derived network's parameters, and clear errors."""

import copy
import math

import pytest
import torch

from maxl.nn.architectures import build_network
from maxl.nn.architectures.adashare import (
    AdaShare,
    best_of_samples,
    curriculum,
    derive_policy,
    parse_policy,
    policy_text,
    sharing_loss,
    sparsity_loss,
    temperature,
)
from maxl.nn.backbones import tiny_cnn
from maxl.nn.resnet import cifar_resnet, resnet20

POLICY_20 = "1,1,1,1,1,1,0,0,0;1,1,1,1,1,1,0,0,0"  # ResNet-20: the last stage skipped by both tasks


def trunk(num_tasks=2, **kw):
    torch.manual_seed(0)
    return AdaShare(lambda: cifar_resnet(8, 1), num_tasks, **kw).double()


def test_every_block_selected_is_the_plain_resnet():
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    for kw in (dict(warmup=3), dict(policy="1,1,1;1,1,1")):
        t = trunk(**kw)
        assert t.phase == ("warmup" if "warmup" in kw else "fixed")
        plain = t.backbone(x)
        for features in t.task_features(x):
            torch.testing.assert_close(features, plain, rtol=0, atol=0)


def test_a_skipped_block_passes_its_shortcut():
    """Task 1 skips the second residual block (a downsampling one: its option-A path)."""
    t = trunk(policy="1,1,1;1,0,1").eval()
    net = t.backbone
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    h = net.block(0, x)
    h = net.block(1, h)
    h = net.shortcut(2, h)  # skipped: subsampled, zero-padded
    h = net.block(3, h)
    primary, aux = t.task_features(x)
    torch.testing.assert_close(aux, net.pool(h), rtol=0, atol=1e-12)
    torch.testing.assert_close(primary, net(x), rtol=0, atol=1e-12)
    # the derived network: the stem and the blocks some task executes (all three here)
    assert t.derived_parameters() == sum(p.numel() for p in net.parameters())
    skipped_by_all = parse_policy("1,0,1;1,0,1", 2, 3)
    assert t.derived_parameters(skipped_by_all) == sum(p.numel() for p in net.parameters()) - sum(
        p.numel() for p in net.blocks[1].parameters()
    )


def test_search_mixes_block_and_shortcut_by_the_gumbel_softmax_sample():
    t = trunk(warmup=0, tau=2.0).train()
    t.controlled = 3
    t.policy_logits.data.normal_()
    g = -torch.empty_like(t.policy_logits).exponential_().log()
    t.gumbel_noise = g
    u = ((t.policy_logits + g) / 2.0).softmax(-1)  # [T, L, 2]
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    net = t.backbone
    for task, features in enumerate(t.task_features(x)):
        h = net.block(0, x)
        for j, b in enumerate((1, 2, 3)):
            h = u[task, j, 0] * net.block(b, h) + u[task, j, 1] * net.shortcut(b, h)
        torch.testing.assert_close(features, net.pool(h))
    # the curriculum: with k = 1 only the last block's logits reach the features (the logits are
    # trainable inside a policy update only: the alternation)
    t.controlled = 1
    with t.arch_step():
        out = torch.stack(t.task_features(x)).sum()
        (grad,) = torch.autograd.grad(out, t.policy_logits)
    assert torch.count_nonzero(grad[:, :2]) == 0 and torch.count_nonzero(grad[:, 2]) > 0
    # evaluation: the argmax of the logits, hard
    t.eval()
    t.policy_logits.data[:] = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # select, select, skip
    h = net.block(2, net.block(1, net.block(0, x)))
    torch.testing.assert_close(t.task_features(x)[0], net.pool(net.shortcut(3, h)), rtol=0, atol=1e-12)


def test_sparsity_and_sharing_losses_by_hand():
    p = torch.tensor([[0.9, 0.5, 0.2], [0.6, 0.5, 0.7]], dtype=torch.float64)  # [T=2, L=3]
    by_hand = math.log(0.9) + math.log(0.5) + math.log(0.2) + math.log(0.6) + math.log(0.5) + math.log(0.7)
    assert sparsity_loss(p).item() == pytest.approx(by_hand, rel=1e-12)
    # Σ_{t≠s} Σ_l (L−l)/L |p_t − p_s|: weights 2/3, 1/3, 0; two ordered pairs
    assert sharing_loss(p).item() == pytest.approx(2 * (2 / 3 * 0.3 + 1 / 3 * 0.0 + 0 * 0.5), rel=1e-12)
    t = trunk(warmup=0, sparsity_weight=0.3, sharing_weight=0.2)
    t.policy_logits.data.normal_()
    probs = t.policy_logits.softmax(-1)[..., 0]
    expected = 0.3 * sparsity_loss(probs) + 0.2 * sharing_loss(probs)
    assert t.penalty() is None  # the alternation: the losses of the policy updates only
    with t.arch_step():
        torch.testing.assert_close(t.penalty(), expected)
    joint = trunk(warmup=0, sparsity_weight=0.3, sharing_weight=0.2, alternate=False)  # the joint scheme: always
    joint.policy_logits.data.copy_(t.policy_logits.data)
    torch.testing.assert_close(joint.penalty(), expected)
    assert trunk(warmup=2, sparsity_weight=0.3, alternate=False).penalty() is None  # no penalty during the warm-up


def test_temperature_and_curriculum_schedules():
    assert temperature(0) == 5.0
    assert temperature(3) == pytest.approx(5.0 * 0.965**3, rel=1e-15)
    assert [curriculum(e, 3, speed=2) for e in range(7)] == [1, 1, 2, 2, 3, 3, 3]
    t = trunk(warmup=2, tau=4.0, tau_decay=0.5, curriculum_speed=1)
    logs = [t.begin_epoch(e) for e in range(5)]
    assert [t.phase for t in [t]] == ["search"]
    assert logs[0] == {"adashare_tau": 0.0, "adashare_curriculum": 0.0}
    assert [r["adashare_tau"] for r in logs[2:]] == [4.0, 2.0, 1.0]
    assert [r["adashare_curriculum"] for r in logs[2:]] == [1.0, 2.0, 3.0]
    t.begin_epoch(1)
    assert t.phase == "warmup"  # from the epoch alone: a resumed run takes the same phase


def test_derive_and_parse_policy():
    t = trunk(warmup=0)
    t.controlled = 3
    t.policy_logits.data[:] = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]], [[0.0, 2.0], [2.0, 0.0], [2.0, 0.0]]])
    policy = derive_policy(t)
    assert policy.tolist() == [[1, 0, 1], [0, 1, 1]]
    assert policy_text(policy) == "1,0,1;0,1,1"
    torch.testing.assert_close(parse_policy("1,0,1;0,1,1", 2, 3), policy)
    t.controlled = 1  # blocks outside the curriculum stay selected
    assert derive_policy(t).tolist() == [[1, 1, 1], [1, 1, 1]]
    draws = derive_policy(t, sample=True, generator=torch.Generator().manual_seed(0))
    assert set(draws.flatten().tolist()) <= {0.0, 1.0}


def test_clear_errors():
    with pytest.raises(ValueError, match="needs a residual backbone"):
        build_network("adashare", lambda: tiny_cnn(1), 2, 10)
    with pytest.raises(ValueError, match="expected 2 rows"):
        parse_policy("1,1,1", 2, 3)
    with pytest.raises(ValueError, match="0 \\(skip\\) or 1"):
        parse_policy("1,2,1;1,1,1", 2, 3)
    with pytest.raises(ValueError, match="tau > 0"):
        AdaShare(resnet20, 2, tau=0.0)


def test_network_shapes_and_parameters():
    net = build_network("adashare", lambda: resnet20(1), 2, 10, hidden=8)
    primary, aux = net(torch.randn(4, 1, 8, 8))
    assert primary.shape == (4, 2) and aux.shape == (4, 10)
    backbone = sum(p.numel() for p in resnet20(1).parameters())
    heads = (64 + 1) * 8 + (8 + 1) * 2 + (64 + 1) * 8 + (8 + 1) * 10
    assert sum(p.numel() for p in net.parameters()) == backbone + 2 * 9 * 2 + heads  # + 2·T·L logits
    # a derived architecture: the backbone's alone (issue 25: it held the 36 logits, unused)
    derived = build_network("adashare", lambda: resnet20(1), 2, 10, hidden=8, settings={"policy": POLICY_20})
    assert sum(p.numel() for p in derived.parameters()) == backbone + heads
    assert "backbone.policy_logits" not in derived.state_dict()


def test_best_of_samples_keeps_the_first_argmax_and_restores_the_trunk():
    t = trunk(warmup=0)
    t.controlled = 3
    t.policy_logits.data.normal_()
    seen = []

    def score():  # the number of selected blocks of the policy the trunk runs (ties: the first kept)
        assert t.phase == "fixed"
        seen.append(t.fixed_buffer().clone())
        return float(t.fixed_buffer().sum())

    choice = best_of_samples(t, score, 6, torch.Generator().manual_seed(0))
    assert choice["scores"] == [float(p.sum()) for p in seen]
    assert choice["policies"] == [policy_text(p) for p in seen]
    first_best = choice["scores"].index(max(choice["scores"]))
    assert choice["chosen_index"] == first_best and choice["chosen"] == choice["policies"][first_best]
    assert t.phase == "search" and torch.all(t.fixed_buffer() == 1)
    again = best_of_samples(t, lambda: 0.0, 6, torch.Generator().manual_seed(0))
    assert again["policies"] == choice["policies"]  # the draws from the generator alone
    with pytest.raises(ValueError, match="samples >= 1"):
        best_of_samples(t, score, 0, torch.Generator())


# ----------------------------------------------------------------------------- a derived architecture
def test_a_derived_trunk_holds_no_policy_logits_and_refuses_policy_updates():
    """Issue 25: a fixed policy given, no logits (its forward never used them), no architecture
    parameters; the policy updates and fixed() (which would change the policy) refused."""
    t = trunk(policy="1,0,1;1,0,0")
    assert t.derived and t.policy_logits is None and "policy_logits" not in dict(t.named_parameters())
    assert "policy_logits" not in t.state_dict() and t.arch_parameters() == []
    assert not t.arch_step_active and t.penalty() is None and t.samples == 0
    assert t.begin_epoch(3) == {"adashare_selected": 0.5} and t.phase == "fixed"
    assert derive_policy(t).tolist() == [[1, 0, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"make_arch_optimizer\(\) needs the policy search.*no policy logits"):
        t.make_arch_optimizer()
    with pytest.raises(ValueError, match=r"arch_step\(\) needs the policy search"), t.arch_step():
        pass
    with pytest.raises(ValueError, match=r"fixed\(\) needs the policy search"), t.fixed(torch.ones(2, 3)):
        pass
    with pytest.raises(ValueError, match="reading the policy logits needs the policy search"):
        t.select_probabilities()
    # the block no task executes is frozen (kept: the backbone's layout); the others train
    frozen = [n for n, p in t.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("backbone.blocks.1.") for n in frozen)
    assert len(frozen) == len(list(t.backbone.blocks[1].parameters()))
    # a searching trunk: its logits, trainable in the policy updates only
    search = trunk(warmup=0)
    assert not search.derived and search.arch_parameters() == [search.policy_logits]
    assert all(p.requires_grad for n, p in search.named_parameters() if n != "policy_logits")


def test_a_derived_trunk_loads_weights_saved_with_policy_logits():
    """Runs saved before issue 25's fix hold ``policy_logits`` in a derived network's weights
    (unused there): they load, the entry ignored; another policy's weights and anything else
    unexpected are refused."""
    make = lambda: build_network(  # noqa: E731
        "adashare", lambda: cifar_resnet(8, 1), 2, 10, hidden=8, settings={"policy": "1,0,1;1,1,0"}
    )
    torch.manual_seed(0)
    saved = make().state_dict()
    saved["backbone.policy_logits"] = torch.zeros(2, 3, 2)
    torch.manual_seed(1)
    net = make()
    net.load_state_dict(saved)
    for k, v in net.state_dict().items():
        assert torch.equal(v, saved[k]), k
    other = dict(saved, **{"backbone.fixed_policy": torch.ones(2, 3)})
    with pytest.raises(RuntimeError, match="weights of the fixed policy '1,1,1;1,1,1' do not load"):
        net.load_state_dict(other)
    saved["backbone.other"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="other"):
        net.load_state_dict(saved)


def mixture(t, x, policy):
    """The formula by hand: h ← p·block(h) + (1 − p)·S(h) per task, every block and shortcut computed."""
    net = t.backbone
    out = []
    for task in range(policy.shape[0]):
        h = net.block(0, x)
        for j, b in enumerate(t.residual):
            h = policy[task, j] * net.block(b, h) + (1 - policy[task, j]) * net.shortcut(b, h)
        out.append(net.pool(h))
    return out


@pytest.mark.parametrize("text", ["1,0,1;1,0,0", "1,1,0;1,0,1", "0,0,0;1,1,1", "1,1,1;1,1,1"])
def test_the_fixed_forward_is_the_mixture_of_block_and_shortcut(text):
    """A derived trunk (a skipped block not computed) equals, in training and evaluation mode, the
    formula's mixture with the 0/1 policy computed by hand, the search path run with that policy
    as its (exact one-hot) Gumbel-softmax sample, and a searching trunk inside fixed(), float64."""
    policy = parse_policy(text, 2, 3).double()
    t = trunk(policy=text)
    for mode in ("train", "eval"):
        x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
        by_hand = mixture(getattr(copy.deepcopy(t), mode)(), x, policy)
        search = trunk(warmup=0, tau=1.0)
        search.load_state_dict(t.state_dict(), strict=False)  # the weights and running statistics; not the logits
        search.controlled = 3
        search.policy_logits.data = 1e4 * torch.stack([policy, 1 - policy], -1)  # softmax: exactly (p, 1 − p)
        search.gumbel_noise = torch.zeros_like(search.policy_logits)
        searched = getattr(copy.deepcopy(search), mode)().task_features(x)
        with search.fixed(policy):
            sampled = getattr(search, mode)().task_features(x)
        derived = getattr(t, mode)().task_features(x)
        for reference in (by_hand, searched, sampled):
            for d, r in zip(derived, reference):
                torch.testing.assert_close(d, r, rtol=1e-12, atol=1e-12)


def calls(t):
    """How many times each residual block (by its index in the blocks view) runs: forward hooks."""
    count = {b: 0 for b in t.residual}
    for b in t.residual:
        t.backbone.blocks[b - 1].register_forward_hook(lambda *_, b=b: count.__setitem__(b, count[b] + 1))
    return count


def test_a_skipped_block_is_not_computed_has_no_gradient_and_keeps_its_statistics():
    """Policy 1,0,1;1,0,0: block 1 shared by both tasks (computed once), block 2 skipped by both
    (never computed: frozen, no gradient, its BatchNorm statistics unmoved), block 3 the primary
    task's alone; the shared block's statistics take one update, as hard sharing's."""
    t = trunk(policy="1,0,1;1,0,0").train()
    net = t.backbone
    plain = copy.deepcopy(net).train()  # the shared part run once: the stem and block 1
    count = calls(t)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    primary, aux = t.task_features(x)
    assert count == {1: 1, 2: 0, 3: 1}
    (primary.square().sum() + aux.square().sum()).backward()
    for n, p in net.named_parameters():
        if n.startswith("blocks.1."):
            assert not p.requires_grad and p.grad is None, n
        else:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, n
    after = net.state_dict()
    for k, v in before.items():
        if k.startswith("blocks.1.") or (k.startswith("blocks.2.") and "running" in k):
            moved = not torch.equal(after[k], v)
            assert moved == k.startswith("blocks.2."), k  # block 3 (blocks.2) ran once: its statistics moved
        elif "running" in k:
            assert not torch.equal(after[k], v), k
    plain.block(1, plain.block(0, x))
    for k, v in plain.state_dict().items():
        if k.startswith(("stem.", "blocks.0.")):
            torch.testing.assert_close(after[k], v, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("text", "expected"), [(POLICY_20, [1] * 6 + [0] * 3), ("0,1,1,1,1,1,1,1,1;1,1,1,1,1,1,1,1,1", [1] + [2] * 8)]
)
def test_a_shared_policy_prefix_is_computed_once(text, expected):
    """Block l runs once per distinct policy prefix: the table's derived policy (one for both tasks)
    costs its six blocks once; policies that differ from the first block run every later block twice."""
    torch.manual_seed(0)
    t = AdaShare(lambda: resnet20(1), 2, policy=text).train()
    count = calls(t)
    t.task_features(torch.randn(2, 1, 8, 8))
    assert list(count.values()) == expected


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("text", ["1,0,1;1,0,0", "0,0,0;0,0,0", "1,1,0;0,1,1"])
def test_a_derived_network_uses_every_trainable_parameter(text, mode):
    """What MAXL's look-ahead differentiates (every trainable parameter) is what the forward uses:
    each has a gradient of the multi-task loss (issue 25)."""
    torch.manual_seed(0)
    net = build_network("adashare", lambda: cifar_resnet(8, 1), 2, 10, hidden=8, settings={"policy": text})
    getattr(net, mode)()
    x, y, z = torch.randn(4, 1, 8, 8), torch.randint(0, 2, (4,)), torch.randint(0, 10, (4,))
    primary, aux = net(x)
    loss = torch.nn.functional.cross_entropy(primary, y) + torch.nn.functional.cross_entropy(aux, z)
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    assert [n for (n, _), g in zip(named, grads) if g is None] == []


def test_the_warm_up_computes_each_block_once_and_keeps_joint_logits_in_the_graph():
    """The warm-up (every block selected) runs the plain ResNet once for both tasks. Under the joint
    scheme the logits are trainable parameters its forward does not use: they stay in the graph with
    a zero gradient (what the look-ahead, which refuses unused parameters, needs); under the
    alternation they are not trainable then."""
    for alternate in (False, True):
        t = trunk(warmup=2, alternate=alternate).train()
        count = calls(t)
        x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
        loss = torch.stack(t.task_features(x)).sum()
        assert count == {1: 1, 2: 1, 3: 1}
        assert t.policy_logits.requires_grad == (not alternate)
        trainable = [p for p in t.parameters() if p.requires_grad]
        grads = dict(zip(map(id, trainable), torch.autograd.grad(loss, trainable)))  # none unused
        if not alternate:
            assert torch.count_nonzero(grads[id(t.policy_logits)]) == 0
