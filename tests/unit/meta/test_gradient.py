"""The generator's meta-gradient, checked against independent computations.

* float64 central finite differences of the outer objective J(θ2), where J is evaluated by
  a naive path: a deep copy of the multi-task network takes one plain SGD step in place;
* the `higher` and forward-mode (`jvp`) engines against the torch.func engine;
* the first-order (finite-difference Hessian-vector) variant against the exact one;
* every engine leaves the multi-task network as it was.

The fused step is checked against the separate computations in ``test_fused.py``.
"""

import copy
import functools

import pytest
import torch

from maxl.core.losses import classification_loss, negative_entropy
from maxl.meta import MetaConfig, fused_step, meta_gradient
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork

from tests.unit.meta.tiny import (
    EXACT_VARIANTS,
    PSI,
    finite_difference_gradient,
    flat,
    naive_outer_objective,
    tiny_networks,
)


def exact_meta_grads(variant, net, gen, x, y, loss_fn, cfg):
    """∇θ2 J by one of the variants that claim to be exact: ``meta_gradient`` with an engine,
    or ``fused_step`` (on a copy of the network: it advances the BatchNorm statistics)."""
    kind, engine = variant.split("-")
    cfg = MetaConfig(inner_lr=cfg.inner_lr, engine=engine)  # the objective: the paper's J, λ = 0.2
    if kind == "fused":
        return fused_step(copy.deepcopy(net), gen, x, y, loss_fn, cfg).meta.grads
    return meta_gradient(net, gen, x, y, loss_fn, cfg).grads


@functools.cache
def finite_difference_meta_gradient(loss):
    """float64 central differences of the naive J(θ2), α = 0.5, λ = 0.2 (computed once per loss)."""
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss(loss, gamma=2.0)
    with torch.no_grad():
        return flat(
            finite_difference_gradient(
                lambda: torch.enable_grad().__enter__() or naive_outer_objective(net, gen, x, y, loss_fn, 0.5, 0.2),
                list(gen.parameters()),
            )
        )


@pytest.mark.parametrize("variant", EXACT_VARIANTS)
@pytest.mark.parametrize("loss", ["focal", "ce"])
def test_second_order_meta_gradient_equals_finite_differences(loss, variant):
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss(loss, gamma=2.0)
    cfg = MetaConfig(inner_lr=0.5)  # a large α makes the 2nd-order term count
    exact = flat(exact_meta_grads(variant, net, gen, x, y, loss_fn, cfg))
    fd = finite_difference_meta_gradient(loss)
    rel = (exact - fd).norm() / fd.norm()
    assert rel < 1e-5, f"relative error {rel:.2e}"
    # the second-order term is not negligible here: dropping it (entropy only) is far off
    ent_only = flat(torch.autograd.grad(0.2 * negative_entropy(gen(x, y)), list(gen.parameters())))
    assert (ent_only - fd).norm() / fd.norm() > 1e-2


@pytest.mark.parametrize("engine", ["higher", "jvp"])
def test_engines_equal_torch_func_engine(engine):
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal")
    a = meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.3, engine="func"))
    b = meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=0.3, engine=engine))
    torch.testing.assert_close(flat(a.grads), flat(b.grads), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.outer_loss, b.outer_loss)


@pytest.mark.parametrize("inner_lr", [0.01, 0.3])
def test_first_order_is_close_to_second_order(inner_lr):
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal")
    exact = flat(meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=inner_lr)).grads)
    approx = flat(meta_gradient(net, gen, x, y, loss_fn, MetaConfig(inner_lr=inner_lr, order="first")).grads)
    cosine = torch.nn.functional.cosine_similarity(exact, approx, dim=0)
    assert cosine > 0.99, f"cosine {cosine:.4f}"


@pytest.mark.parametrize(
    "cfg",
    [MetaConfig(engine="func"), MetaConfig(engine="higher"), MetaConfig(engine="jvp"), MetaConfig(order="first")],
    ids=["func", "higher", "jvp", "first"],
)
def test_meta_step_leaves_the_multitask_network_untouched(cfg):
    net, gen, x, y = tiny_networks(torch.float32)
    net(x)  # give the BatchNorm statistics a non-default value first
    state = copy.deepcopy(net.state_dict())
    meta_gradient(net, gen, x, y, classification_loss("focal"), cfg)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed"
    assert all(p.grad is None for p in net.parameters())


def test_every_parameter_of_both_networks_gets_a_finite_nonzero_gradient():
    torch.manual_seed(1)
    from maxl.nn.backbones import tiny_cnn

    net = MultiTaskNetwork(tiny_cnn(1), len(PSI), sum(PSI), hidden=16)
    gen = LabelGenerator(tiny_cnn(1), PSI, hidden=16)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, len(PSI), (16,))
    loss_fn = classification_loss("focal")
    result = meta_gradient(net, gen, x, y, loss_fn, MetaConfig())
    for (name, _), g in zip(gen.named_parameters(), result.grads):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, f"generator {name}"
    pri, aux = net(x)
    (loss_fn(pri, y) + loss_fn(aux, result.soft_labels)).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"net {name}"
