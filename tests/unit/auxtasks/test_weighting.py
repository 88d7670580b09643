"""Each loss weighting against a hand computation on a two-task toy problem.

The toy: a shared parameter θ ∈ R² and one scalar head parameter per task; the task losses
are chosen so that their gradients are known in closed form.
"""

import math

import pytest
import torch

from auxtasks.weighting import (
    DynamicWeightAverage,
    Equal,
    Fixed,
    GradientCosineSimilarity,
    GradNorm,
    PCGrad,
    Uncertainty,
)

NAMES = ["primary", "aux"]


class Toy:
    """L_primary = a·θ + h_0², L_aux = b·θ + h_1² (linear in θ: ∇θ L = a, b exactly)."""

    def __init__(self, a, b, theta=(0.3, -0.2)):
        self.theta = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        self.heads = torch.tensor([0.5, -1.5], dtype=torch.float64, requires_grad=True)
        self.a, self.b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)

    def losses(self):
        return {"primary": self.a @ self.theta + self.heads[0] ** 2, "aux": self.b @ self.theta + self.heads[1] ** 2}

    def step(self, weighting):
        losses = self.losses()
        total = weighting.combine(losses)
        weighting.backward(losses, total, [self.theta], [self.heads])
        return losses, total


def bound(weighting, likelihoods=None):
    weighting.bind(NAMES, likelihoods)
    return weighting.double()


def test_equal_and_fixed_weights():
    toy = Toy([1.0, 2.0], [-3.0, 0.5])
    toy.step(bound(Equal()))
    torch.testing.assert_close(toy.theta.grad, toy.a + toy.b)
    toy = Toy([1.0, 2.0], [-3.0, 0.5])
    losses, total = toy.step(bound(Fixed({"aux": 0.25})))
    torch.testing.assert_close(total, losses["primary"] + 0.25 * losses["aux"])
    torch.testing.assert_close(toy.theta.grad, toy.a + 0.25 * toy.b)
    torch.testing.assert_close(toy.heads.grad, torch.tensor([2 * 0.5, 0.25 * 2 * -1.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown tasks"):
        Fixed({"rotaton": 0.5}).bind(NAMES)
    with pytest.raises(ValueError, match=">= 0"):
        Fixed({"aux": -1.0})


def test_uncertainty_weighting_by_hand():
    w = bound(Uncertainty(), {"aux": "gaussian"})
    with torch.no_grad():
        w.log_variance.copy_(torch.tensor([0.4, -0.7], dtype=torch.float64))
    losses = {"primary": torch.tensor(2.0, dtype=torch.float64), "aux": torch.tensor(3.0, dtype=torch.float64)}
    total = w.combine(losses)
    s0, s1 = 0.4, -0.7
    # classification (Eq. 10): exp(-s) L + s/2; regression (Eq. 7): exp(-s) L / 2 + s/2
    assert math.isclose(total.item(), math.exp(-s0) * 2 + s0 / 2 + 0.5 * math.exp(-s1) * 3 + s1 / 2, rel_tol=1e-12)
    total.backward()
    expected = [-math.exp(-s0) * 2 + 0.5, -0.5 * math.exp(-s1) * 3 + 0.5]
    torch.testing.assert_close(w.log_variance.grad, torch.tensor(expected, dtype=torch.float64))
    assert w.weights() == pytest.approx({"primary": math.exp(-s0), "aux": 0.5 * math.exp(-s1)})


def test_uncertainty_weighting_reaches_its_closed_form_optimum():
    w = bound(Uncertainty(), {"aux": "gaussian"})
    losses = {"primary": torch.tensor(2.0, dtype=torch.float64), "aux": torch.tensor(3.0, dtype=torch.float64)}
    opt = torch.optim.SGD(w.parameters(), lr=0.2)
    for _ in range(500):
        opt.zero_grad()
        w.combine(losses).backward()
        opt.step()
    variance = w.log_variance.detach().exp()
    torch.testing.assert_close(variance, torch.tensor([2 * 2.0, 3.0], dtype=torch.float64))  # σ² = 2L and σ² = L


def test_dwa_weights_follow_the_formula_at_a_known_loss_history():
    w = bound(DynamicWeightAverage(temperature=2.0))
    history = [((4.0, 2.0), (2.0, 4.0)), ((2.0, 1.5), (3.0, 1.5))]  # two steps per epoch
    for epoch in history:
        assert w.weights() == {"primary": 1.0, "aux": 1.0}  # epochs 1 and 2: no ratio yet
        for primary, aux in epoch:
            w.combine({"primary": torch.tensor(primary), "aux": torch.tensor(aux)})
        w.end_epoch()
    # epoch means: L(1) = (3, 3), L(2) = (2.5, 1.5); r = L(2) / L(1) = (5/6, 1/2)
    r = [2.5 / 3, 1.5 / 3]
    lam = [2 * math.exp(x / 2) / sum(math.exp(y / 2) for y in r) for x in r]
    assert w.weights() == pytest.approx({"primary": lam[0], "aux": lam[1]})
    # the weights of epoch 3 are used in the combination
    total = w.combine({"primary": torch.tensor(1.0), "aux": torch.tensor(2.0)})
    assert total.item() == pytest.approx(lam[0] * 1 + lam[1] * 2)
    w.eval()  # evaluation batches do not count
    w.combine({"primary": torch.tensor(100.0), "aux": torch.tensor(100.0)})
    assert w.epoch_steps.item() == 1


def test_gradnorm_by_hand():
    a, b = [3.0, 4.0], [1.0, 0.0]  # gradient norms 5 and 1
    toy = Toy(a, b)
    w = bound(GradNorm(alpha=1.5))
    losses, _ = toy.step(w)
    # step 0: L(0) recorded, r_i = 1, target = mean G = (5 + 1)/2 = 3
    # dL_grad/dw_i = sign(G_i - 3) * ||g_i|| = (+5, -1)
    torch.testing.assert_close(w.task_weights.grad, torch.tensor([5.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(toy.theta.grad, toy.a + toy.b)  # w = (1, 1)
    torch.testing.assert_close(w.initial_losses, torch.stack([losses["primary"], losses["aux"]]).detach())

    # second step: weights (1.5, 0.5) after the optimiser step are renormalised to sum 2
    with torch.no_grad():
        w.task_weights.copy_(torch.tensor([3.0, 1.0]))
    w.task_weights.grad = None
    toy.theta.grad = toy.heads.grad = None
    with torch.no_grad():
        toy.theta.copy_(torch.tensor([0.1, 0.9], dtype=torch.float64))
    losses, total = toy.step(w)
    w0, w1 = 1.5, 0.5
    assert w.task_weights.detach().tolist() == pytest.approx([w0, w1])
    l0 = [float(v) for v in w.initial_losses]
    lt = [losses["primary"].item(), losses["aux"].item()]
    ratio = [lt[0] / l0[0], lt[1] / l0[1]]
    r = [x / (sum(ratio) / 2) for x in ratio]
    g = [w0 * 5, w1 * 1]
    target = [(g[0] + g[1]) / 2 * r_i**1.5 for r_i in r]
    expected = [math.copysign(5, g[0] - target[0]), math.copysign(1, g[1] - target[1])]
    assert w.task_weights.grad.tolist() == pytest.approx(expected)
    torch.testing.assert_close(toy.theta.grad, w0 * toy.a + w1 * toy.b)
    assert total.item() == pytest.approx(w0 * lt[0] + w1 * lt[1])


def test_pcgrad_removes_the_conflicting_component():
    toy = Toy([1.0, 0.0], [-1.0, 1.0])  # a·b = -1 < 0: conflict
    toy.step(bound(PCGrad()))
    # a' = a - (a·b/|b|²) b = (1, 0) + ½(-1, 1) = (½, ½);  b' = b - (b·a/|a|²) a = (-1, 1) + (1, 0) = (0, 1)
    torch.testing.assert_close(toy.theta.grad, torch.tensor([0.5, 1.5], dtype=torch.float64))
    torch.testing.assert_close(toy.heads.grad, torch.tensor([1.0, -3.0], dtype=torch.float64))  # heads untouched
    agree = Toy([1.0, 0.0], [1.0, 1.0])  # no conflict: the plain sum
    agree.step(bound(PCGrad()))
    torch.testing.assert_close(agree.theta.grad, torch.tensor([2.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("mode", ["unweighted", "weighted"])
def test_gradient_similarity_drops_an_opposing_auxiliary_gradient(mode):
    opposing = Toy([1.0, 0.0], [-1.0, 0.1])
    w = bound(GradientCosineSimilarity(mode))
    opposing.step(w)
    torch.testing.assert_close(opposing.theta.grad, opposing.a)  # the auxiliary gradient is dropped
    torch.testing.assert_close(opposing.heads.grad, torch.tensor([1.0, -3.0], dtype=torch.float64))
    assert w.weights()["aux"] == 0.0
    agreeing = Toy([1.0, 0.0], [1.0, 1.0])  # cos = 1/√2
    agreeing.step(w)
    factor = 1.0 if mode == "unweighted" else 1 / math.sqrt(2)
    torch.testing.assert_close(agreeing.theta.grad, agreeing.a + factor * agreeing.b)


def test_gradient_weightings_accumulate_into_existing_grads():
    toy = Toy([1.0, 0.0], [0.0, 1.0])
    toy.theta.grad = torch.tensor([10.0, 10.0], dtype=torch.float64)
    toy.step(bound(PCGrad()))
    torch.testing.assert_close(toy.theta.grad, torch.tensor([11.0, 11.0], dtype=torch.float64))


def test_binding_checks_the_task_names():
    with pytest.raises(ValueError, match="start with 'primary'"):
        Equal().bind(["aux", "primary"])
    w = Equal()
    w.bind(NAMES)
    with pytest.raises(ValueError, match="bound to tasks"):
        w.bind(["primary", "other"])
    with pytest.raises(ValueError, match="do not match"):
        w.combine({"primary": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="temperature"):
        DynamicWeightAverage(temperature=0)
