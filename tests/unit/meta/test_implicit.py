"""``order="implicit"``: the hypergradient by implicit differentiation with a K-term Neumann series,
checked in float64 against the same formula built from explicit matrices (the Hessian of the inner
loss by ``torch.autograd.functional.hessian``, matrix powers, and central finite differences of the
mixed term), against the ``"jvp"`` look-ahead as α → 0 for K = 0, and its settings' validation.
The fused form against the plain one is in ``test_fused.py``."""

import functools

import pytest
import torch
from torch.func import functional_call

from maxl.core.losses import classification_loss
from maxl.meta import MetaConfig, ObjectiveConfig, meta_gradient

from tests.unit.meta.tiny import finite_difference_gradient, flat, other_task, outer_batch, tiny_networks

ALPHA = 0.3
NO_ENTROPY = ObjectiveConfig(entropy_weight=0.0)  # J = L_pri alone: the hypergradient of the look-ahead


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def explicit_lookahead_part(net, gen, x, y, loss_fn, alpha, terms, outer=None, extra=None):
    """−α ∇θ2 ⟨∇θ1 L_aux(θ1, g(θ2)), v⟩ with v = Σ_{j=0}^{K} (I − αH)^j ∇θ1 L_pri(x_o) from dense matrices."""
    x_o, y_o = (x, y) if outer is None else outer
    named = [(n, p) for n, p in net.named_parameters()]
    shapes = [p.shape for _, p in named]
    theta0 = flat([p.detach() for _, p in named])

    def unflatten(vec):
        parts, i = {}, 0
        for (n, _), s in zip(named, shapes):
            parts[n] = vec[i : i + s.numel()].view(s)
            i += s.numel()
        return parts

    def forward(vec, images):
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        return functional_call(net, {**unflatten(vec), **buffers}, (images,))

    soft = gen(x, y).detach()

    def inner_loss(vec):
        pri, aux = forward(vec, x)
        loss = loss_fn(pri, y) + loss_fn(aux, soft)
        return loss if extra is None else loss + extra(unflatten(vec))

    hessian = torch.autograd.functional.hessian(inner_loss, theta0)  # [n, n]
    g_o = torch.autograd.functional.jacobian(lambda vec: loss_fn(forward(vec, x_o)[0], y_o), theta0)
    step = torch.eye(len(theta0), dtype=theta0.dtype) - alpha * hessian
    v = sum(torch.linalg.matrix_power(step, j) @ g_o for j in range(terms + 1))

    def mixed():  # ⟨∇θ1 L_aux(θ1, g(θ2)), v⟩ at the generator's current parameters
        theta = theta0.clone().requires_grad_()
        with torch.enable_grad():
            aux_loss = loss_fn(forward(theta, x)[1], gen(x, y))
            (grad,) = torch.autograd.grad(aux_loss, theta)
        return grad @ v

    return -alpha * flat(finite_difference_gradient(mixed, list(gen.parameters())))


@functools.cache
def explicit(terms, with_outer, with_extra):
    net, gen, x, y = tiny_networks()
    return explicit_lookahead_part(
        net,
        gen,
        x,
        y,
        classification_loss("focal", gamma=2.0),
        ALPHA,
        terms,
        outer=outer_batch() if with_outer else None,
        extra=other_task(net) if with_extra else None,
    )


@pytest.mark.parametrize(
    ("terms", "with_outer", "with_extra"),
    [(0, False, False), (2, False, False), (5, True, False), (3, True, True)],
    ids=["K0", "K2", "K5-outer_batch", "K3-outer_batch-extra_inner_loss"],
)
def test_neumann_hypergradient_equals_the_explicit_matrix_formula(terms, with_outer, with_extra):
    net, gen, x, y = tiny_networks()
    cfg = MetaConfig(inner_lr=ALPHA, order="implicit", neumann_terms=terms)
    result = meta_gradient(
        net,
        gen,
        x,
        y,
        classification_loss("focal", gamma=2.0),
        cfg,
        extra_inner_loss=other_task(net) if with_extra else None,
        outer_batch=outer_batch() if with_outer else None,
        objective=NO_ENTROPY,
    )
    expected = explicit(terms, with_outer, with_extra)
    assert relative(flat(result.grads), expected) < 1e-6
    if terms:  # the Hessian terms matter: K = 0 gives a measurably different gradient
        assert relative(expected, explicit(0, with_outer, with_extra)) > 1e-2


def test_the_entropy_term_is_added_and_the_outer_loss_is_at_theta1():
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal", gamma=2.0)
    look = meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=ALPHA, order="implicit"), objective=NO_ENTROPY)
    both = meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=ALPHA, order="implicit"))
    entropy = meta_gradient(
        net,
        gen,
        x,
        y,
        loss_fn,
        MetaConfig(inner_lr=ALPHA, order="implicit"),
        objective=ObjectiveConfig(record_parts=True),
    )
    torch.testing.assert_close(flat(both.grads), flat(entropy.grads))
    torch.testing.assert_close(entropy.lookahead_grad_norm, flat(look.grads).norm())
    with torch.no_grad():
        torch.testing.assert_close(both.outer_loss, loss_fn(net(x)[0], y))


def test_no_hessian_term_is_the_one_step_look_ahead_to_first_order_in_alpha():
    """K = 0: v = ∇θ1 L_pri(θ1) instead of ∇θ1⁺ L_pri(θ1⁺); the two meet as α → 0, the gap O(α)."""
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal", gamma=2.0)
    gaps = []
    for alpha in (1e-2, 1e-3):
        implicit = meta_gradient(
            net,
            gen,
            x,
            y,
            loss_fn,
            MetaConfig(inner_lr=alpha, order="implicit", neumann_terms=0),
            objective=NO_ENTROPY,
        )
        jvp = meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=alpha, engine="jvp"), objective=NO_ENTROPY)
        gaps.append(relative(flat(implicit.grads), flat(jvp.grads)))
    assert gaps[1] < 2e-3 and 5 < gaps[0] / gaps[1] < 20


def test_settings_are_validated_and_a_diverging_series_is_named():
    for terms in (-1, 1.5, True):
        with pytest.raises(ValueError, match="neumann_terms"):
            MetaConfig(order="implicit", neumann_terms=terms)
    with pytest.raises(ValueError, match="one look-ahead step only"):
        MetaConfig(order="implicit", inner_steps=2)
    assert MetaConfig(order="implicit", engine="higher").engine_name == "implicit"
    net, gen, x, y = tiny_networks()
    with pytest.raises(FloatingPointError, match="Neumann series .* diverged"):
        meta_gradient(
            net, gen, x, y, classification_loss("ce"), MetaConfig(inner_lr=1e30, order="implicit", neumann_terms=30)
        )


@pytest.mark.parametrize("order, engine, reads_g", [("implicit", "jvp", False), ("second", "jvp", True)])
def test_the_plain_form_computes_the_inner_gradient_only_for_engines_that_read_it(monkeypatch, order, engine, reads_g):
    from maxl.meta.engines.detached import DetachedLookaheadEngine
    from maxl.meta.registry import get_engine

    cfg = MetaConfig(inner_lr=ALPHA, order=order, engine=engine, neumann_terms=2)
    cls = type(get_engine(cfg))
    seen = []
    original = cls.direction

    def spy(self, call, call_outer, names, theta, inner_grads, *args):
        seen.append(inner_grads)
        return original(self, call, call_outer, names, theta, inner_grads, *args)

    monkeypatch.setattr(cls, "direction", spy)
    net, gen, x, y = tiny_networks()
    meta_gradient(net, gen, x, y, classification_loss("ce"), cfg)
    assert len(seen) == 1 and (seen[0] is not None) == reads_g
    assert issubclass(cls, DetachedLookaheadEngine)
