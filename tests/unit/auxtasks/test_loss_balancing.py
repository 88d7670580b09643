"""The loss-based weightings written here (GLS, IMTL-L, STCH, FAMO, DB-MTL), each against a hand
computation of its update rule over a few steps on a float64 toy problem."""

import math

import pytest
import torch

from auxtasks.weighting import (
    FAMO,
    WEIGHTINGS,
    DualBalancing,
    GeometricLoss,
    ImpartialLoss,
    SmoothTchebycheff,
)

NAMES = ("primary", "rotation", "colourisation")
A = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, -1.0, 3.0, 0.0], [-2.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
LR = 0.05


def task_losses(theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """L_i(θ) = (a_i·θ − b_i)² + 0.1 + i: three positive losses of different scales."""
    return {n: (A[i] @ theta - B[i]) ** 2 + 0.1 + i for i, n in enumerate(NAMES)}


def task_gradients(theta: torch.Tensor) -> torch.Tensor:
    """∇L_i = 2 (a_i·θ − b_i) a_i, by hand: float64 ``[T, 4]``."""
    return 2 * (A @ theta - B)[:, None] * A


def bound(weighting):
    weighting.bind(NAMES)
    return weighting.double()


def sgd_with(weighting, steps: int = 3) -> torch.Tensor:
    """θ after ``steps`` of SGD on ``weighting.combine`` (and the weighting's own parameters)."""
    theta = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64, requires_grad=True)
    params = [theta, *weighting.parameters()]
    for _ in range(steps):
        total = weighting.combine(task_losses(theta))
        grads = torch.autograd.grad(total, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= LR * g
    return theta.detach()


def values(theta):
    return torch.stack([v.detach() for v in task_losses(theta).values()])


def test_gls_steps_along_the_geometric_means_gradient():
    theta = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64)
    for _ in range(3):  # ∇ (Π L_i)^(1/T) = (L / T) Σ_i ∇L_i / L_i
        losses = values(theta)
        geo = losses.prod() ** (1 / 3)
        theta = theta - LR * (geo / 3 * task_gradients(theta) / losses[:, None]).sum(0)
    w = bound(GeometricLoss())
    assert torch.allclose(sgd_with(w), theta, atol=1e-12)
    losses = values(theta)
    assert w.combine(task_losses(theta)).item() == pytest.approx(float(losses.prod() ** (1 / 3)))
    assert list(w.weights().values()) == pytest.approx((losses.prod() ** (1 / 3) / (3 * losses)).tolist())


def test_imtl_l_steps_the_network_and_the_scales_by_hand():
    theta = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64)
    s = torch.full((3,), 0.2, dtype=torch.float64)
    for _ in range(3):  # L = Σ e^{s_i} L_i − s_i
        losses, grads = values(theta), task_gradients(theta)
        theta, s = theta - LR * (s.exp()[:, None] * grads).sum(0), s - LR * (s.exp() * losses - 1)
    w = bound(ImpartialLoss(init=0.2))
    assert torch.allclose(sgd_with(w), theta, atol=1e-12)
    assert torch.allclose(w.log_scale.detach(), s, atol=1e-12)


def test_imtl_l_scales_settle_where_every_scaled_loss_is_one():
    w = bound(ImpartialLoss())
    losses = {n: torch.tensor(v, dtype=torch.float64) for n, v in zip(NAMES, (0.5, 2.0, 8.0))}
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        w.combine(losses).backward()
        opt.step()
    scaled = [w.weights()[n] * float(losses[n]) for n in NAMES]
    assert scaled == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)


@pytest.mark.parametrize("mu", [0.5, 2.0])
def test_stch_steps_along_the_softmax_of_the_losses(mu):
    theta = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64)
    for _ in range(3):  # ∇ μ log Σ exp(L_i/μ) = Σ softmax_i(L/μ) ∇L_i
        weights = torch.softmax(values(theta) / mu, dim=0)
        theta = theta - LR * (weights[:, None] * task_gradients(theta)).sum(0)
    assert torch.allclose(sgd_with(bound(SmoothTchebycheff(mu=mu))), theta, atol=1e-12)


def test_stch_tends_to_the_largest_loss_as_mu_falls():
    losses = {n: torch.tensor(v, dtype=torch.float64) for n, v in zip(NAMES, (0.5, 2.0, 1.9))}
    assert bound(SmoothTchebycheff(mu=1e-3)).combine(losses).item() == pytest.approx(2.0, abs=1e-3)
    with pytest.raises(ValueError, match="mu must be > 0"):
        SmoothTchebycheff(mu=0.0)


def softmax_vjp(logits: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """∇_ξ (softmax(ξ)·δ) by autograd, as the FAMO authors compute it."""
    xi = logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.softmax(xi, 0), xi, grad_outputs=delta)
    return g


def test_famo_logits_follow_adam_on_the_log_loss_decrease():
    w = bound(FAMO(lr=0.1, gamma=0.01))
    xi = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # the reference: torch's Adam
    adam = torch.optim.Adam([xi], lr=0.1, weight_decay=0.01)
    theta = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64)
    previous = None
    for _ in range(4):
        losses = values(theta)
        logs = torch.log(losses + w.eps)
        if previous is not None:  # δ = log L(t) − log L(t+1)
            xi.grad = softmax_vjp(xi.detach(), previous - logs)
            adam.step()
        previous = logs
        z = torch.softmax(xi.detach(), 0)
        c = (z / losses).sum()
        # FAMO's loss and its gradient: Σ_i z_i/(c L_i) ∇L_i
        total = w.combine({n: v.clone().requires_grad_(True) for n, v in zip(NAMES, losses)})
        assert total.item() == pytest.approx(float((z * logs).sum() / c))
        assert torch.allclose(w.logits, xi.detach(), atol=1e-12)
        assert list(w.weights().values()) == pytest.approx((z / (c * losses)).tolist())
        theta = theta - LR * ((z / (c * losses))[:, None] * task_gradients(theta)).sum(0)
    assert not torch.allclose(w.logits, torch.zeros(3, dtype=torch.float64))  # it learnt something


def test_famo_leaves_its_logits_alone_in_evaluation():
    w = bound(FAMO())
    losses = {n: torch.tensor(v, dtype=torch.float64) for n, v in zip(NAMES, (0.5, 2.0, 1.0))}
    w.combine(losses)
    w.combine({n: v / 2 for n, v in losses.items()})
    before = w.logits.clone()
    w.eval()
    w.combine(losses)
    assert torch.equal(w.logits, before)


def test_db_mtl_balances_the_moving_averages_of_the_log_loss_gradients():
    w = bound(DualBalancing(beta=0.9, beta_sigma=0.5))
    g = torch.Generator().manual_seed(0)
    ema = torch.zeros(3, 5, dtype=torch.float64)
    for t in range(1, 4):
        grads = torch.randn(3, 5, generator=g, dtype=torch.float64)
        losses = torch.rand(3, generator=g, dtype=torch.float64) + 0.5
        log_grads = grads / losses[:, None]  # ∇ log L_i = ∇L_i / L_i
        rate = 0.9 / math.sqrt(t)
        ema = (1 - rate) * log_grads + rate * ema
        norms = ema.norm(dim=1)
        expected = ((norms.max() / norms)[:, None] * ema).sum(0)
        got = w.combine_gradients(dict(zip(NAMES, grads)), dict(zip(NAMES, losses)))
        assert torch.allclose(got, expected, atol=1e-7)
        scaled = [float((norms.max() / norms)[i] * norms[i]) for i in range(3)]
        assert scaled == pytest.approx([float(norms.max())] * 3)  # every task at the largest norm
    total = w.combine(dict(zip(NAMES, losses)))
    assert total.item() == pytest.approx(float(torch.log(losses + w.eps).sum()))


def test_db_mtl_state_survives_a_state_dict_round_trip():
    w = bound(DualBalancing())
    grads = {n: torch.randn(5, dtype=torch.float64) for n in NAMES}
    losses = {n: torch.tensor(1.5, dtype=torch.float64) for n in NAMES}
    w.combine_gradients(grads, losses)
    fresh = bound(DualBalancing())
    fresh.load_state_dict(w.state_dict())
    assert torch.equal(fresh.grad_ema, w.grad_ema) and int(fresh.steps) == 1
    assert torch.allclose(fresh.combine_gradients(grads, losses), w.combine_gradients(grads, losses))


def test_the_loss_based_methods_are_registered():
    assert WEIGHTINGS["famo"] is FAMO and WEIGHTINGS["db-mtl"] is DualBalancing
    assert WEIGHTINGS["gls"] is GeometricLoss and WEIGHTINGS["imtl-l"] is ImpartialLoss
    assert WEIGHTINGS["stch"] is SmoothTchebycheff
