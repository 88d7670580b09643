"""Tiny float64 networks, a batch, an outer batch, an "other task" loss, and the naive outer
objective with its finite-difference gradient, shared by the meta-gradient tests."""

import copy

import torch
from torch.func import functional_call

from maxl.core.losses import negative_entropy
from maxl.nn.backbones import ConvNet
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork

PSI = [2, 1, 3]  # auxiliary classes per primary class: K = sum(ψ) = 6


def tiny_networks(dtype=torch.float64, seed=0):
    """A multi-task network, a label generator, images ``[6, 1, 4, 4]`` and labels ``[6]``."""
    torch.manual_seed(seed)
    net = MultiTaskNetwork(ConvNet(1, (3,), (1,)), len(PSI), sum(PSI), hidden=5).to(dtype)
    gen = LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5).to(dtype)
    x = torch.randn(6, 1, 4, 4, dtype=dtype)
    y = torch.tensor([0, 1, 2, 0, 2, 1])
    return net, gen, x, y


#: the variants that claim an exact meta-gradient: the plain form of each engine, and the fused step
EXACT_VARIANTS = ["meta-func", "meta-higher", "meta-jvp", "fused-func", "fused-jvp"]


def exact_meta_result(variant, net, gen, x, y, loss_fn, cfg, outer=None, objective=None):
    """The :class:`maxl.meta.MetaResult` of ``variant`` (``"meta-<engine>"``: ``meta_gradient``;
    ``"fused-<engine>"``: ``fused_step`` on a copy of the network, which advances its BatchNorm
    statistics); ``cfg`` already names the engine; ``objective`` the terms of J (None: the paper's)."""
    from maxl.meta import fused_step, meta_gradient

    if variant.startswith("fused-"):
        return fused_step(copy.deepcopy(net), gen, x, y, loss_fn, cfg, outer_batch=outer, objective=objective).meta
    return meta_gradient(net, gen, x, y, loss_fn, cfg, outer_batch=outer, objective=objective)


def flat(tensors):
    """One vector of all the tensors' entries."""
    return torch.cat([t.reshape(-1) for t in tensors])


def other_task_loss(backbone, params, x_other, target_other):
    """A regression on other inputs through the shared backbone: L_x depends on θ1 only."""
    buffers = {n: b.clone() for n, b in backbone.named_buffers()}
    features = functional_call(backbone, {**params, **buffers}, (x_other,))
    return 0.7 * ((features - target_other) ** 2).mean()


def other_task(net, dtype=torch.float64, seed=0):
    """``extra_inner_loss`` of "another task": L_x(params) on 5 other images with 3 regression targets."""
    generator = torch.Generator().manual_seed(1000 + seed)
    x_other = torch.randn(5, 1, 4, 4, dtype=dtype, generator=generator)
    target_other = torch.randn(5, 3, dtype=dtype, generator=generator)

    def extra(params):
        backbone = {n.removeprefix("backbone."): p for n, p in params.items() if n.startswith("backbone.")}
        return other_task_loss(net.backbone, backbone, x_other, target_other)

    return extra


def outer_batch(dtype=torch.float64):
    """Another batch ``(x_o [4, 1, 4, 4], y_o [4])`` for the outer loss (a held-out meta split)."""
    generator = torch.Generator().manual_seed(7)
    return torch.randn(4, 1, 4, 4, dtype=dtype, generator=generator), torch.tensor([2, 0, 1, 1])


def naive_outer_objective(net, gen, x, y, loss_fn, alpha, lam, steps=1, outer=None):
    """J(θ2) = L_pri(f(x_o; θ1^(k)), y_o) + λ H by plain module calls, independently of maxl.meta:
    a deep copy of the network takes k = ``steps`` plain SGD steps in place on (x, y) with the
    generator's labels of x, then the primary loss is taken on ``outer`` = (x_o, y_o) (default (x, y))."""
    x_o, y_o = (x, y) if outer is None else outer
    soft = gen(x, y)
    look = copy.deepcopy(net)
    for _ in range(steps):
        pri, aux = look(x)
        grads = torch.autograd.grad(loss_fn(pri, y) + loss_fn(aux, soft), list(look.parameters()))
        with torch.no_grad():
            for p, g in zip(look.parameters(), grads):
                p -= alpha * g
    return loss_fn(look(x_o)[0], y_o) + lam * negative_entropy(soft)


def finite_difference_gradient(f, params, h=1e-6):
    """Central differences (f(θ + h e_i) − f(θ − h e_i)) / 2h, one entry of one parameter at a time."""
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
