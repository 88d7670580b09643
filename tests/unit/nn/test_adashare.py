"""AdaShare: the initial equivalence with the plain ResNet, a skipped block's identity path, the
Gumbel-softmax mixture, the sparsity and sharing losses, the temperature and curriculum schedules
against hand computations, the derived network's parameters, and clear errors."""

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
