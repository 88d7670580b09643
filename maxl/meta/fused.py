"""The fused MAXL step: one forward/backward of the multi-task network serves both its own
update and the generator's look-ahead.

A training step of the ``per-step`` schedule needs, on one batch and from the same θ1, θ2,

* the multi-task gradient ∇θ1 [L_pri(f(x; θ1), y) + L_aux(f(x; θ1), g(x, y; θ2))], and
* the look-ahead θ1⁺ = θ1 − α ∇θ1 [L_pri + L_aux] of the meta-gradient ∇θ2 J
  (Liu, Davison, Johns, NeurIPS 2019, arXiv:1901.08933, Eq. 3–4, Algorithm 1).

They contain the same gradient, so computing it once saves a forward and a backward of the
multi-task network (and a forward of the generator, whose labels serve both). For the
``"func"`` engine that one backward is taken with ``create_graph=True``; the ``"jvp"``
engine and the first-order variant need only a plain backward (see :mod:`maxl.meta.gradient`).
The result equals :func:`maxl.meta.gradient.meta_gradient` followed by a plain multi-task backward
on the generator's labels, as the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from maxl.core.losses import negative_entropy
from maxl.meta.gradient import (LossFn, MetaConfig, MetaResult, _buffer_copies, _fd_surrogate, _jvp_surrogate,
                   _lookahead_direction, _trainable)

__all__ = ["FusedResult", "fused_step", "FUSED_ENGINES"]

FUSED_ENGINES = ("func", "jvp")  # "higher" takes its own look-ahead step and cannot share one


@dataclass
class FusedResult:
    """Output of :func:`fused_step`.

    Attributes:
        meta: the generator's meta-gradient and statistics, as from
            :func:`maxl.meta.gradient.meta_gradient`.
        net_grads: ∇θ1 (L_pri + L_aux), detached, one tensor per trainable parameter of the
            multi-task network (order of ``net.parameters()``).
        primary_loss: L_pri(f(x; θ1), y), detached scalar.
        aux_loss: L_aux(f(x; θ1), g(x, y; θ2)), detached scalar.
        primary_logits: f's primary logits at θ1, detached float ``[B, P]``.
    """

    meta: MetaResult
    net_grads: list[Tensor]
    primary_loss: Tensor
    aux_loss: Tensor
    primary_logits: Tensor


def fused_step(net: nn.Module, generator: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn,
               config: MetaConfig | None = None) -> FusedResult:
    """The multi-task gradient and the generator's meta-gradient from one shared
    forward/backward of the multi-task network.

    The multi-task forward runs on the real module in its current mode, so the BatchNorm
    running statistics advance exactly once, as in a plain multi-task step; the look-ahead
    passes run on copies of them. No parameter and no ``.grad`` of either network is
    changed: the caller applies ``net_grads`` and ``meta.grads`` with its optimisers.

    Args:
        net: the multi-task network; ``net(x)`` returns ``(primary [B, P], aux [B, K])``.
        generator: the label-generation network; ``generator(x, y)`` returns soft labels
            ``[B, K]``.
        x: images float ``[B, C, H, W]``.
        y: primary labels int64 ``[B]``.
        loss_fn: ``loss(logits, target) -> scalar`` for hard ``[B]`` and soft ``[B, K]``
            targets.
        config: :class:`maxl.meta.gradient.MetaConfig`; ``order="second"`` with engine ``"func"``
            or ``"jvp"``, or ``order="first"``.

    Returns:
        :class:`FusedResult`.

    Raises:
        ValueError: engine ``"higher"`` with ``order="second"`` (it cannot share the step).

    References:
        Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
        NeurIPS 2019, arXiv:1901.08933, Algorithm 1.
    """
    cfg = config or MetaConfig()
    if cfg.order == "second" and cfg.engine not in FUSED_ENGINES:
        raise ValueError(f"fused_step supports the engines {FUSED_ENGINES}, got {cfg.engine!r}; "
                         "use meta_gradient for 'higher'")
    double_backward = cfg.order == "second" and cfg.engine == "func"
    names, params = _trainable(net)
    gen_params = [p for p in generator.parameters() if p.requires_grad]

    soft = generator(x, y)  # [B, K], a function of θ2; the multi-task targets and J's labels
    primary_logits, aux_logits = net(x)  # the real forward: BatchNorm statistics advance once
    primary_loss = loss_fn(primary_logits, y)
    aux_loss = loss_fn(aux_logits, soft if double_backward else soft.detach())
    # g = ∇θ1 (L_pri + L_aux): the multi-task update and the look-ahead's step
    grads = torch.autograd.grad(primary_loss + aux_loss, params, create_graph=double_backward)

    buffers = _buffer_copies(net)  # the look-ahead passes get their own statistics

    def call(ps):
        return functional_call(net, ({**dict(zip(names, ps)), **buffers}), (x,))

    if double_backward:
        fast = [p - cfg.inner_lr * g for p, g in zip(params, grads)]  # θ1⁺, differentiable in θ2
        outer = loss_fn(call(fast)[0], y)
        objective = outer
    else:
        theta = [p.detach() for p in params]
        outer, v = _lookahead_direction(call, theta, grads, y, loss_fn, cfg)
        surrogate_fn = _fd_surrogate if cfg.order == "first" else _jvp_surrogate
        objective = surrogate_fn(call, theta, v, soft, loss_fn, cfg)
    neg_entropy = negative_entropy(soft)
    gen_grads = torch.autograd.grad(objective + cfg.entropy_weight * neg_entropy, gen_params)  # ∇θ2 J
    meta = MetaResult(grads=list(gen_grads), outer_loss=outer.detach(), neg_entropy=neg_entropy.detach(),
                      soft_labels=soft.detach())
    return FusedResult(meta=meta, net_grads=[g.detach() for g in grads], primary_loss=primary_loss.detach(),
                       aux_loss=aux_loss.detach(), primary_logits=primary_logits.detach())
