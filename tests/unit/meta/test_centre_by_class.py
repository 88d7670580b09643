"""The class-centred look-ahead push (``ObjectiveConfig.centre_by_class``, the registered term
``"centre-by-class"``), every engine, against a
naive computation: the look-ahead by a deep copy of the network stepping in place, ∂L/∂ŷ by
autograd on a leaf label tensor, the class means removed by a loop."""

import copy

import pytest
import torch

from maxl.core.losses import classification_loss, negative_entropy
from maxl.meta import MetaConfig, ObjectiveConfig, meta_gradient
from maxl.meta.objective import class_means

from tests.unit.meta.tiny import EXACT_VARIANTS, exact_meta_result, flat, outer_batch, tiny_networks

CENTRED = ObjectiveConfig(centre_by_class=True)  # λ = 0.2


def naive_centred_gradient(net, gen, x, y, loss_fn, alpha, lam, outer=None):
    x_o, y_o = (x, y) if outer is None else outer
    soft = gen(x, y)
    leaf = soft.detach().requires_grad_()
    look = copy.deepcopy(net)
    pri, aux = look(x)
    grads = torch.autograd.grad(loss_fn(pri, y) + loss_fn(aux, leaf), list(look.parameters()), create_graph=True)
    fast = {n: p - alpha * g for (n, p), g in zip(look.named_parameters(), grads)}
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    outer_loss = loss_fn(torch.func.functional_call(look, {**fast, **buffers}, (x_o,))[0], y_o)
    (push,) = torch.autograd.grad(outer_loss, leaf)
    centred = push.clone()
    for k in y.unique():
        centred[y == k] = push[y == k] - push[y == k].mean(0)
    params = list(gen.parameters())
    look_part = torch.autograd.grad(soft, params, grad_outputs=centred)
    entropy = torch.autograd.grad(lam * negative_entropy(gen(x, y)), params)
    return [a + b for a, b in zip(look_part, entropy)]


def test_centre_by_class_removes_each_class_mean():
    push = torch.randn(7, 4, dtype=torch.float64)
    y = torch.tensor([2, 0, 2, 2, 0, 5, 2])
    got = push - class_means(push, y)
    for k in (0, 2, 5):
        torch.testing.assert_close(got[y == k], push[y == k] - push[y == k].mean(0))
    assert got[y == 5].abs().max() == 0  # a class with one image has nothing left


@pytest.mark.parametrize("variant", EXACT_VARIANTS)
@pytest.mark.parametrize("with_outer", [False, True])
def test_centred_meta_gradient_equals_the_naive_computation(variant, with_outer):
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal", gamma=2.0)
    outer = outer_batch() if with_outer else None
    kind, engine = variant.split("-")
    cfg = MetaConfig(inner_lr=0.5, engine=engine)
    objective = ObjectiveConfig(centre_by_class=True, record_parts=kind == "meta")
    got = exact_meta_result(variant, net, gen, x, y, loss_fn, cfg, outer, objective).grads
    want = naive_centred_gradient(net, gen, x, y, loss_fn, 0.5, 0.2, outer)
    rel = (flat(got) - flat(want)).norm() / flat(want).norm()
    assert rel < 1e-9, f"relative error {rel:.2e}"
    plain = meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.5, engine=engine), outer_batch=outer).grads
    assert (flat(plain) - flat(got)).norm() > 1e-3 * flat(plain).norm()  # the centring changes the gradient


def test_the_first_order_engine_approximates_the_centred_meta_gradient():
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("ce")
    exact = meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.01), objective=CENTRED).grads
    first = meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.01, order="first"), objective=CENTRED).grads
    assert (flat(first) - flat(exact)).norm() / flat(exact).norm() < 1e-2


def test_identical_images_of_a_class_leave_only_the_entropy_term():
    net, gen, x, y = tiny_networks()
    x = x[:3][y]  # every image of class k is the same image
    loss_fn = classification_loss("ce")
    got = meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.5), objective=CENTRED).grads
    entropy = torch.autograd.grad(0.2 * negative_entropy(gen(x, y)), list(gen.parameters()))
    torch.testing.assert_close(flat(got), flat(entropy), rtol=1e-9, atol=1e-12)


def test_centring_refuses_per_image_weights():
    from tests.unit.meta.test_image_weights import weighted_networks

    net, gen, x, y = weighted_networks()
    with pytest.raises(ValueError, match="per-image weights"):
        meta_gradient(net, gen, x, y, classification_loss("ce"), MetaConfig(), objective=CENTRED)
