"""``MetaConfig.inner_steps`` = k: θ1^(j+1) = θ1^(j) − α ∇θ1 (L_pri + L_aux)(θ1^(j)) on one batch and
one set of labels, J at θ1^(k); checked in float64 against central finite differences of the naive J,
``"func"`` against ``"higher"``, and the engines that take one step only refusing k > 1. The fused
form against the separate one is in ``test_fused.py``."""

import functools

import pytest
import torch

from maxl.core.losses import classification_loss
from maxl.meta import MULTI_STEP_ENGINES, MetaConfig, fused_step, meta_gradient

from tests.unit.meta.tiny import (
    finite_difference_gradient,
    flat,
    naive_outer_objective,
    other_task,
    outer_batch,
    tiny_networks,
)

ALPHA, LAM = 0.5, 0.2


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@functools.cache
def finite_difference_meta_gradient(steps, with_outer):
    """float64 central differences, entry by entry of θ2, of the naive J after ``steps`` SGD steps."""
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal", gamma=2.0)
    objective = functools.partial(
        naive_outer_objective,
        net,
        gen,
        x,
        y,
        loss_fn,
        ALPHA,
        LAM,
        steps=steps,
        outer=outer_batch() if with_outer else None,
    )
    return flat(finite_difference_gradient(objective, list(gen.parameters())))


@pytest.mark.parametrize("engine", ["func", "higher"])
@pytest.mark.parametrize("steps, with_outer", [(2, False), (3, True)], ids=["k2", "k3-outer_batch"])
def test_k_step_meta_gradient_equals_finite_differences(steps, with_outer, engine):
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal", gamma=2.0)
    cfg = MetaConfig(inner_lr=ALPHA, engine=engine, inner_steps=steps)
    ob = outer_batch() if with_outer else None
    exact = flat(meta_gradient(net, gen, x, y, loss_fn, cfg, outer_batch=ob).grads)
    fd = finite_difference_meta_gradient(steps, with_outer)
    assert relative(exact, fd) < 1e-6
    # the later steps matter: one step has a measurably different gradient
    one = MetaConfig(inner_lr=ALPHA, engine=engine)
    assert relative(flat(meta_gradient(net, gen, x, y, loss_fn, one, outer_batch=ob).grads), fd) > 1e-2


def test_one_step_is_the_default_and_the_papers_look_ahead():
    assert MetaConfig().inner_steps == 1
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal", gamma=2.0)
    exact = flat(
        meta_gradient(
            net, gen, x, y, loss_fn, MetaConfig(inner_lr=ALPHA, inner_steps=1), outer_batch=outer_batch()
        ).grads
    )
    assert relative(exact, finite_difference_meta_gradient(1, True)) < 1e-6


def test_func_equals_higher_for_two_steps_with_an_other_task_and_an_outer_batch():
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal")
    a, b = (
        meta_gradient(
            net,
            gen,
            x,
            y,
            loss_fn,
            MetaConfig(inner_lr=0.3, engine=e, inner_steps=2),
            extra_inner_loss=other_task(net),
            outer_batch=outer_batch(),
        )
        for e in ("func", "higher")
    )
    torch.testing.assert_close(flat(a.grads), flat(b.grads), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.outer_loss, b.outer_loss)


@pytest.mark.parametrize("kwargs", [{"engine": "jvp"}, {"order": "first"}], ids=["jvp", "first"])
def test_single_step_engines_refuse_several_steps(kwargs):
    assert MULTI_STEP_ENGINES == ("func", "higher")
    name = kwargs.get("engine", "first")
    with pytest.raises(ValueError, match=rf"'{name}'.*inner_steps=2.*inner_steps=1.*'func', 'higher'"):
        MetaConfig(inner_steps=2, **kwargs)
    cfg = MetaConfig(**kwargs)
    cfg.inner_steps = 2  # set after construction: the entry points check again
    net, gen, x, y = tiny_networks()
    for call in (meta_gradient, fused_step):
        with pytest.raises(ValueError, match=rf"'{name}'.*inner_steps"):
            call(net, gen, x, y, classification_loss("focal"), cfg)
