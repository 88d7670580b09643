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


def _quadratic(seed=0, d=4, tasks=3):
    """L_i(θ) = ½ (θ − c_i)ᵀ A_i (θ − c_i) with A_i symmetric positive definite; L_T = Σ φ_i L_i,
    so H = Σ φ_i A_i and θ*(φ) = H⁻¹ Σ φ_i A_i c_i are known in closed form."""
    gen = torch.Generator().manual_seed(seed)
    mats = []
    for _ in range(tasks):
        m = torch.randn(d, d, generator=gen, dtype=torch.float64)
        mats.append(m @ m.T / d + 0.5 * torch.eye(d, dtype=torch.float64))
    centres = [torch.randn(d, generator=gen, dtype=torch.float64) for _ in range(tasks)]
    b = torch.randn(d, generator=gen, dtype=torch.float64)

    def task_losses(params):
        t = params["theta"]
        return torch.stack([0.5 * (t - c) @ a @ (t - c) for a, c in zip(mats, centres)])

    def outer_loss(params):
        return 0.5 * ((params["theta"] - b) ** 2).sum()

    def optimum(phi):
        h = sum(p * a for p, a in zip(phi, mats))
        return torch.linalg.solve(h, sum(p * a @ c for p, a, c in zip(phi, mats, centres)))

    return task_losses, outer_loss, optimum, mats, centres


def test_implicit_hypergradient_equals_the_exact_one_on_a_quadratic_inner_loss():
    from maxl.meta.task_weights import implicit_combination_gradient

    task_losses, outer_loss, optimum, mats, centres = _quadratic()
    phi = torch.tensor([1.0, 0.6, 0.3], dtype=torch.float64, requires_grad=True)
    theta = optimum(phi.detach())  # the inner problem solved: the implicit function theorem holds exactly
    result = implicit_combination_gradient(
        task_losses, outer_loss, {"theta": theta}, lambda losses: (phi * losses).sum(), [phi], 0.2, 400
    )
    # exact: −∇θ L_outᵀ H⁻¹ ∂²L_T/∂θ∂φ_i = −gᵀ H⁻¹ A_i (θ − c_i)
    h = sum(p * a for p, a in zip(phi.detach(), mats))
    grad_out = torch.autograd.functional.jacobian(lambda t: outer_loss({"theta": t}), theta)
    exact = torch.stack([-grad_out @ torch.linalg.solve(h, a @ (theta - c)) for a, c in zip(mats, centres)])
    torch.testing.assert_close(result.grad[0], exact, rtol=1e-8, atol=1e-10)
    # and the total derivative of L_out(θ*(φ)) by float64 central differences
    fd = torch.zeros(3, dtype=torch.float64)
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = 1e-6
        up = outer_loss({"theta": optimum(phi.detach() + e)})
        down = outer_loss({"theta": optimum(phi.detach() - e)})
        fd[i] = (up - down) / 2e-6
    torch.testing.assert_close(result.grad[0], fd, rtol=1e-6, atol=1e-9)


def test_implicit_hypergradient_truncated_is_the_neumann_partial_sum():
    """K terms: −α Σ_{j≤K} gᵀ (I − αH)^j A_i (θ − c_i), written out with matrices."""
    from maxl.meta.task_weights import implicit_combination_gradient

    task_losses, outer_loss, _, mats, centres = _quadratic(seed=1)
    phi = torch.tensor([0.8, 0.5, 1.1], dtype=torch.float64, requires_grad=True)
    theta = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    alpha, k = 0.1, 3
    result = implicit_combination_gradient(
        task_losses, outer_loss, {"theta": theta}, lambda losses: (phi * losses).sum(), [phi], alpha, k
    )
    h = sum(p * a for p, a in zip(phi.detach(), mats))
    step = torch.eye(4, dtype=torch.float64) - alpha * h
    series = sum(torch.linalg.matrix_power(step, j) for j in range(k + 1))
    grad_out = torch.autograd.functional.jacobian(lambda t: outer_loss({"theta": t}), theta)
    expected = torch.stack([-alpha * grad_out @ series @ (a @ (theta - c)) for a, c in zip(mats, centres)])
    torch.testing.assert_close(result.grad[0], expected, rtol=1e-10, atol=1e-12)
