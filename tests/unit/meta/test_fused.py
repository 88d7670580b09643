"""The fused step (the multi-task gradient and the meta-gradient from one shared forward/backward)
against the separate computations: :func:`maxl.meta.meta_gradient` followed by a plain multi-task
backward, in float64, with and without the other tasks' loss L_x in the inner step, an outer batch
and (engine ``"func"``) a two-step look-ahead."""

import copy

import pytest
import torch

from maxl.core.losses import classification_loss
from maxl.meta import MetaConfig, fused_step, meta_gradient

from tests.unit.meta.tiny import flat, other_task, outer_batch, tiny_networks

FUSED_CONFIGS = [
    MetaConfig(inner_lr=0.3, engine="func"),
    MetaConfig(inner_lr=0.3, engine="jvp"),
    MetaConfig(inner_lr=0.3, order="first"),
    MetaConfig(inner_lr=0.3, order="implicit", neumann_terms=2),
]
IDS = ["func", "jvp", "first", "implicit"]


def assert_fused_equals_separate(cfg, with_extra, with_outer):
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal")
    net(x)  # non-default BatchNorm statistics
    before = copy.deepcopy(net.state_dict())
    extra = other_task(net) if with_extra else None
    ob = outer_batch() if with_outer else None
    separate = meta_gradient(net, gen, x, y, loss_fn, cfg, extra_inner_loss=extra, outer_batch=ob)
    plain = copy.deepcopy(net)  # the plain multi-task step on the generator's labels (+ L_x)
    pri, aux = plain(x)
    loss = loss_fn(pri, y) + loss_fn(aux, separate.soft_labels)
    if with_extra:
        loss = loss + other_task(plain)(dict(plain.named_parameters()))
    loss.backward()

    fused = fused_step(net, gen, x, y, loss_fn, cfg, extra_inner_loss=extra, outer_batch=ob)
    torch.testing.assert_close(flat(fused.meta.grads), flat(separate.grads), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(flat(fused.net_grads), flat(p.grad for p in plain.parameters()), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(fused.meta.outer_loss, separate.outer_loss)
    torch.testing.assert_close(fused.meta.soft_labels, separate.soft_labels)
    torch.testing.assert_close(fused.primary_loss, loss_fn(pri, y).detach())
    # parameters and .grad untouched; BatchNorm statistics advanced exactly once, as by `plain`
    for (k, v), (_, w) in zip(net.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(v, w), f"{k}: not the statistics of one multi-task forward"
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items() if "running" in k)
    assert all(p.grad is None for p in list(net.parameters()) + list(gen.parameters()))


@pytest.mark.parametrize("with_outer", [False, True], ids=["inner_batch", "outer_batch"])
@pytest.mark.parametrize("with_extra", [False, True], ids=["plain", "extra_inner_loss"])
@pytest.mark.parametrize("cfg", FUSED_CONFIGS, ids=IDS)
def test_fused_step_equals_meta_gradient_then_multitask_backward(cfg, with_extra, with_outer):
    assert_fused_equals_separate(cfg, with_extra, with_outer)


@pytest.mark.parametrize("with_outer", [False, True], ids=["inner_batch", "outer_batch"])
def test_fused_two_step_look_ahead_equals_meta_gradient_then_multitask_backward(with_outer):
    """The multi-task gradient is the look-ahead's first step; the second continues from it."""
    assert_fused_equals_separate(MetaConfig(inner_lr=0.3, engine="func", inner_steps=2), True, with_outer)


@pytest.mark.parametrize("cfg", FUSED_CONFIGS, ids=IDS)
def test_extra_inner_loss_changes_the_fused_step(cfg):
    """L_x reaches both outputs: the look-ahead (so ∇θ2 J) and the multi-task gradient."""
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal")
    plain = fused_step(copy.deepcopy(net), gen, x, y, loss_fn, cfg)
    extra = fused_step(copy.deepcopy(net), gen, x, y, loss_fn, cfg, extra_inner_loss=other_task(net))
    assert (flat(plain.meta.grads) - flat(extra.meta.grads)).norm() > 1e-4 * flat(plain.meta.grads).norm()
    assert (flat(plain.net_grads) - flat(extra.net_grads)).norm() > 1e-4 * flat(plain.net_grads).norm()


def test_fused_step_rejects_the_higher_engine():
    net, gen, x, y = tiny_networks()
    with pytest.raises(ValueError, match="higher"):
        fused_step(net, gen, x, y, classification_loss("focal"), MetaConfig(engine="higher"))
