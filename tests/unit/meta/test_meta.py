"""The generator's meta-gradient, checked against independent computations.

* float64 central finite differences of the outer objective J(θ2), where J is evaluated by
  a naive path: a deep copy of the multi-task network takes one plain SGD step in place;
* the `higher` and forward-mode (`jvp`) engines against the torch.func engine;
* the first-order (finite-difference Hessian-vector) variant against the exact one;
* the fused step (multi-task gradient and meta-gradient from one shared forward/backward)
  against the separate computations.
"""

import copy
import functools

import pytest
import torch

from maxl.nn.backbones import ConvNet
from maxl.meta import fused_step
from maxl.core.losses import classification_loss, negative_entropy
from maxl.meta import DoubleBackwardError, MetaConfig, meta_gradient
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork

PSI = [2, 1, 3]


def tiny_networks(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    net = MultiTaskNetwork(ConvNet(1, (3,), (1,)), len(PSI), sum(PSI), hidden=5).to(dtype)
    gen = LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5).to(dtype)
    x = torch.randn(6, 1, 4, 4, dtype=dtype)
    y = torch.tensor([0, 1, 2, 0, 2, 1])
    return net, gen, x, y


def naive_outer_objective(net, gen, x, y, loss_fn, alpha, lam):
    """J(θ2) = L_pri(f(x; θ1 − α∇θ1 L_train)) + λ H, by plain module calls and an in-place step."""
    soft = gen(x, y)
    look = copy.deepcopy(net)
    pri, aux = look(x)
    grads = torch.autograd.grad(loss_fn(pri, y) + loss_fn(aux, soft), list(look.parameters()))
    with torch.no_grad():
        for p, g in zip(look.parameters(), grads):
            p -= alpha * g
    return loss_fn(look(x)[0], y) + lam * negative_entropy(soft)


def finite_difference_gradient(f, params, h=1e-6):
    grads = []
    for p in params:
        g = torch.zeros_like(p)
        flat, gflat = p.data.view(-1), g.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + h
            plus = f().item()
            flat[i] = old - h
            minus = f().item()
            flat[i] = old
            gflat[i] = (plus - minus) / (2 * h)
        grads.append(g)
    return grads


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def exact_meta_grads(variant, net, gen, x, y, loss_fn, cfg):
    """∇θ2 J by one of the variants that claim to be exact: ``meta_gradient`` with an engine,
    or ``fused_step`` (on a copy of the network: it advances the BatchNorm statistics)."""
    kind, engine = variant.split("-")
    cfg = MetaConfig(inner_lr=cfg.inner_lr, entropy_weight=cfg.entropy_weight, engine=engine)
    if kind == "fused":
        return fused_step(copy.deepcopy(net), gen, x, y, loss_fn, cfg).meta.grads
    return meta_gradient(net, gen, x, y, loss_fn, cfg).grads


EXACT_VARIANTS = ["meta-func", "meta-higher", "meta-jvp", "fused-func", "fused-jvp"]


@functools.cache
def finite_difference_meta_gradient(loss):
    """float64 central differences of the naive J(θ2), α = 0.5, λ = 0.2 (computed once per loss)."""
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss(loss, gamma=2.0)
    with torch.no_grad():
        return flat(finite_difference_gradient(
            lambda: torch.enable_grad().__enter__() or naive_outer_objective(net, gen, x, y, loss_fn, 0.5, 0.2),
            list(gen.parameters())))


@pytest.mark.parametrize("variant", EXACT_VARIANTS)
@pytest.mark.parametrize("loss", ["focal", "ce"])
def test_second_order_meta_gradient_equals_finite_differences(loss, variant):
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss(loss, gamma=2.0)
    cfg = MetaConfig(inner_lr=0.5, entropy_weight=0.2)  # a large α makes the 2nd-order term count
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


@pytest.mark.parametrize("cfg", [MetaConfig(engine="func"), MetaConfig(engine="higher"), MetaConfig(engine="jvp"),
                                 MetaConfig(order="first")], ids=["func", "higher", "jvp", "first"])
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
    for (name, p), g in zip(gen.named_parameters(), result.grads):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, f"generator {name}"
    pri, aux = net(x)
    (loss_fn(pri, y) + loss_fn(aux, result.soft_labels)).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"net {name}"


def test_meta_config_rejects_unknown_settings():
    with pytest.raises(ValueError, match="engine"):
        MetaConfig(engine="jax")
    with pytest.raises(ValueError, match="order"):
        MetaConfig(order="third")
    with pytest.raises(ValueError, match="inner_lr"):
        MetaConfig(inner_lr=0)


@pytest.mark.parametrize("cfg", [MetaConfig(inner_lr=0.3, engine="func"), MetaConfig(inner_lr=0.3, engine="jvp"),
                                 MetaConfig(inner_lr=0.3, order="first")], ids=["func", "jvp", "first"])
def test_fused_step_equals_meta_gradient_then_multitask_backward(cfg):
    net, gen, x, y = tiny_networks()
    loss_fn = classification_loss("focal")
    net(x)  # non-default BatchNorm statistics
    before = copy.deepcopy(net.state_dict())
    separate = meta_gradient(net, gen, x, y, loss_fn, cfg)
    plain = copy.deepcopy(net)  # the plain multi-task step on the generator's labels
    pri, aux = plain(x)
    (loss_fn(pri, y) + loss_fn(aux, separate.soft_labels)).backward()

    fused = fused_step(net, gen, x, y, loss_fn, cfg)
    torch.testing.assert_close(flat(fused.meta.grads), flat(separate.grads), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(flat(fused.net_grads), flat(p.grad for p in plain.parameters()),
                               rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(fused.meta.outer_loss, separate.outer_loss)
    torch.testing.assert_close(fused.meta.soft_labels, separate.soft_labels)
    torch.testing.assert_close(fused.primary_loss, loss_fn(pri, y).detach())
    # parameters and .grad untouched; BatchNorm statistics advanced exactly once, as by `plain`
    for (k, v), (_, w) in zip(net.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(v, w), f"{k}: not the statistics of one multi-task forward"
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items() if "running" in k)
    assert all(p.grad is None for p in list(net.parameters()) + list(gen.parameters()))


def test_fused_step_rejects_the_higher_engine():
    net, gen, x, y = tiny_networks()
    with pytest.raises(ValueError, match="higher"):
        fused_step(net, gen, x, y, classification_loss("focal"), MetaConfig(engine="higher"))


class _OnceDifferentiableReLU(torch.autograd.Function):
    """A hand-written op whose backward autograd cannot differentiate (like many custom kernels)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0)


class _BackboneWithOp(torch.nn.Module):
    """conv → an op without a usable double backward → mean over the image: features [B, 4]."""

    def __init__(self, op):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.op, self.out_features = op, 4

    def forward(self, x):
        h = self.conv(x)  # [B, 4, H, W]
        if self.op == "once_differentiable":
            return _OnceDifferentiableReLU.apply(h).mean(dim=(2, 3))
        # max over each image row with segment_reduce, whose double backward is not implemented
        rows = h.permute(3, 0, 1, 2).reshape(h.shape[3], -1)  # [W, B*4*H]: a segment per row
        pooled = torch.segment_reduce(rows.T.reshape(-1), "max", lengths=torch.full((rows.shape[1],), h.shape[3]))
        return pooled.view(h.shape[0], 4, h.shape[2]).mean(dim=2)


@pytest.mark.parametrize("op", ["once_differentiable", "segment_reduce"])
@pytest.mark.parametrize("engine", ["func", "higher"])
def test_op_without_double_backward_gives_a_clear_error(op, engine):
    torch.manual_seed(0)
    net = MultiTaskNetwork(_BackboneWithOp(op), len(PSI), sum(PSI), hidden=5)
    gen = LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5)
    x, y = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 2, 1])
    loss = classification_loss("focal")
    if op == "once_differentiable":  # autograd alone would silently drop the paths through it
        with pytest.raises(DoubleBackwardError, match="cannot differentiate again.*--meta-order first"):
            meta_gradient(net, gen, x, y, loss, MetaConfig(engine=engine))
    else:  # autograd's own error, which names the op, with the fix added
        with pytest.raises(DoubleBackwardError, match=r"derivative for aten::_segment_reduce_backward is not "
                                                       r"implemented.*MetaConfig\(order='first'\)"):
            meta_gradient(net, gen, x, y, loss, MetaConfig(engine=engine))
    # the first-order variant needs no double backward
    result = meta_gradient(net, gen, x, y, loss, MetaConfig(order="first"))
    assert all(torch.isfinite(g).all() for g in result.grads)
