"""The meta-gradient of the label-generation network (MAXL's outer step).

The multi-task network f(θ1) learns from primary and generated auxiliary labels; the
generator g(θ2) is trained so that this learning helps the primary task. With the
look-ahead (inner) step

    θ1⁺(θ2) = θ1 − α ∇θ1 [L_pri(f(x; θ1), y) + L_aux(f(x; θ1), g(x, y; θ2))]

the generator minimises the outer objective

    J(θ2) = L_pri(f(x; θ1⁺(θ2)), y) + λ Σ_k ȳ_k log ȳ_k,   ȳ = mean_b g(x_b, y_b; θ2)

(Liu, Davison, Johns, NeurIPS 2019, arXiv:1901.08933, Eq. 3–4 and Algorithm 1). Its
gradient passes through the look-ahead, so it contains the mixed second derivative
∂²L_aux/∂θ1∂θ2: the *second-order meta-gradient*.

Why the auxiliary loss is not part of J: the generator could lower L_aux trivially by
emitting labels that the multi-task network already predicts (or that are easy to
predict), which teaches nothing. J only rewards labels through the primary loss after a
step of learning from them, so the generator serves the primary task alone; the entropy
term λH keeps it from collapsing onto a few auxiliary classes.

Engines, all computing ∇θ2 J for the same J through the network's own ``forward``:

* ``"func"`` (default): ``torch.func.functional_call`` with the look-ahead parameters and
  ``torch.autograd.grad(create_graph=True)``.
* ``"higher"``: the same step through the ``higher`` package's differentiable SGD.
* ``"jvp"``: no double backward. With v = ∇θ1⁺ L_pri(θ1⁺) (a plain backward at the
  look-ahead point) the mixed term is
  ∂/∂θ2 ⟨∇θ1 L_aux(θ1, g(θ2)), v⟩ = ∂/∂θ2 ⟨∇z L_aux(z, g(θ2)), J_aux v⟩, where z are the
  auxiliary logits and J_aux v their Jacobian-vector product along v, one forward-mode pass
  (``torch.autograd.forward_ad``). Exact like ``"func"``, fewer FLOPs and less memory: the
  create_graph backward keeps every activation of the inner step alive, and PyTorch's
  double backward of a convolution runs two convolutions where one would do. Needs
  forward-mode AD formulas for every op of the network (all of torch.nn's usual layers
  have them).
* ``order="first"``: the DARTS-style finite-difference approximation of the second-order
  term (Liu, Simonyan, Yang, "DARTS", ICLR 2019, Eq. 7–8): with d = ∇θ1⁺ L_pri(θ1⁺) and
  ε = ε₀/‖d‖, ∇θ2 J ≈ −α [∇θ2 L_aux(θ1+εd) − ∇θ2 L_aux(θ1−εd)] / (2ε) + λ∇θ2 H. No
  double backward is needed, so it works with every op.

The look-ahead never changes the real network: it runs on copies of the BatchNorm running
statistics, and no ``.grad`` of θ1 is touched.

Other auxiliary tasks trained on the same network (rotation, colourisation, ... from
:mod:`auxtasks`) also move θ1 in the real step. ``extra_inner_loss`` adds their loss L_x(θ1)
to the look-ahead, θ1⁺ = θ1 − α ∇θ1 (L_pri + L_aux + L_x), so that θ1⁺ is where the real step
goes. L_x does not depend on θ2: it shifts the point at which L_pri(θ1⁺) is differentiated
but adds no mixed derivative of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn
from torch.func import functional_call

from maxl.core.losses import negative_entropy

__all__ = ["MetaConfig", "MetaResult", "meta_gradient", "DoubleBackwardError", "ENGINES", "ORDERS"]

ENGINES = ("func", "higher", "jvp")
ORDERS = ("second", "first")

LossFn = Callable[[Tensor, Tensor], Tensor]
ExtraInnerLoss = Callable[[dict[str, Tensor]], Tensor]

_FIRST_ORDER_HINT = (
    "use the first-order variant, which needs no double backward: --meta-order first on the "
    "command line, MetaConfig(order='first') in code"
)


class DoubleBackwardError(RuntimeError):
    """The exact (second-order) meta-gradient needs the backward of every op of the
    multi-task network to be differentiable itself, and one is not."""


def _check_double_backward(outer: Tensor) -> None:
    """Raise :class:`DoubleBackwardError` if the graph of the outer loss holds an error node.

    A custom ``autograd.Function`` marked ``@once_differentiable`` (common in hand-written
    kernels) returns a gradient whose own graph ends in such a node, cut off from θ2:
    autograd never visits it and the meta-gradient silently loses every path through that
    op (the failure the MAXL reference had before 2019-01-29, from another cause). A walk
    over the graph (about 500 nodes for VGG-16 with both heads, ~2 ms) finds it. Ops whose
    double backward is "not implemented" need no walk: autograd raises when it reaches
    them, naming the op, and :func:`meta_gradient` adds the fix to that message.
    """
    seen, stack = set(), [outer.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn.name() == "torch::autograd::Error":
            raise DoubleBackwardError(
                "the exact second-order meta-gradient cannot be computed: an op of the multi-task "
                "network has a backward that autograd cannot differentiate again (a custom "
                "autograd.Function marked @once_differentiable), so the meta-gradient would silently "
                f"lose every path through that op; {_FIRST_ORDER_HINT}"
            )
        stack.extend(f for f, _ in fn.next_functions)


@dataclass
class MetaConfig:
    """Settings of the generator's meta step.

    Attributes:
        inner_lr: α, the look-ahead step size (the paper: equal to the multi-task lr, 0.01).
        entropy_weight: λ of the negative-entropy term (0.2 in the paper).
        order: ``"second"`` (exact) or ``"first"`` (finite-difference approximation).
        engine: ``"func"`` (torch.func, double backward), ``"higher"`` or ``"jvp"``
            (forward-mode, no double backward); used by ``order="second"``.
        fd_epsilon: ε₀ of the first-order variant, ε = ε₀/‖d‖ (0.01 as in DARTS).
    """

    inner_lr: float = 0.01
    entropy_weight: float = 0.2
    order: str = "second"
    engine: str = "func"
    fd_epsilon: float = 0.01

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"unknown meta order {self.order!r}; expected one of {ORDERS}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown meta engine {self.engine!r}; expected one of {ENGINES}")
        if self.inner_lr <= 0:
            raise ValueError(f"inner_lr (look-ahead step α) must be > 0, got {self.inner_lr}")


@dataclass
class MetaResult:
    """Output of :func:`meta_gradient`.

    Attributes:
        grads: ∇θ2 J, one tensor per parameter of the generator (same order as
            ``generator.parameters()``).
        outer_loss: L_pri(f(x; θ1⁺), y) (for ``order="first"``: at the virtual step θ1′ = θ1⁺).
        neg_entropy: H = Σ ȳ log ȳ of the batch.
        soft_labels: the generated labels, detached, float ``[B, sum(ψ)]``.
    """

    grads: list[Tensor]
    outer_loss: Tensor
    neg_entropy: Tensor
    soft_labels: Tensor


def multitask_loss(outputs: tuple[Tensor, Tensor], y: Tensor, soft: Tensor, loss_fn: LossFn) -> Tensor:
    """L_pri + L_aux of the multi-task network's ``(primary_logits, aux_logits)``."""
    primary_logits, aux_logits = outputs
    return loss_fn(primary_logits, y) + loss_fn(aux_logits, soft)


def _buffer_copies(net: nn.Module) -> dict[str, Tensor]:
    # functional_call in train mode writes BatchNorm running statistics into the buffers it
    # is given: hand it copies so that the real network's statistics stay as they were.
    return {name: b.clone() for name, b in net.named_buffers()}


def _trainable(net: nn.Module) -> tuple[list[str], list[Tensor]]:
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def _second_order_func(net, generator, x, y, loss_fn, cfg: MetaConfig, extra=None):
    names, params = _trainable(net)
    buffers = _buffer_copies(net)
    soft = generator(x, y)  # [B, K], a function of θ2
    outputs = functional_call(net, ({**dict(zip(names, params)), **buffers}), (x,))
    inner = multitask_loss(outputs, y, soft, loss_fn)
    if extra is not None:
        inner = inner + extra(dict(zip(names, params)))
    grads = torch.autograd.grad(inner, params, create_graph=True)
    # θ1⁺ = θ1 − α ∇θ1 (L_pri + L_aux), differentiable in θ2
    fast = {n: p - cfg.inner_lr * g for n, p, g in zip(names, params, grads)}
    primary_logits, _ = functional_call(net, ({**fast, **buffers}), (x,))
    return soft, loss_fn(primary_logits, y)


def _second_order_higher(net, generator, x, y, loss_fn, cfg: MetaConfig, extra=None):
    import higher  # optional second engine

    saved = {n: b.detach().clone() for n, b in net.named_buffers()}
    inner_opt = torch.optim.SGD(net.parameters(), lr=cfg.inner_lr)
    try:
        with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=True) as (fnet, diffopt):
            soft = generator(x, y)
            inner = multitask_loss(fnet(x), y, soft, loss_fn)
            if extra is not None:  # fast_params follow the order of net.parameters()
                inner = inner + extra(dict(zip([n for n, _ in net.named_parameters()], fnet.fast_params)))
            diffopt.step(inner)  # θ1⁺
            primary_logits, _ = fnet(x)
            return soft, loss_fn(primary_logits, y)
    finally:
        with torch.no_grad():  # whatever higher did to the buffers, the real net keeps its own
            for n, b in net.named_buffers():
                b.copy_(saved[n])


def _lookahead_direction(call, theta, inner_grads, y, loss_fn, cfg: MetaConfig):
    """L_pri at θ1⁺ = θ1 − α g and v = ∇θ1⁺ L_pri(θ1⁺) (zero for the auxiliary head), both
    detached from θ2: the first-order and the ``"jvp"`` paths need no graph through g."""
    with torch.enable_grad():
        fast = [(t - cfg.inner_lr * gi).requires_grad_() for t, gi in zip(theta, inner_grads)]  # θ1⁺
        outer = loss_fn(call(fast)[0], y)
        v = torch.autograd.grad(outer, fast, allow_unused=True)
    return outer.detach(), [torch.zeros_like(t) if vi is None else vi for t, vi in zip(theta, v)]


def _fd_surrogate(call, theta, v, soft, loss_fn, cfg: MetaConfig) -> Tensor:
    """DARTS's central difference: ∇θ2 of the returned scalar is
    −α [∇θ2 L_aux(θ1+εv) − ∇θ2 L_aux(θ1−εv)] / (2ε), ε = ε₀/‖v‖."""
    norm = torch.sqrt(sum((vi * vi).sum() for vi in v))
    eps = cfg.fd_epsilon / norm.clamp_min(1e-12)
    with torch.no_grad():  # the network's forward does not depend on θ2: no graph needed
        aux_plus = call([t + eps * vi for t, vi in zip(theta, v)])[1]
        aux_minus = call([t - eps * vi for t, vi in zip(theta, v)])[1]
    return -cfg.inner_lr / (2 * eps) * (loss_fn(aux_plus, soft) - loss_fn(aux_minus, soft))


def _jvp_surrogate(call, theta, v, soft, loss_fn, cfg: MetaConfig) -> Tensor:
    """Exact: ∇θ2 of the returned scalar is −α ∂/∂θ2 ⟨∇z L_aux(z, g(θ2)), J_aux v⟩, the
    look-ahead's contribution to ∇θ2 L_pri(θ1⁺) (θ1⁺ depends on θ2 only through L_aux)."""
    with fwAD.dual_level(), torch.no_grad():
        aux = call([fwAD.make_dual(t, vi) for t, vi in zip(theta, v)])[1]
        z, u = fwAD.unpack_dual(aux)  # z = f_aux(x; θ1) [B, K], u = J_aux v [B, K]
    if u is None:  # v never reaches the auxiliary logits (e.g. nothing shared)
        u = torch.zeros_like(z)
    z = z.detach().requires_grad_()
    with torch.enable_grad():
        (grad_z,) = torch.autograd.grad(loss_fn(z, soft), z, create_graph=True)  # a function of θ2
    return -cfg.inner_lr * (grad_z * u).sum()


def _detached_lookahead(net, generator, x, y, loss_fn, cfg: MetaConfig, surrogate_fn, extra=None):
    """The look-ahead without a graph through the inner gradient; ``surrogate_fn`` turns the
    direction v into a scalar whose ∇θ2 is the look-ahead's term of ∇θ2 J."""
    names, params = _trainable(net)
    theta = [p.detach() for p in params]
    buffers = _buffer_copies(net)

    def call(ps):
        return functional_call(net, ({**dict(zip(names, ps)), **buffers}), (x,))

    soft = generator(x, y)
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in theta]
        inner = multitask_loss(call(leaves), y, soft.detach(), loss_fn)
        if extra is not None:
            inner = inner + extra(dict(zip(names, leaves)))
        g = torch.autograd.grad(inner, leaves)
    outer, v = _lookahead_direction(call, theta, g, y, loss_fn, cfg)  # v: the DARTS direction d
    return soft, outer, surrogate_fn(call, theta, v, soft, loss_fn, cfg)


def _first_order(net, generator, x, y, loss_fn, cfg: MetaConfig, extra=None):
    return _detached_lookahead(net, generator, x, y, loss_fn, cfg, _fd_surrogate, extra)


def _second_order_jvp(net, generator, x, y, loss_fn, cfg: MetaConfig, extra=None):
    return _detached_lookahead(net, generator, x, y, loss_fn, cfg, _jvp_surrogate, extra)


def meta_gradient(net: nn.Module, generator: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn,
                  config: MetaConfig | None = None, check_graph: bool = True, *,
                  extra_inner_loss: ExtraInnerLoss | None = None) -> MetaResult:
    """Compute the generator's meta-gradient ∇θ2 J on one batch (see the module docstring).

    Neither network's parameters, ``.grad`` or BatchNorm running statistics of the
    multi-task network are changed; the caller applies ``grads`` with its optimiser.

    Args:
        net: the multi-task network; ``net(x)`` returns ``(primary [B, P], aux [B, K])``.
        generator: the label-generation network; ``generator(x, y)`` returns soft labels
            ``[B, K]``.
        x: images float ``[B, C, H, W]``.
        y: primary labels int64 ``[B]``.
        loss_fn: ``loss(logits, target) -> scalar`` for hard ``[B]`` and soft ``[B, K]``
            targets (e.g. :func:`maxl.core.losses.focal_loss`).
        config: :class:`MetaConfig`; defaults to the paper's settings.
        check_graph: for ``order="second"``, walk the autograd graph once for ops whose
            backward cannot be differentiated (a trainer does it on its first step only).
        extra_inner_loss: optional ``L_x(params) -> scalar``, called with the multi-task
            network's trainable parameters by name (``dict(net.named_parameters())``; the
            tensors may carry a graph and must be used instead of the module's own, e.g.
            through ``torch.func.functional_call``). It is added to the look-ahead loss:
            θ1⁺ = θ1 − α ∇θ1 (L_pri + L_aux + L_x). Used by :mod:`auxtasks` to include the
            other auxiliary tasks of the real step.

    Returns:
        :class:`MetaResult`.

    Raises:
        DoubleBackwardError: ``order="second"`` with engine ``"func"``/``"higher"`` and an op of
            the network has no double backward, or one that autograd cannot follow; the message
            suggests ``order="first"`` (``"jvp"`` needs no double backward either).
        RuntimeError: for engine ``"jvp"``, an op without a forward-mode derivative (use
            ``"func"`` then).
    """
    cfg = config or MetaConfig()
    gen_params = [p for p in generator.parameters() if p.requires_grad]
    if cfg.order == "first" or cfg.engine == "jvp":
        detached = _first_order if cfg.order == "first" else _second_order_jvp
        soft, outer, surrogate = detached(net, generator, x, y, loss_fn, cfg, extra_inner_loss)
        objective = surrogate
    else:
        engine = _second_order_func if cfg.engine == "func" else _second_order_higher
        try:
            soft, outer = engine(net, generator, x, y, loss_fn, cfg, extra_inner_loss)
        except (RuntimeError, NotImplementedError) as err:
            _raise_if_double_backward(err)
            raise
        if check_graph:
            _check_double_backward(outer)
        objective = outer
    neg_entropy = negative_entropy(soft)
    objective = objective + cfg.entropy_weight * neg_entropy  # J = L_pri(θ1⁺) + λ H
    try:
        grads = torch.autograd.grad(objective, gen_params)
    except (RuntimeError, NotImplementedError) as err:
        if cfg.order == "second":
            _raise_if_double_backward(err)
        raise
    return MetaResult(
        grads=list(grads),
        outer_loss=outer.detach(),
        neg_entropy=neg_entropy.detach(),
        soft_labels=soft.detach(),
    )


def _raise_if_double_backward(err: Exception) -> None:
    """Re-raise autograd's "not implemented" / "differentiate twice" errors with the fix."""
    text = str(err)
    if ("derivative for" in text and "not implemented" in text) or "differentiate twice" in text:
        raise DoubleBackwardError(
            f"the exact second-order meta-gradient needs the double backward of every op of the "
            f"multi-task network, and autograd has none for one of them ({text.strip()}); {_FIRST_ORDER_HINT}"
        ) from err
