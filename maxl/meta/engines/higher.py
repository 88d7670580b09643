"""The ``"higher"`` engine: the exact meta-gradient through the ``higher`` package.

The same look-ahead as ``"func"``, θ1⁺ = θ1 − α ∇θ1 [L_pri + L_aux (+ L_x)], taken by
``higher``'s differentiable SGD on a functional copy of the network (Grefenstette et al.,
"Generalized Inner Loop Meta-Learning", arXiv:1910.01727), ``inner_steps`` times on the same batch
and labels, then J = L_pri(f(x_o; θ1^(k)), y_o) + λH on the outer batch (Liu, Davison, Johns,
NeurIPS 2019, arXiv:1901.08933, Eq. 3–4; Finn, Abbeel, Levine, "MAML", ICML 2017, for k > 1).
A second, independent implementation of the exact meta-gradient, kept to check ``"func"``
against.

It takes its own look-ahead step on its own copy of θ1, so it cannot share the multi-task
forward/backward: it has no fused form. ``higher`` is an optional dependency, imported on use.
"""

from __future__ import annotations

import torch

from maxl.meta.engine import Lookahead, MetaEngine
from maxl.meta.lookahead import generated_targets, multitask_loss, outer_pair
from maxl.meta.registry import register_engine

__all__ = ["HigherEngine"]


class HigherEngine(MetaEngine):
    """Exact second-order meta-gradient by ``higher.innerloop_ctx`` and its differentiable SGD.

    References:
        Grefenstette et al. "Generalized Inner Loop Meta-Learning". arXiv:1910.01727, 2019.
    """

    name = "higher"
    order = "second"
    needs_double_backward = True
    multi_step = True

    def gradient(self, net, generator, x, y, loss_fn, config, extra_inner_loss=None, outer_batch=None) -> Lookahead:
        import higher  # optional second engine

        x_o, y_o = outer_pair(x, y, outer_batch)
        names = [n for n, _ in net.named_parameters()]  # fast_params follow the order of net.parameters()
        saved = {n: b.detach().clone() for n, b in net.named_buffers()}
        inner_opt = torch.optim.SGD(net.parameters(), lr=config.inner_lr)
        try:
            with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=True) as (fnet, diffopt):
                soft, target = generated_targets(generator, x, y)  # [B, K] each, functions of θ2
                for _ in range(config.inner_steps):
                    inner = multitask_loss(fnet(x), y, target, loss_fn)
                    if extra_inner_loss is not None:
                        inner = inner + extra_inner_loss(dict(zip(names, fnet.fast_params)))
                    diffopt.step(inner)  # θ1^(j+1) = θ1^(j) − α ∇θ1 (L_pri + L_aux [+ L_x])
                primary_logits, _ = fnet(x_o)
                outer = loss_fn(primary_logits, y_o)  # L_pri(f(x_o; θ1^(k)), y_o)
                return Lookahead(soft=soft, target=target, outer=outer, objective=outer)
        finally:
            with torch.no_grad():  # whatever higher did to the buffers, the real net keeps its own
                for n, b in net.named_buffers():
                    b.copy_(saved[n])


HIGHER = register_engine(HigherEngine())
