"""AuxiLearn in the learner: its hypergradient against hand computations, the monotone step, and
the toy behaviour (a copy of the primary task gains weight)."""

import copy

import pytest
import torch
from torch import nn

from auxtasks import AuxiliaryLearner, SupervisedLabels
from auxtasks.weighting import WEIGHTINGS, AuxiLearn, AuxiLearnNonlinear


def _toy(weighting, seed=0, n=200, d=20, dtype=torch.float32):
    torch.manual_seed(seed)
    w = torch.randn(d, 4)
    x, xv = torch.randn(n, d), torch.randn(100, d)
    y, yv = (x @ w).argmax(1), (xv @ w).argmax(1)
    backbone, head = nn.Sequential(nn.Linear(d, 32), nn.ReLU()), nn.Linear(32, 4)
    tasks = [
        SupervisedLabels(4, y, name="copy", head=copy.deepcopy(head)),
        SupervisedLabels(4, torch.randint(0, 4, (n,)), name="noise", head=nn.Linear(32, 4)),
    ]
    learner = AuxiliaryLearner(backbone, head, tasks, weighting, feature_dim=32).to(dtype)
    return learner, (x.to(dtype), y), (xv.to(dtype), yv)


def test_registered_with_the_auxiliary_network_as_meta_parameters():
    assert WEIGHTINGS["auxilearn"] is AuxiLearn and WEIGHTINGS["auxilearn-nonlinear"] is AuxiLearnNonlinear
    for weighting in (AuxiLearn(), AuxiLearnNonlinear(hidden=4)):
        learner, *_ = _toy(weighting)
        meta = {id(p) for p in learner.meta_parameters()}
        assert meta == {id(p) for p in weighting.net.parameters()}
        assert not meta & {id(p) for p in learner.network_parameters()}
        assert weighting.weights()["copy"] == pytest.approx(1.0, abs=0.15)  # about 1 at the start


def test_linear_hypergradient_with_one_term_is_minus_alpha_times_the_gradient_alignment():
    """K = 0: v = ∇θ L_out(θ), so dJ/dw_i = −α ⟨∇θ L_i(θ), ∇θ L_out(θ)⟩, written out by hand."""
    learner, (x, y), (xv, yv) = _toy(AuxiLearn(terms=0), dtype=torch.float64)
    idx = torch.arange(32)
    result = learner.weighting.meta_gradient(learner, x[idx], y[idx], (xv[:32], yv[:32]), alpha=0.1, index=idx)
    task_losses, outer_loss, params = learner.task_weight_problem(x[idx], y[idx], (xv[:32], yv[:32]), index=idx)
    theta = {n: p.clone().requires_grad_() for n, p in params.items()}
    g_out = torch.autograd.grad(outer_loss(theta), list(theta.values()), allow_unused=True)
    expected = []
    for i in range(3):
        g_i = torch.autograd.grad(task_losses(theta)[i], list(theta.values()), allow_unused=True)
        expected.append(sum((a * b).sum() for a, b in zip(g_i, g_out) if a is not None and b is not None))
    torch.testing.assert_close(result.grad[0].reshape(-1), -0.1 * torch.stack(expected).to(result.grad[0]))


def test_step_keeps_the_network_monotone_and_refuses_a_foreign_change():
    weighting = AuxiLearnNonlinear(lr=0.5, hidden=4)
    learner, (x, y), (xv, yv) = _toy(weighting)
    weighting.apply_gradient([torch.ones_like(p) for p in weighting.net.parameters()])  # pushes every weight down
    assert all((p >= 0).all() for n, p in weighting.net.named_parameters() if n.endswith("weight"))
    with torch.no_grad():
        weighting.net[0].weight += 1.0
    with pytest.raises(ValueError, match="changed outside its meta step"):
        learner.weight_step(x[:8], y[:8], (xv[:8], yv[:8]), alpha=0.1, index=torch.arange(8))
    with pytest.raises(FloatingPointError, match="non-finite hypergradient"):
        weighting.apply_gradient([torch.full_like(p, float("nan")) for p in weighting.net.parameters()])


@pytest.mark.parametrize("cls", [AuxiLearn, AuxiLearnNonlinear])
def test_a_copy_of_the_primary_task_gains_weight_against_random_targets(cls):
    learner, (x, y), (xv, yv) = _toy(cls(lr=0.01, hidden=4))
    opt = torch.optim.SGD(learner.network_parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx, vi = torch.randint(0, 200, (32,), generator=gen), torch.randint(0, 100, (32,), generator=gen)
        learner.weight_step(x[idx], y[idx], (xv[vi], yv[vi]), alpha=0.1, index=idx)
        out = learner(x[idx], y[idx], index=idx)
        opt.zero_grad()
        learner.backward(out)
        opt.step()
    weights = learner.weighting.weights()
    assert weights["copy"] > weights["noise"] + 0.2, weights


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="AuxiLearn needs"):
        AuxiLearn(terms=-1)
