"""MGDA's min-norm weights against the two-task closed form and a general QP solution (scipy),
its update and MGDA-UB's through the learner, and DTP's weights against a hand computation."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from auxtasks import AuxiliaryLearner, Rotation
from auxtasks.weighting import MGDA, WEIGHTINGS, DynamicTaskPrioritization, MGDAUpperBound
from auxtasks.weighting.mgda import min_norm_weights

from tests.unit.auxtasks.test_weighting import NAMES, Toy, bound


def qp_weights(g: np.ndarray) -> np.ndarray:
    """argmin_{α ∈ simplex} ‖αᵀ G‖² by SLSQP, independently of the Frank–Wolfe solver."""
    m = g @ g.T
    res = minimize(
        lambda a: a @ m @ a,
        np.full(len(g), 1 / len(g)),
        jac=lambda a: 2 * m @ a,
        bounds=[(0, 1)] * len(g),
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1}],
        method="SLSQP",
        options={"ftol": 1e-16, "maxiter": 1000},
    )
    return res.x


@pytest.mark.parametrize("seed", range(5))
def test_two_tasks_follow_the_closed_form(seed):
    g = torch.randn(2, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    if seed == 4:
        g[1] = 2 * g[0] + 0.1 * g[1]  # nearly parallel: the solution sits at a vertex
    g1, g2 = g
    gamma = float(((g2 - g1) @ g2 / (g1 - g2).pow(2).sum()).clamp(0, 1))  # Sener & Koltun, Algorithm 1
    alpha = min_norm_weights(g @ g.T)
    torch.testing.assert_close(alpha, torch.tensor([gamma, 1 - gamma], dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_three_tasks_match_a_qp_solver(seed):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(3, 9))
    if seed % 2:
        g[2] = g[0] + 0.3 * g[1]  # a solution on an edge of the simplex
    alpha = min_norm_weights(torch.from_numpy(g @ g.T)).numpy()
    ref = qp_weights(g)
    assert alpha.min() >= 0 and abs(alpha.sum() - 1) < 1e-12
    np.testing.assert_allclose(alpha, ref, atol=1e-5)
    assert np.linalg.norm(alpha @ g) <= np.linalg.norm(ref @ g) + 1e-9


def test_mgda_update_is_the_min_norm_combination_and_heads_keep_their_own_gradients():
    toy = Toy([1.0, 2.0], [-3.0, 0.5])
    w = bound(MGDA())
    toy.step(w)
    g = torch.stack([toy.a, toy.b])
    gamma = float(((toy.b - toy.a) @ toy.b / (toy.a - toy.b).pow(2).sum()).clamp(0, 1))
    torch.testing.assert_close(toy.theta.grad, gamma * toy.a + (1 - gamma) * toy.b)
    torch.testing.assert_close(toy.heads.grad, torch.tensor([1.0, -3.0], dtype=torch.float64))  # 2h, unweighted
    assert w.weights() == pytest.approx({"primary": gamma, "aux": 1 - gamma})
    # the update is a common descent direction (or zero): it does not raise either loss to first order
    assert all(float(gi @ toy.theta.grad) >= -1e-12 for gi in g)
    with pytest.raises(ValueError, match="normalisation"):
        MGDA(normalise="max")


def test_mgda_upper_bound_solves_on_the_representation():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    backbone.out_features = 5
    head, aux_head = torch.nn.Linear(5, 3), torch.nn.Linear(5, 4)
    from auxtasks import SupervisedLabels

    task = SupervisedLabels(4, torch.randint(0, 4, (8,)), head=aux_head, name="human")
    learner = AuxiliaryLearner(backbone, head, [task], MGDAUpperBound())
    x, y, idx = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,)), torch.arange(8)
    out = learner(x, y, index=idx)
    z = out.features
    gz = [torch.autograd.grad(out.losses[n], z, retain_graph=True)[0].reshape(-1) for n in NAMES[:1] + ["human"]]
    gz = torch.stack(gz)
    alpha = min_norm_weights(gz @ gz.T)
    assert 0 < float(alpha[0]) < 1  # an interior solution: both tasks count
    ref = torch.autograd.grad(
        alpha[0].float() * out.losses["primary"] + alpha[1].float() * out.losses["human"],
        list(backbone.parameters()),
        retain_graph=True,
    )
    ref_head = torch.autograd.grad(out.losses["primary"], head.weight, retain_graph=True)[0]
    learner.backward(out)
    for p, r in zip(backbone.parameters(), ref):
        torch.testing.assert_close(p.grad, r)
    torch.testing.assert_close(head.weight.grad, ref_head)
    rot = AuxiliaryLearner(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5)),
        torch.nn.Linear(5, 3),
        [Rotation("random", 0)],
        MGDAUpperBound(),
        feature_dim=5,
    )
    with pytest.raises(ValueError, match="MGDA-UB"):
        rot.backward(rot(x, y))
    assert WEIGHTINGS["mgda"] is MGDA and WEIGHTINGS["mgda-ub"] is MGDAUpperBound


def test_dtp_weights_follow_the_hand_computation():
    w = bound(DynamicTaskPrioritization(gamma=2.0, momentum=0.5))
    toy = Toy([1.0, 2.0], [-3.0, 0.5])
    # step 1: κ̄ = the first accuracies
    w.observe({"primary": 0.8, "aux": 0.25})
    losses = toy.losses()
    total = w.combine(losses)
    expect = {"primary": -(0.2**2) * math.log(0.8), "aux": -(0.75**2) * math.log(0.25)}
    assert w.weights() == pytest.approx(expect, rel=1e-6)
    torch.testing.assert_close(
        total, expect["primary"] * losses["primary"] + expect["aux"] * losses["aux"], rtol=1e-6, atol=0
    )
    # step 2: κ̄ = 0.5 κ̄ + 0.5 κ; a task without an accuracy uses exp(−L)
    w.observe({"primary": 0.6, "aux": None})
    losses = toy.losses()
    w.combine(losses)
    k_aux = 0.5 * 0.25 + 0.5 * math.exp(-float(losses["aux"].detach()))
    expect = {"primary": -(0.3**2) * math.log(0.7), "aux": -((1 - k_aux) ** 2) * math.log(k_aux)}
    assert w.weights() == pytest.approx(expect, rel=1e-6)
    # evaluation does not move the averages
    w.eval()
    w.observe({"primary": 0.0, "aux": 0.0})
    w.combine(toy.losses())
    assert w.weights() == pytest.approx(expect, rel=1e-6)
    # the worse task gets the larger weight
    assert expect["aux"] > expect["primary"]
    with pytest.raises(ValueError, match="DTP"):
        DynamicTaskPrioritization(measure="f1")


def test_dtp_reads_the_accuracies_from_the_learner():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    backbone.out_features = 5
    from auxtasks import SupervisedLabels

    labels = torch.randint(0, 4, (8,))
    learner = AuxiliaryLearner(
        backbone,
        torch.nn.Linear(5, 3),
        [SupervisedLabels(4, labels, name="human")],
        DynamicTaskPrioritization(gamma=1.0, momentum=0.0),
    )
    x, y, idx = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,)), torch.arange(8)
    out = learner(x, y, index=idx)
    acc = float((out.primary_logits.argmax(1) == y).float().mean())
    kappa = min(max(acc, 1e-4), 1.0)
    assert out.weights["primary"] == pytest.approx(-(1 - kappa) * math.log(kappa), rel=1e-6)


def test_soft_sharing_penalty_joins_a_gradient_weighting_update():
    """A gradient weighting that sums the task gradients gives the same update as equal weights
    on the total loss, soft sharing's penalty included."""
    from auxtasks import SupervisedLabels
    from auxtasks.weighting import Equal, GradientWeighting
    from maxl.nn.architectures import soft_sharing
    from maxl.nn.backbones import tiny_cnn

    class SumOfGradients(GradientWeighting):
        def combine_gradients(self, grads, losses):
            return sum(grads.values())

    x, y, idx = torch.randn(6, 1, 8, 8), torch.randint(0, 2, (6,)), torch.arange(6)
    grads = {}
    for weighting in (Equal(), SumOfGradients()):
        torch.manual_seed(0)
        net = soft_sharing(lambda: tiny_cnn(1), 2, 4, 8, weight=0.5)
        task = SupervisedLabels(4, torch.randint(0, 4, (6,)), head=net.aux_head, name="human")
        learner = AuxiliaryLearner.from_multitask_network(net, [task], weighting)
        out = learner(x, y, index=idx)
        assert out.penalty is not None and float(out.penalty) > 0
        learner.backward(out)
        grads[type(weighting).__name__] = torch.cat([p.grad.reshape(-1) for p in learner.parameters()])
    torch.testing.assert_close(grads["SumOfGradients"], grads["Equal"], rtol=1e-5, atol=1e-6)
