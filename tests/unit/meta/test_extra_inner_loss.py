"""meta_gradient's extra_inner_loss: the look-ahead θ1⁺ = θ1 − α∇(L_pri + L_aux + L_x), checked
against float64 central finite differences (along random directions of θ2) of an independently
computed outer objective."""

import copy

import pytest
import torch

from maxl.core.losses import classification_loss, negative_entropy
from maxl.meta import MetaConfig, meta_gradient

from tests.unit.meta.tiny import other_task_loss, tiny_networks


def setup(seed=0):
    dtype = torch.float64
    net, gen, x, y = tiny_networks(dtype, seed)
    x_other = torch.randn(5, 1, 4, 4, dtype=dtype)  # the inputs of "another task"
    target_other = torch.randn(5, 3, dtype=dtype)
    return net, gen, x, y, x_other, target_other


def naive_objective(net, gen, x, y, x_other, target_other, loss_fn, alpha, lam):
    soft = gen(x, y)
    look = copy.deepcopy(net)
    pri, aux = look(x)
    backbone_params = dict(look.backbone.named_parameters())
    other = other_task_loss(look.backbone, backbone_params, x_other, target_other)
    inner = loss_fn(pri, y) + loss_fn(aux, soft) + other
    grads = torch.autograd.grad(inner, list(look.parameters()))
    with torch.no_grad():
        for p, g in zip(look.parameters(), grads):
            p -= alpha * g
    return loss_fn(look(x)[0], y) + lam * negative_entropy(soft)


def directional_fd(f, params, direction, h=1e-5):
    """(f(θ2 + h v) − f(θ2 − h v)) / 2h: the derivative of f along v, by central differences."""

    def shifted(sign):
        with torch.no_grad():
            for p, v in zip(params, direction):
                p += sign * h * v
        value = f().item()
        with torch.no_grad():
            for p, v in zip(params, direction):
                p -= sign * h * v
        return value

    return (shifted(1) - shifted(-1)) / (2 * h)


def make_extra(net, x_other, target_other):
    def extra(params):
        backbone = {n.removeprefix("backbone."): p for n, p in params.items() if n.startswith("backbone.")}
        return other_task_loss(net.backbone, backbone, x_other, target_other)

    return extra


@pytest.mark.parametrize("engine", ["func", "higher", "jvp"])
def test_extra_inner_loss_meta_gradient_equals_finite_differences(engine):
    net, gen, x, y, x_other, target_other = setup()
    loss_fn = classification_loss("focal")
    cfg = MetaConfig(inner_lr=0.5, engine=engine)
    state = copy.deepcopy(net.state_dict())
    result = meta_gradient(net, gen, x, y, loss_fn, cfg, extra_inner_loss=make_extra(net, x_other, target_other))
    exact = torch.cat([g.reshape(-1) for g in result.grads])
    for k, v in net.state_dict().items():  # the extra loss does not touch the network either
        assert torch.equal(v, state[k]), k
    plain = torch.cat([g.reshape(-1) for g in meta_gradient(net, gen, x, y, loss_fn, cfg).grads])
    params = list(gen.parameters())
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):  # derivatives along random directions v of θ2: ∇J·v against central differences
        direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
        v = torch.cat([d.reshape(-1) for d in direction])
        fd = directional_fd(
            lambda: naive_objective(net, gen, x, y, x_other, target_other, loss_fn, 0.5, 0.2), params, direction
        )
        assert abs(exact @ v - fd) < 1e-9 + 1e-6 * abs(fd), (exact @ v, fd)
        # the other task moves the look-ahead: without it the derivative is measurably different
        assert abs(plain @ v - fd) > 1e-3 * abs(fd)


def test_first_order_with_extra_inner_loss_is_close_to_exact():
    net, gen, x, y, x_other, target_other = setup(1)
    loss_fn = classification_loss("focal")
    extra = make_extra(net, x_other, target_other)
    exact = meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.05), extra_inner_loss=extra)
    approx = meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.05, order="first"), extra_inner_loss=extra)
    a = torch.cat([g.reshape(-1) for g in exact.grads])
    b = torch.cat([g.reshape(-1) for g in approx.grads])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
