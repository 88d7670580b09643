"""``outer_batch``: J(θ2) = L_pri(f(x_o; θ1⁺(θ2)), y_o) + λH with the look-ahead θ1⁺ on (x, y),
checked in float64 against central finite differences of the naive J, engine against engine, and
for the network's state. The fused form against the separate one is in ``test_fused.py``."""

import copy
import functools

import pytest
import torch

from maxl.core.losses import classification_loss
from maxl.meta import MetaConfig, meta_gradient

from tests.unit.meta.tiny import finite_difference_gradient, flat, naive_outer_objective, outer_batch, tiny_networks

ALPHA, LAM = 0.5, 0.2  # a large α makes the look-ahead's term count
ALL_ENGINES = {
    "func": MetaConfig(inner_lr=ALPHA, engine="func"),
    "higher": MetaConfig(inner_lr=ALPHA, engine="higher"),
    "jvp": MetaConfig(inner_lr=ALPHA, engine="jvp"),
    "first": MetaConfig(inner_lr=ALPHA, order="first"),
}


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@functools.cache
def finite_difference_meta_gradient():
    """float64 central differences, entry by entry of θ2, of the naive J on the outer batch."""
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal", gamma=2.0)
    objective = functools.partial(naive_outer_objective, net, gen, x, y, loss_fn, ALPHA, LAM, outer=outer_batch())
    return flat(finite_difference_gradient(objective, list(gen.parameters())))


@pytest.mark.parametrize("engine", ["func", "higher", "jvp"])
def test_outer_batch_meta_gradient_equals_finite_differences(engine):
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal", gamma=2.0)
    cfg = MetaConfig(inner_lr=ALPHA, engine=engine)
    exact = flat(meta_gradient(net, gen, x, y, loss_fn, cfg, outer_batch=outer_batch()).grads)
    fd = finite_difference_meta_gradient()
    assert relative(exact, fd) < 1e-6
    # the outer batch matters: the paper's J (outer loss on (x, y)) has a different gradient
    assert relative(flat(meta_gradient(net, gen, x, y, loss_fn, cfg).grads), fd) > 1e-2


@pytest.mark.parametrize("engine", ["higher", "jvp", "first"])
def test_engines_equal_func_with_outer_batch(engine):
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal")
    exact = meta_gradient(net, gen, x, y, loss_fn, ALL_ENGINES["func"], outer_batch=outer_batch())
    other = meta_gradient(net, gen, x, y, loss_fn, ALL_ENGINES[engine], outer_batch=outer_batch())
    if engine == "first":  # DARTS's central difference: O(ε²) away from the exact gradient
        assert relative(flat(other.grads), flat(exact.grads)) < 1e-4
    else:
        torch.testing.assert_close(flat(other.grads), flat(exact.grads), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(other.outer_loss, exact.outer_loss)


@pytest.mark.parametrize("engine", list(ALL_ENGINES))
def test_the_inner_batch_as_outer_batch_is_the_papers_objective(engine):
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal")
    paper = meta_gradient(net, gen, x, y, loss_fn, ALL_ENGINES[engine])
    same = meta_gradient(net, gen, x, y, loss_fn, ALL_ENGINES[engine], outer_batch=(x, y))
    assert all(torch.equal(a, b) for a, b in zip(paper.grads, same.grads))
    assert torch.equal(paper.outer_loss, same.outer_loss)


@pytest.mark.parametrize("engine", list(ALL_ENGINES))
def test_outer_batch_leaves_the_multitask_network_untouched(engine):
    net, gen, x, y = tiny_networks(torch.float32)
    net(x)  # non-default BatchNorm statistics
    state = copy.deepcopy(net.state_dict())
    result = meta_gradient(
        net, gen, x, y, classification_loss("focal"), ALL_ENGINES[engine], outer_batch=outer_batch(torch.float32)
    )
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed"
    assert all(p.grad is None for p in net.parameters())
    assert result.soft_labels.shape == (len(y), 6)  # the generator labels the inner batch


def test_a_malformed_outer_batch_is_refused():
    net, gen, x, y = tiny_networks()
    x_o, y_o = outer_batch()
    with pytest.raises(ValueError, match="outer_batch"):
        meta_gradient(net, gen, x, y, classification_loss("focal"), outer_batch=(x_o, y_o[:3]))
