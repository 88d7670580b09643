"""MAXL's look-ahead takes the step the network really takes: θ1⁺ = θ1 − α ∇θ1 Σ_i λ_i L_i with the
weighting's current (detached) weights λ, against the engines on a scaled auxiliary loss and
against float64 central finite differences of the weighted look-ahead objective."""

import copy

import pytest
import torch
from torch import nn

from auxtasks import AuxiliaryLearner, GeneratedLabels, Rotation
from auxtasks.weighting import AutoLambda, Equal, Fixed, PCGrad
from maxl.core.losses import classification_loss, negative_entropy
from maxl.meta import MetaConfig, meta_gradient
from maxl.nn.backbones import ConvNet
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork

PSI = [2, 1, 3]
FOCAL = classification_loss("focal")
ALPHA, ENTROPY = 0.5, 0.2


def _setup(weighting, engine="func", rotation=False, seed=1, order="second"):
    torch.manual_seed(seed)
    net = MultiTaskNetwork(ConvNet(1, (3,), (1,)), len(PSI), sum(PSI), hidden=5).double()
    gen = LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5).double()
    x, y = torch.randn(6, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 2, 1])
    cfg = MetaConfig(inner_lr=ALPHA, engine=engine, order=order)
    task = GeneratedLabels(gen, meta=cfg, loss_fn=FOCAL, head=net.aux_head, name="maxl")
    tasks = [task, Rotation(hidden=4)] if rotation else [task]
    learner = AuxiliaryLearner.from_multitask_network(net, tasks, weighting, primary_loss=FOCAL).double()
    return learner, net, gen, x, y, cfg


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


@pytest.mark.parametrize(("engine", "order"), [("func", "second"), ("jvp", "second"), ("func", "first")])
def test_a_fixed_weight_on_maxls_task_is_its_auxiliary_loss_scaled(engine, order):
    learner, net, gen, x, y, cfg = _setup(Fixed({"maxl": 0.3}), engine=engine, order=order)
    ours = learner.meta_gradient(x, y)
    w = learner.weighting.lookahead_weights()["maxl"]  # 0.3 as the weighting stores it (float32)
    assert w == pytest.approx(0.3)

    def scaled(logits, target):  # the engines' loss with L_aux × 0.3
        return w * FOCAL(logits, target) if target.dtype.is_floating_point else FOCAL(logits, target)

    theirs = meta_gradient(net, gen, x, y, scaled, cfg)
    for a, b in zip(ours.grads, theirs.grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    unit = _setup(Equal(), engine=engine, order=order)
    plain = unit[0].meta_gradient(unit[3], unit[4])
    assert (_flat(ours.grads) - _flat(plain.grads)).abs().max() > 1e-6  # the weight matters


@pytest.mark.parametrize("weighting", [Fixed(), Fixed({"maxl": 1.0}), PCGrad()], ids=["fixed-1", "maxl-1", "pcgrad"])
def test_unit_weights_and_gradient_weightings_leave_the_look_ahead_bit_for_bit(weighting):
    learner, *_, x, y, _ = _setup(weighting, rotation=True)
    reference, *_, xr, yr, _ = _setup(Equal(), rotation=True)
    for a, b in zip(learner.meta_gradient(x, y).grads, reference.meta_gradient(xr, yr).grads):
        assert torch.equal(a, b)


def _naive_objective(learner, gen, x, y, weights):
    """J = L_pri(θ1⁺) + λ_H Σ ȳ log ȳ by module calls: a deep copy of the learner takes one plain SGD
    step on Σ_i λ_i L_i (primary, generated labels, rotation if present)."""
    soft = gen(x, y)
    look = copy.deepcopy(learner)
    features = look.backbone(x)
    inner = weights["primary"] * FOCAL(look.primary_head(features), y)
    inner = inner + weights["maxl"] * FOCAL(look.tasks[0].head(features), soft)
    stepped = [*look.backbone.parameters(), *look.primary_head.parameters(), *look.tasks[0].head.parameters()]
    if len(look.tasks) > 1:
        rotated = torch.cat([torch.rot90(x, k, (2, 3)) for k in range(4)])
        angles = torch.arange(4).repeat_interleave(len(x))
        inner = inner + weights["rotation"] * nn.functional.cross_entropy(look.tasks[1](look.backbone(rotated)), angles)
    g = torch.autograd.grad(inner, stepped, allow_unused=True)
    with torch.no_grad():
        for p, gi in zip(stepped, g):
            if gi is not None:
                p -= ALPHA * gi
    return FOCAL(look.primary_head(look.backbone(x)), y) + ENTROPY * negative_entropy(soft)


@pytest.mark.parametrize("engine", ["func", "jvp"])
@pytest.mark.parametrize("primary", [0.7, 0.0])
def test_weighted_look_ahead_equals_finite_differences(engine, primary):
    weighting = Fixed({"primary": primary, "maxl": 0.3, "rotation": 2.0})
    learner, _, gen, x, y, _ = _setup(weighting, engine=engine, rotation=True)
    weights = learner.weighting.lookahead_weights()  # as stored (float32)
    state = copy.deepcopy(learner.state_dict())
    exact = _flat(learner.meta_gradient(x, y).grads)
    for k, v in learner.state_dict().items():
        if ".generator." not in k:
            assert torch.equal(v, state[k]), k
    params = list(gen.parameters())
    draws = torch.Generator().manual_seed(0)
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=draws, dtype=p.dtype) for p in params]
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, v in zip(params, direction):
                    p += sign * 1e-5 * v
            values.append(_naive_objective(learner, gen, x, y, weights).item())
            with torch.no_grad():
                for p, v in zip(params, direction):
                    p -= sign * 1e-5 * v
        fd = (values[0] - values[1]) / 2e-5
        assert abs(float(exact @ _flat(direction)) - fd) < 1e-9 + 1e-6 * abs(fd)


def test_auto_lambdas_current_weights_drive_the_generators_look_ahead():
    learner, *_, x, y, _ = _setup(AutoLambda(init=0.1), rotation=True)
    with torch.no_grad():
        learner.weighting.lam.copy_(torch.tensor([1.25, 0.375, 0.75], dtype=learner.weighting.lam.dtype))
    fixed, *_, xf, yf, _ = _setup(Fixed(learner.weighting.lookahead_weights()), rotation=True)
    for a, b in zip(learner.meta_gradient(x, y).grads, fixed.meta_gradient(xf, yf).grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
