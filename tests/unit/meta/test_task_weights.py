"""The meta-gradient with respect to the task weights (maxl.meta.task_weights) against float64
central finite differences of the look-ahead objective, and Auto-λ's finite-difference form
against the exact engines."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from maxl.meta.task_weights import TASK_WEIGHT_ENGINES, lookahead_point, task_weight_gradient


def _problem(seed=0, batchnorm=False):
    """A shared trunk with three heads (primary, and two auxiliary tasks on other inputs), float64."""
    torch.manual_seed(seed)
    trunk = [nn.Linear(5, 8)] + ([nn.BatchNorm1d(8)] if batchnorm else []) + [nn.Tanh()]
    net = nn.ModuleDict(
        {"trunk": nn.Sequential(*trunk), "pri": nn.Linear(8, 3), "a1": nn.Linear(8, 3), "a2": nn.Linear(8, 1)}
    ).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    x_aux, y_aux = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    r = torch.randn(16, 1, dtype=torch.float64)
    x_val, y_val = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 3, (12,))
    buffers = {n: b.clone() for n, b in net.named_buffers()}

    def run(params, part, inputs):
        sub = {n.removeprefix(f"{part}."): p for n, p in params.items() if n.startswith(f"{part}.")}
        trunk_params = {n.removeprefix("trunk."): p for n, p in {**params, **buffers}.items() if n.startswith("trunk.")}
        # fresh buffer copies at every call, as the learner's closures do
        features = functional_call(net["trunk"], {k: v.clone() for k, v in trunk_params.items()}, (inputs,))
        return functional_call(net[part], sub, (features,))

    def task_losses(params):
        ce = nn.functional.cross_entropy
        return torch.stack(
            [
                ce(run(params, "pri", x), y),
                ce(run(params, "a1", x_aux), y_aux),
                ((run(params, "a2", x) - r) ** 2).mean(),
            ]
        )

    def outer_loss(params):
        return nn.functional.cross_entropy(run(params, "pri", x_val), y_val)

    params = {n: p.detach() for n, p in net.named_parameters()}
    return task_losses, outer_loss, params


def _objective(task_losses, outer_loss, params, weights, alpha, steps=1):
    """J(λ) computed directly: k plain gradient steps, then the outer loss."""
    theta = dict(params)
    for _ in range(steps):
        fast = {n: p.detach().requires_grad_() for n, p in theta.items()}
        loss = (weights * task_losses(fast)).sum()
        grads = torch.autograd.grad(loss, list(fast.values()), allow_unused=True)
        theta = {n: p.detach() - alpha * (0 if g is None else g) for (n, p), g in zip(fast.items(), grads)}
    with torch.no_grad():
        return outer_loss(theta)


def _finite_differences(problem, weights, alpha, steps=1, h=1e-5):
    grad = torch.zeros_like(weights)
    for i in range(len(weights)):
        e = torch.zeros_like(weights)
        e[i] = h
        plus, minus = _objective(*problem, weights + e, alpha, steps), _objective(*problem, weights - e, alpha, steps)
        grad[i] = (plus - minus) / (2 * h)
    return grad


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("engine", ["jvp", "func"])
def test_exact_engines_equal_finite_differences(engine, batchnorm):
    problem = _problem(batchnorm=batchnorm)
    weights = torch.tensor([0.7, 0.3, 1.2], dtype=torch.float64)
    result = task_weight_gradient(*problem, weights, 0.5, engine=engine)
    expected = _finite_differences(problem, weights, 0.5)
    torch.testing.assert_close(result.grad, expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(result.outer_loss, _objective(*problem, weights, 0.5))


def test_func_engine_through_several_inner_steps_equals_finite_differences():
    problem = _problem(seed=1)
    weights = torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64)
    result = task_weight_gradient(*problem, weights, 0.3, engine="func", inner_steps=3)
    torch.testing.assert_close(result.grad, _finite_differences(problem, weights, 0.3, steps=3), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("epsilon", [1e-2, 1e-3])
def test_finite_difference_hvp_form_approaches_the_exact_one(epsilon):
    problem = _problem(seed=2, batchnorm=True)
    weights = torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64)
    exact = task_weight_gradient(*problem, weights, 0.5, engine="jvp")
    approx = task_weight_gradient(*problem, weights, 0.5, engine="fd", fd_epsilon=epsilon)
    error = (approx.grad - exact.grad).abs().max() / exact.grad.abs().max()
    assert error < 10 * epsilon**2  # a central difference: O(ε²)
    torch.testing.assert_close(approx.alignments, exact.alignments, rtol=100 * epsilon**2, atol=1e-9)


def test_gradient_is_minus_alpha_times_the_alignment_of_task_and_lookahead_gradients():
    """Eq. (1) by hand: −α ⟨∇θ L_i(θ), ∇θ⁺ L_out(θ⁺)⟩ from plain backward passes."""
    task_losses, outer_loss, params = _problem(seed=3)
    weights = torch.tensor([1.0, 0.4, 0.9], dtype=torch.float64)
    point, _ = lookahead_point(task_losses, params, weights, 0.2)
    fast = {n: p.requires_grad_() for n, p in point.items()}
    v = torch.autograd.grad(outer_loss(fast), list(fast.values()), allow_unused=True)
    theta = {n: p.detach().requires_grad_() for n, p in params.items()}
    expected = []
    for i in range(3):
        g = torch.autograd.grad(task_losses(theta)[i], list(theta.values()), allow_unused=True)
        expected.append(sum((gi * vi).sum() for gi, vi in zip(g, v) if gi is not None and vi is not None))
    result = task_weight_gradient(task_losses, outer_loss, params, weights, 0.2)
    torch.testing.assert_close(result.grad, -0.2 * torch.stack(expected))


def test_parameters_are_not_changed():
    task_losses, outer_loss, params = _problem(batchnorm=True)
    before = {n: p.clone() for n, p in params.items()}
    for engine in TASK_WEIGHT_ENGINES:
        task_weight_gradient(task_losses, outer_loss, params, torch.ones(3, dtype=torch.float64), 0.1, engine=engine)
    for n, p in params.items():
        assert torch.equal(p, before[n]) and p.grad is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"engine": "magic"}, "unknown task-weight engine"),
        ({"alpha": 0.0}, "alpha and fd_epsilon"),
        ({"fd_epsilon": -1.0}, "alpha and fd_epsilon"),
        ({"inner_steps": 2}, "only with engine 'func'"),
        ({"weights": torch.ones(2, dtype=torch.float64)}, "2 weights for 3 task losses"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    task_losses, outer_loss, params = _problem()
    args = {"weights": torch.ones(3, dtype=torch.float64), "alpha": 0.1, **kwargs}
    weights, alpha = args.pop("weights"), args.pop("alpha")
    with pytest.raises(ValueError, match=match):
        task_weight_gradient(task_losses, outer_loss, params, weights, alpha, **args)
