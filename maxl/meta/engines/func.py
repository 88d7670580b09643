"""The ``"func"`` engine (default): the exact meta-gradient by double backward through torch.func.

The look-ahead is written out and differentiated as it stands:

    g    = ∇θ1 [L_pri(f(x; θ1), y) + L_aux(f(x; θ1), g(x, y; θ2)) (+ L_x(θ1))]   (create_graph)
    θ1⁺  = θ1 − α g                                                              (a function of θ2)
    J    = L_pri(f(x; θ1⁺), y) + λ H

so ∇θ2 J contains the mixed second derivative −α ∂²L_aux/∂θ2∂θ1 · ∇θ1⁺ L_pri(θ1⁺) (Liu, Davison,
Johns, NeurIPS 2019, arXiv:1901.08933, Eq. 3–4, Algorithm 1). Both forward passes run through
the network's own ``forward`` with ``torch.func.functional_call``. Needs the double backward of
every op of the network; :mod:`maxl.meta.graph_check` finds the ops that have none.

The fused form takes g from the real multi-task forward/backward (``create_graph=True``) and
serves the multi-task update with the same g.
"""

from __future__ import annotations

import torch

from maxl.meta.engine import Lookahead, MetaEngine, SharedStep
from maxl.meta.lookahead import buffer_copies, functional_forward, multitask_gradient, multitask_loss, trainable
from maxl.meta.registry import register_engine

__all__ = ["FuncEngine"]


class FuncEngine(MetaEngine):
    """Exact second-order meta-gradient by ``torch.autograd.grad(create_graph=True)``.

    References:
        Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
        NeurIPS 2019, arXiv:1901.08933, Eq. 3–4.
    """

    name = "func"
    order = "second"
    needs_double_backward = True

    def gradient(self, net, generator, x, y, loss_fn, config, extra_inner_loss=None) -> Lookahead:
        names, params = trainable(net)
        call = functional_forward(net, names, buffer_copies(net), x)
        soft = generator(x, y)  # [B, K], a function of θ2
        inner = multitask_loss(call(params), y, soft, loss_fn)
        if extra_inner_loss is not None:
            inner = inner + extra_inner_loss(dict(zip(names, params)))
        grads = torch.autograd.grad(inner, params, create_graph=True)
        # θ1⁺ = θ1 − α ∇θ1 (L_pri + L_aux [+ L_x]), differentiable in θ2
        fast = [p - config.inner_lr * g for p, g in zip(params, grads)]
        outer = loss_fn(call(fast)[0], y)  # L_pri(f(x; θ1⁺), y)
        return Lookahead(soft=soft, outer=outer, objective=outer)

    def fused(self, net, generator, x, y, loss_fn, config, extra_inner_loss=None) -> SharedStep:
        names, params = trainable(net)
        soft = generator(x, y)  # [B, K], a function of θ2; the multi-task targets and J's labels
        # g with its graph to θ2 (the targets are not detached): the look-ahead's step
        primary_logits, primary_loss, aux_loss, grads = multitask_gradient(
            net, names, params, x, y, soft, loss_fn, extra_inner_loss, create_graph=True)
        call = functional_forward(net, names, buffer_copies(net), x)  # own statistics for the look-ahead
        fast = [p - config.inner_lr * g for p, g in zip(params, grads)]  # θ1⁺, differentiable in θ2
        outer = loss_fn(call(fast)[0], y)
        return SharedStep(soft=soft, outer=outer, objective=outer, net_grads=list(grads), primary_loss=primary_loss,
                          aux_loss=aux_loss, primary_logits=primary_logits)


FUNC = register_engine(FuncEngine())
