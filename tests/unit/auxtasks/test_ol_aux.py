"""OL-AUX against a hand computation on a two-task linear least-squares toy, and its behaviour."""

import pytest
import torch
from torch import nn

from auxtasks import AuxiliaryLearner
from auxtasks.task import AuxiliaryTask
from auxtasks.weighting import WEIGHTINGS, OLAux


class _Regression(AuxiliaryTask):
    """½ mean (f − z)² against targets passed with the batch; the head is the identity."""

    name = "reg"
    likelihood = "gaussian"

    def make_inputs_and_targets(self, images, primary_labels, *, index=None, target=None):
        return images, target

    def build_head(self, feature_dim):
        return nn.Identity()

    def loss(self, predictions, targets):
        return 0.5 * ((predictions.squeeze(1) - targets) ** 2).mean()


def _least_squares(horizon=2, lr=0.1):
    """f(x; θ) = xᵀθ shared by both tasks: L_pri = ½ mean (Xθ − y)², L_aux = ½ mean (Xθ − z)²."""
    torch.manual_seed(0)
    backbone = nn.Linear(4, 1, bias=False).double()
    learner = AuxiliaryLearner(
        backbone,
        nn.Identity(),
        [_Regression(head=nn.Identity())],
        OLAux(lr=lr, horizon=horizon),
        feature_dim=1,
        primary_loss=lambda out, y: 0.5 * ((out.squeeze(1) - y) ** 2).mean(),
    )
    return learner, backbone


def _alignment_by_hand(theta, x, y, z):
    n = len(y)
    g_pri = x.T @ (x @ theta - y) / n  # ∇θ ½ mean (Xθ − y)²
    g_aux = x.T @ (x @ theta - z) / n
    return float(g_pri @ g_aux)


def test_alignment_and_horizon_update_equal_a_hand_computation(monkeypatch):
    learner, backbone = _least_squares(horizon=2, lr=0.1)
    weighting = learner.weighting
    assert weighting.weights() == pytest.approx({"primary": 1.0, "reg": 1.0})
    alpha, sums = 0.05, 0.0
    for step in range(2):
        x = torch.randn(8, 4, dtype=torch.float64)
        y, z = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
        monkeypatch.setattr(_Regression, "make_inputs_and_targets", lambda self, images, *a, z=z, **k: (images, z))
        theta = backbone.weight.detach().reshape(-1).clone()
        result = learner.weight_step(x, y, None, alpha=alpha)
        expected = -alpha * _alignment_by_hand(theta, x, y, z)
        assert float(result.grad[0]) == 0.0  # the primary weight is not learnt
        assert float(result.grad[1]) == pytest.approx(expected, rel=1e-10)
        sums += expected
        if step == 0:  # inside the horizon: only accumulated
            assert weighting.weights()["reg"] == 1.0
            assert float(weighting.accumulated[1]) == pytest.approx(expected, rel=1e-6)  # a float32 buffer
        with torch.no_grad():
            backbone.weight -= 0.1 * torch.randn_like(backbone.weight)  # the network moves between steps
    # at the horizon: one Adam step along the sum, m = (1 − β1)·Σ, and a first step of size lr·sign(Σ)
    assert float(weighting.adam_m[1]) == pytest.approx(0.1 * sums, rel=1e-6)
    assert weighting.weights()["reg"] == pytest.approx(1.0 - 0.1 * (1 if sums > 0 else -1), rel=1e-5)
    assert weighting.weights()["primary"] == 1.0
    assert float(weighting.accumulated.abs().sum()) == 0.0 and int(weighting.accumulated_steps) == 0


def test_the_papers_plain_step_moves_each_weight_by_lr_times_its_own_sum(monkeypatch):
    """``optimizer="sgd"``: at the horizon w ← max(w − lr · Σ, 0), so that two tasks with sums of
    different sizes move by different amounts (Adam's first step moves both by lr); against a hand
    computation of the sums."""
    torch.manual_seed(0)
    backbone = nn.Linear(4, 1, bias=False).double()
    reg2 = type("_Regression2", (_Regression,), {"name": "reg2"})
    z = {"reg": torch.randn(8, dtype=torch.float64), "reg2": 3 * torch.randn(8, dtype=torch.float64)}
    learner = AuxiliaryLearner(
        backbone,
        nn.Identity(),
        [_Regression(head=nn.Identity()), reg2(head=nn.Identity())],
        OLAux(lr=0.5, horizon=2, optimizer="sgd"),
        feature_dim=1,
        primary_loss=lambda out, y: 0.5 * ((out.squeeze(1) - y) ** 2).mean(),
    )
    monkeypatch.setattr(_Regression, "make_inputs_and_targets", lambda self, images, *a, **k: (images, z[self.name]))
    alpha, sums = 0.05, {"reg": 0.0, "reg2": 0.0}
    for _ in range(2):
        x, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
        theta = backbone.weight.detach().reshape(-1).clone()
        learner.weight_step(x, y, None, alpha=alpha)
        for name in sums:
            sums[name] += -alpha * _alignment_by_hand(theta, x, y, z[name])
    weights = learner.weighting.weights()
    assert abs(sums["reg"] - sums["reg2"]) > 1e-3  # the two tasks' signals differ in size
    for name in sums:
        assert weights[name] == pytest.approx(max(1.0 - 0.5 * sums[name], 0.0), rel=1e-5)
    assert weights["primary"] == 1.0
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        OLAux(optimizer="rmsprop")


def test_ol_aux_is_registered_and_needs_no_held_out_batch():
    assert WEIGHTINGS["ol-aux"] is OLAux and OLAux.meta_learned and not OLAux.uses_held_out
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        OLAux(horizon=0)


def test_a_copy_of_the_primary_task_gains_weight_and_random_targets_lose_it_against_it():
    import copy

    from auxtasks import SupervisedLabels

    for seed in (0,):
        torch.manual_seed(seed)
        w = torch.randn(20, 4)
        x = torch.randn(200, 20)
        y = (x @ w).argmax(1)
        backbone, head = nn.Sequential(nn.Linear(20, 32), nn.ReLU()), nn.Linear(32, 4)
        tasks = [
            SupervisedLabels(4, y, name="copy", head=copy.deepcopy(head)),
            SupervisedLabels(4, torch.randint(0, 4, (200,)), name="noise", head=nn.Linear(32, 4)),
        ]
        learner = AuxiliaryLearner(backbone, head, tasks, OLAux(lr=0.01, horizon=5), feature_dim=32)
        opt = torch.optim.SGD(learner.network_parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(200):
            idx = torch.randint(0, 200, (32,), generator=gen)
            learner.weight_step(x[idx], y[idx], None, alpha=0.1, index=idx)
            out = learner(x[idx], y[idx], index=idx)
            opt.zero_grad()
            learner.backward(out)
            opt.step()
        weights = learner.weighting.weights()
        assert weights["copy"] > 1.2 and weights["noise"] < weights["copy"] - 0.15, weights


def _bn_learner(seed=0, fused=True):
    """A float64 conv learner with BatchNorm, rotation (all four, deterministic) and a supervised
    task: the primary task reaches neither auxiliary head, rotation not the primary head."""
    from auxtasks import Rotation, SupervisedLabels

    torch.manual_seed(seed)
    backbone = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    tasks = [Rotation(hidden=5), SupervisedLabels(3, torch.randint(0, 3, (8,)), name="coarse", head=nn.Linear(4, 3))]
    weighting = OLAux(lr=0.01, horizon=2, fused=fused)
    learner = AuxiliaryLearner(backbone, nn.Linear(4, 3), tasks, weighting, feature_dim=4).double()
    x, y = torch.randn(8, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    return learner, x, y


@pytest.mark.parametrize("seed", [0, 1])
def test_fused_alignments_from_the_steps_task_gradients_equal_the_unfused_meta_gradient(seed):
    learner, x, y = _bn_learner(seed)
    idx = torch.arange(8)
    expected = learner.weighting.meta_gradient(learner, x, y, None, alpha=0.3, index=idx)
    bn = learner.backbone[1]
    out = learner(x, y, index=idx)  # the real forward: the statistics advance once
    after = bn.running_mean.clone()
    task_grads = learner.task_gradients(out)
    rotation_head = [n for n in task_grads[0] if n.startswith("tasks.0.")]
    assert rotation_head and all(task_grads[0][n] is None for n in rotation_head)  # 0 in the inner product
    fused = learner.weighting.fused_meta_gradient(learner, task_grads, None, alpha=0.3, losses=out.losses)
    assert torch.equal(bn.running_mean, after)  # nothing of its own runs through the network
    assert fused.grad.dtype == torch.float64 and float(fused.grad[0]) == 0.0
    torch.testing.assert_close(fused.grad, expected.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(fused.alignments, expected.alignments, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(fused.outer_loss, expected.outer_loss, rtol=1e-12, atol=0)
    assert float(fused.alignments[0]) > 0  # ⟨g_pri, g_pri⟩


def test_fused_is_the_default_and_an_option():
    assert OLAux().fuses_with_step() and OLAux().fused
    assert not OLAux(fused=False).fuses_with_step()
    assert "fused" in OLAux.OPTIONS and OLAux.OPTIONS["fused"][0] is bool
    assert "fused=True" in repr(OLAux()) and "fused=False" in repr(OLAux(fused=False))


def test_fused_steps_accumulate_over_the_horizon_as_the_unfused_ones():
    """Two fused weight steps (horizon 2) move the weights and Adam's moments as two unfused ones."""
    weights = {}
    for fused in (True, False):
        learner, x, y = _bn_learner(2, fused=fused)
        w = learner.weighting
        for step in range(2):
            xs, ys, idx = x + 0.1 * step, y, torch.arange(8)
            if fused:
                out = learner(xs, ys, index=idx)
                task_grads = learner.task_gradients(out)
                w.apply_gradient(w.fused_meta_gradient(learner, task_grads, None, alpha=0.3, losses=out.losses).grad)
            else:
                w.apply_gradient(w.meta_gradient(learner, xs, ys, None, alpha=0.3, index=idx).grad)
            assert int(w.accumulated_steps) == (step + 1) % 2
        weights[fused] = (w.lam.detach().clone(), w.adam_m.clone(), w.adam_v.clone())
    assert float(weights[True][0][0]) == 1.0 and not torch.equal(weights[True][0], torch.ones(3, dtype=torch.float64))
    for a, b in zip(weights[True], weights[False]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)
