"""Auto-λ in the learner: meta-parameters apart from the network's, the weight step against the
engines of maxl.meta.task_weights, and the toy behaviour (a copy of the primary task gains weight,
random targets lose it)."""

import copy

import pytest
import torch
from torch import nn

from auxtasks import AuxiliaryLearner, Rotation, SupervisedLabels
from auxtasks.weighting import AutoLambda, Uncertainty
from maxl.meta.task_weights import task_weight_gradient


def _toy(seed=0, n=200, d=20, lr=0.01, engine="jvp", dtype=torch.float32, width=32):
    """A 4-class linear primary task; auxiliary tasks: a copy of it (same labels, a copy of the
    primary head) and random labels."""
    torch.manual_seed(seed)
    w = torch.randn(d, 4)
    x, xv = torch.randn(n, d), torch.randn(100, d)
    y, yv = (x @ w).argmax(1), (xv @ w).argmax(1)
    backbone = nn.Sequential(nn.Linear(d, width), nn.ReLU())
    head = nn.Linear(width, 4)
    tasks = [
        SupervisedLabels(4, y, name="copy", head=copy.deepcopy(head)),
        SupervisedLabels(4, torch.randint(0, 4, (n,)), name="noise", head=nn.Linear(width, 4)),
    ]
    learner = AuxiliaryLearner(backbone, head, tasks, AutoLambda(lr=lr, engine=engine), feature_dim=width).to(dtype)
    return learner, (x.to(dtype), y), (xv.to(dtype), yv)


def _train(learner, train, val, steps, seed=0):
    (x, y), (xv, yv) = train, val
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(learner.network_parameters(), lr=0.1)
    for _ in range(steps):
        idx, vi = torch.randint(0, len(x), (32,), generator=gen), torch.randint(0, len(xv), (32,), generator=gen)
        learner.weight_step(x[idx], y[idx], (xv[vi], yv[vi]), alpha=0.1, index=idx)
        out = learner(x[idx], y[idx], index=idx)
        opt.zero_grad()
        learner.backward(out)
        opt.step()
    return learner.weighting.weights()


def test_auto_lambda_is_registered_and_starts_at_the_references_weights():
    learner, *_ = _toy()
    assert AutoLambda.meta_learned
    assert learner.weighting.weights() == pytest.approx({"primary": 0.1, "copy": 0.1, "noise": 0.1})


def test_meta_parameters_are_apart_from_the_network_parameters():
    learner, *_ = _toy()
    meta = {id(p) for p in learner.meta_parameters()}
    network = {id(p) for p in learner.network_parameters()}
    assert meta == {id(learner.weighting.lam)}
    assert not meta & network
    assert meta | network == {id(p) for p in learner.parameters()}
    learner.check_optimizer(torch.optim.SGD(learner.network_parameters(), lr=0.1))  # accepted
    with pytest.raises(ValueError, match=r"holds the meta-parameters \['weighting.lam'\].*network_parameters"):
        learner.check_optimizer(torch.optim.SGD(learner.parameters(), lr=0.1))


def test_weights_moved_by_the_main_optimiser_are_refused_at_the_next_weight_step():
    learner, (x, y), (xv, yv) = _toy()
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)  # wrongly holds λ
    idx = torch.arange(16)
    out = learner(x[idx], y[idx], index=idx)
    opt.zero_grad()
    learner.backward(out)
    opt.step()
    with pytest.raises(ValueError, match="changed outside their meta step"):
        learner.weight_step(x[idx], y[idx], (xv[:16], yv[:16]), alpha=0.1, index=idx)


def test_weight_step_is_one_adam_step_along_the_engines_meta_gradient():
    learner, (x, y), (xv, yv) = _toy(lr=0.05, dtype=torch.float64)
    idx = torch.arange(32)
    expected = task_weight_gradient(
        *learner.task_weight_problem(x[idx], y[idx], (xv[:32], yv[:32]), index=idx),
        learner.weighting.lam.detach(),
        0.1,
        engine="func",
    ).grad
    result = learner.weight_step(x[idx], y[idx], (xv[:32], yv[:32]), alpha=0.1, index=idx)
    torch.testing.assert_close(result.grad, expected)
    # Adam's first step moves every weight by lr·sign(g) (bias-corrected m/√v = g/|g|)
    expected_lam = (0.1 - 0.05 * torch.sign(expected)).clamp(min=0)
    torch.testing.assert_close(learner.weighting.lam.detach(), expected_lam, rtol=1e-4, atol=1e-6)  # Adam's ε
    assert learner.weighting.lam.grad is None


def test_weight_step_leaves_the_network_and_its_statistics_untouched():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    learner = AuxiliaryLearner(backbone, nn.Linear(4, 3), [Rotation(hidden=0)], AutoLambda(), feature_dim=4)
    before = {k: v.clone() for k, v in learner.state_dict().items() if "lam" not in k and "adam" not in k}
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 3, (6,))
    for engine in ("jvp", "func", "fd"):
        learner.weighting.engine = engine
        learner.weight_step(x, y, (torch.randn(5, 3, 8, 8), torch.randint(0, 3, (5,))), alpha=0.1)
    after = learner.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert not torch.equal(learner.weighting.lam.detach(), torch.full((2,), 0.1))


def test_adam_state_is_in_the_state_dict():
    learner, (x, y), val = _toy()
    _train(learner, (x, y), val, 3)
    other, *_ = _toy(seed=1)
    other.load_state_dict(learner.state_dict())
    for name in ("lam", "adam_m", "adam_v", "adam_steps"):
        assert torch.equal(getattr(other.weighting, name), getattr(learner.weighting, name)), name


def test_non_finite_meta_gradient_stops_the_step():
    learner, *_ = _toy()
    with pytest.raises(FloatingPointError, match="non-finite meta-gradient"):
        learner.weighting.apply_gradient(torch.tensor([0.1, float("nan"), 0.0]))
    assert torch.equal(learner.weighting.lam.detach(), torch.full((3,), 0.1))


def test_weight_step_needs_a_meta_learned_weighting():
    learner = AuxiliaryLearner(nn.Linear(3, 4), nn.Linear(4, 2), [], Uncertainty(), feature_dim=4)
    with pytest.raises(ValueError, match="not meta-learned"):
        x, y = torch.randn(2, 3), torch.tensor([0, 1])
        learner.weight_step(x, y, (x, y), alpha=0.1)
    assert learner.meta_parameters() == []


@pytest.mark.parametrize(
    "kwargs, match",
    [({"lr": 0.0}, "learning rate"), ({"lr": float("nan")}, "learning rate"), ({"init": -1}, "initial")],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutoLambda(**kwargs)


def test_a_copy_of_the_primary_task_gains_weight_and_random_targets_lose_it_against_it():
    """The copy's weight grows tenfold; the random targets' weight, whose gradient is
    uncorrelated with the primary one, random-walks near its start (measured over 8 seeds: 0 to
    0.4 after 200 steps) and ends far below the copy's and the primary's."""
    for seed in range(3):
        learner, train, val = _toy(seed=seed)
        weights = _train(learner, train, val, 200, seed)
        assert weights["copy"] > 1.0  # from 0.1
        assert weights["noise"] < weights["copy"] - 0.5 and weights["noise"] < weights["primary"] - 0.5


def _bn_learner(seed=0):
    """A float64 conv learner with BatchNorm, rotation and a supervised task, and two batches."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    tasks = [Rotation(hidden=5), SupervisedLabels(3, torch.randint(0, 3, (8,)), name="coarse", head=nn.Linear(4, 3))]
    learner = AuxiliaryLearner(backbone, nn.Linear(4, 3), tasks, AutoLambda(init=0.1), feature_dim=4).double()
    with torch.no_grad():
        learner.weighting.lam.copy_(torch.tensor([0.9, 0.4, 1.7], dtype=torch.float64))
        learner.weighting.lam_after_step.copy_(learner.weighting.lam)
    x, y = torch.randn(8, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    held = torch.randn(5, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (5,))
    return learner, x, y, held


@pytest.mark.parametrize("engine", ["jvp", "func"])
def test_fused_weight_gradient_equals_the_engines_and_leaves_the_statistics_to_the_real_forward(engine):
    learner, x, y, held = _bn_learner()
    idx = torch.arange(8)
    expected = task_weight_gradient(
        *learner.task_weight_problem(x, y, held, index=idx), learner.weighting.lam.detach(), 0.3, engine=engine
    )
    bn = learner.backbone[1]
    before = bn.running_mean.clone()
    out = learner(x, y, index=idx)  # the real forward: the statistics advance once
    after = bn.running_mean.clone()
    assert not torch.equal(before, after)
    fused = learner.weighting.fused_meta_gradient(learner, learner.task_gradients(out), held, alpha=0.3)
    assert torch.equal(bn.running_mean, after)
    torch.testing.assert_close(fused.grad, expected.grad, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(fused.outer_loss, expected.outer_loss, rtol=1e-12, atol=0)


def test_fused_weight_gradient_equals_central_differences_of_the_look_ahead():
    from maxl.meta.task_weights import lookahead_point

    learner, x, y, held = _bn_learner(1)
    idx = torch.arange(8)
    task_losses, outer_loss, params = learner.task_weight_problem(x, y, held, index=idx)
    lam = learner.weighting.lam.detach().clone()
    fused = learner.weighting.fused_meta_gradient(
        learner, learner.task_gradients(learner(x, y, index=idx)), held, alpha=0.3
    )

    def objective(weights):
        return float(outer_loss(lookahead_point(task_losses, params, weights, 0.3)[0]))

    h = 1e-6
    fd = torch.tensor(
        [(objective(lam + h * e) - objective(lam - h * e)) / (2 * h) for e in torch.eye(3, dtype=lam.dtype)]
    )
    torch.testing.assert_close(fused.grad, fd.to(fused.grad), rtol=1e-6, atol=1e-10)


def test_fused_is_used_for_exact_engines_only():
    assert AutoLambda().fuses_with_step() and AutoLambda(engine="func").fuses_with_step()
    assert not AutoLambda(engine="fd").fuses_with_step() and not AutoLambda(fused=False).fuses_with_step()
    from auxtasks.weighting import OLAux

    assert OLAux().fuses_with_step() and not OLAux(fused=False).fuses_with_step()  # its own fused step
