"""The ``"func"`` engine (default): the exact meta-gradient by double backward through torch.func.

The look-ahead is written out and differentiated as it stands:

    g    = ∇θ1 [L_pri(f(x; θ1), y) + L_aux(f(x; θ1), g(x, y; θ2)) (+ L_x(θ1))]   (create_graph)
    θ1⁺  = θ1 − α g                                                              (a function of θ2)
    J    = L_pri(f(x_o; θ1⁺), y_o) + λ H

so ∇θ2 J contains the mixed second derivative −α ∂²L_aux/∂θ2∂θ1 · ∇θ1⁺ L_pri(θ1⁺) (Liu, Davison,
Johns, NeurIPS 2019, arXiv:1901.08933, Eq. 3–4, Algorithm 1). With ``inner_steps`` = k the step
is repeated from θ1^(1) = θ1⁺ on the same batch and labels, each with ``create_graph=True``, and J
is taken at θ1^(k) (:func:`maxl.meta.lookahead.unroll`). The outer batch (x_o, y_o) is (x, y)
unless ``outer_batch`` is given. All forward passes run through the network's own ``forward``
with ``torch.func.functional_call``. Needs the double backward of every op of the network;
:mod:`maxl.meta.graph_check` finds the ops that have none.

The fused form takes the first step's g from the real multi-task forward/backward
(``create_graph=True``) and serves the multi-task update with the same g.
"""

from __future__ import annotations

from maxl.meta.engine import Lookahead, MetaEngine, SharedStep
from maxl.meta.lookahead import (
    buffer_copies,
    functional_forward,
    generated_targets,
    multitask_gradient,
    outer_pair,
    trainable,
    unroll,
)
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
    multi_step = True

    def gradient(self, net, generator, x, y, loss_fn, config, extra_inner_loss=None, outer_batch=None) -> Lookahead:
        names, params = trainable(net)
        x_o, y_o = outer_pair(x, y, outer_batch)
        buffers = buffer_copies(net)
        call = functional_forward(net, names, buffers, x)
        soft, target = generated_targets(generator, x, y)  # [B, K] each, functions of θ2
        # θ1^(k), k = inner_steps steps of θ1 − α ∇θ1 (L_pri + L_aux [+ L_x]) from θ1, differentiable in θ2
        fast = unroll(call, names, params, y, target, loss_fn, extra_inner_loss, config.inner_lr, config.inner_steps)
        outer = loss_fn(functional_forward(net, names, buffers, x_o)(fast)[0], y_o)  # L_pri(f(x_o; θ1^(k)), y_o)
        return Lookahead(soft=soft, target=target, outer=outer, objective=outer)

    def fused(self, net, generator, x, y, loss_fn, config, extra_inner_loss=None, outer_batch=None) -> SharedStep:
        names, params = trainable(net)
        x_o, y_o = outer_pair(x, y, outer_batch)
        soft, target = generated_targets(generator, x, y)  # [B, K]: J's labels and the multi-task targets
        # g with its graph to θ2 (the targets are not detached): the look-ahead's first step
        primary_logits, primary_loss, aux_loss, grads = multitask_gradient(
            net, names, params, x, y, target, loss_fn, extra_inner_loss, create_graph=True
        )
        buffers = buffer_copies(net)  # own statistics for the look-ahead
        call = functional_forward(net, names, buffers, x)
        fast = [p - config.inner_lr * g for p, g in zip(params, grads)]  # θ1^(1) = θ1 − α g, differentiable in θ2
        fast = unroll(call, names, fast, y, target, loss_fn, extra_inner_loss, config.inner_lr, config.inner_steps - 1)
        outer = loss_fn(functional_forward(net, names, buffers, x_o)(fast)[0], y_o)  # L_pri(f(x_o; θ1^(k)), y_o)
        return SharedStep(
            soft=soft,
            target=target,
            outer=outer,
            objective=outer,
            net_grads=list(grads),
            primary_loss=primary_loss,
            aux_loss=aux_loss,
            primary_logits=primary_logits,
        )


FUNC = register_engine(FuncEngine())
