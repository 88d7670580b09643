"""The look-ahead without a graph through the inner gradient, shared by ``"jvp"`` and ``"first"``.

Only the look-ahead's inner gradient g = ∇θ1 [L_pri + L_aux(θ1, g(θ2))] depends on θ2, and
θ1⁺ = θ1 − α g enters J through L_pri(θ1⁺) on the outer batch (x_o, y_o). By the chain rule,
with v = ∇θ1⁺ L_pri(f(x_o; θ1⁺), y_o),

    ∇θ2 L_pri(θ1⁺) = −α ∂/∂θ2 ⟨∇θ1 L_aux(f(x; θ1), g(x, y; θ2)), v⟩

(Liu, Davison, Johns, NeurIPS 2019, arXiv:1901.08933, Eq. 4; L_x does not depend on θ2 and only
moves the point θ1⁺): v comes from the outer batch, the mixed term from the inner one. So g and
v can be computed by plain backward passes, detached from θ2, and the mixed term is left to a
*surrogate*: a scalar whose ∇θ2 is that term. ``"jvp"`` builds it exactly with one forward-mode
pass, ``"first"`` approximates it by DARTS's central difference.

This holds for one look-ahead step only: through k > 1 steps the adjoint of each step needs a
Hessian-vector product of the inner loss, which is what these engines avoid. They refuse
``inner_steps > 1`` (``multi_step`` is False); use ``"func"`` or ``"higher"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from maxl.meta.engine import ExtraInnerLoss, Lookahead, LossFn, MetaEngine, SharedStep
from maxl.meta.lookahead import (
    Forward,
    buffer_copies,
    functional_forward,
    generated_targets,
    lookahead_direction,
    multitask_gradient,
    multitask_loss,
    outer_pair,
    trainable,
)

__all__ = ["DetachedLookaheadEngine"]


class DetachedLookaheadEngine(MetaEngine):
    """An engine whose look-ahead needs only plain backward passes; subclasses give the surrogate.

    Both forms compute g and v = ∇θ1⁺ L_pri(θ1⁺) detached from θ2, then return
    ``objective = surrogate(...)``.
    """

    needs_double_backward = False
    uses_inner_gradient = True  # False: direction() does not read g, and the plain form skips its backward

    def surrogate(
        self, call: Forward, theta: list[Tensor], v: Sequence[Tensor], soft: Tensor, loss_fn: LossFn, config
    ) -> Tensor:
        """A scalar whose ∇θ2 is (or approximates) −α ∂/∂θ2 ⟨∇θ1 L_aux(θ1, g(θ2)), v⟩.

        Args:
            call: the functional forward of the multi-task network on the inner batch x (on
                copies of its buffers).
            theta: θ1, detached, one tensor per trainable parameter.
            v: ∇θ1⁺ L_pri(θ1⁺), same shapes.
            soft: the auxiliary targets g(x, y; θ2) with their graph, float ``[B, K]`` (scaled per
                image for a generator with weights, hard straight-through samples for one with
                ``gumbel_tau`` > 0: :func:`maxl.meta.lookahead.generated_targets`).
            loss_fn: ``loss(logits, target) -> scalar``.
            config: the :class:`maxl.meta.MetaConfig` (α, ε₀).

        Returns:
            A scalar with a graph to θ2 only.
        """
        raise NotImplementedError

    def direction(
        self,
        call: Forward,
        call_outer: Forward,
        names: list[str],
        theta: list[Tensor],
        inner_grads: Sequence[Tensor] | None,
        y: Tensor,
        y_o: Tensor,
        target: Tensor,
        loss_fn: LossFn,
        extra: ExtraInnerLoss | None,
        config,
    ) -> tuple[Tensor, list[Tensor]]:
        """The outer loss and the direction v along which the surrogate differentiates the inner
        gradient: here L_pri(θ1⁺) and v = ∇θ1⁺ L_pri(θ1⁺) at the look-ahead point
        (:func:`maxl.meta.lookahead.lookahead_direction`). Subclasses may choose another v.

        Args:
            call, call_outer: the functional forwards on the inner batch x and the outer batch x_o.
            names: the trainable parameters' names (for ``extra``).
            theta: θ1, detached, one tensor per trainable parameter.
            inner_grads: g = ∇θ1 (L_pri + L_aux [+ L_x]) at θ1 on the inner batch, same shapes
                (None in the plain form of an engine with ``uses_inner_gradient = False``).
            y, y_o: primary labels int64 ``[B]`` of the inner and ``[B']`` of the outer batch.
            target: the auxiliary targets float ``[B, K]`` (detach before use: v is detached from θ2).
            loss_fn: ``loss(logits, target) -> scalar``.
            extra: optional L_x(params) of the inner loss.
            config: the :class:`maxl.meta.MetaConfig`.

        Returns:
            ``(outer loss, detached scalar; v, one detached tensor per parameter)``.
        """
        assert inner_grads is not None  # this v reads g: uses_inner_gradient is True
        return lookahead_direction(call_outer, theta, inner_grads, y_o, loss_fn, config)

    def gradient(self, net, generator, x, y, loss_fn, config, extra_inner_loss=None, outer_batch=None) -> Lookahead:
        names, params = trainable(net)
        theta = [p.detach() for p in params]
        x_o, y_o = outer_pair(x, y, outer_batch)
        buffers = buffer_copies(net)
        call = functional_forward(net, names, buffers, x)
        soft, target = generated_targets(generator, x, y)  # [B, K] each, functions of θ2
        g = None
        if self.uses_inner_gradient:
            with torch.enable_grad():  # g = ∇θ1 (L_pri + L_aux [+ L_x]) on detached labels: no graph to θ2
                leaves = [t.detach().requires_grad_() for t in theta]
                inner = multitask_loss(call(leaves), y, target.detach(), loss_fn)
                if extra_inner_loss is not None:
                    inner = inner + extra_inner_loss(dict(zip(names, leaves)))
                g = torch.autograd.grad(inner, leaves)
        # v = ∇θ1⁺ L_pri(f(x_o; θ1⁺), y_o): the DARTS direction d (or a subclass's)
        outer, v = self.direction(
            call,
            functional_forward(net, names, buffers, x_o),
            names,
            theta,
            g,
            y,
            y_o,
            target,
            loss_fn,
            extra_inner_loss,
            config,
        )
        objective = self.surrogate(call, theta, v, target, loss_fn, config)
        return Lookahead(soft=soft, target=target, outer=outer, objective=objective)

    def fused(self, net, generator, x, y, loss_fn, config, extra_inner_loss=None, outer_batch=None) -> SharedStep:
        names, params = trainable(net)
        x_o, y_o = outer_pair(x, y, outer_batch)
        soft, target = generated_targets(generator, x, y)  # [B, K]: J's labels and the multi-task targets
        # a plain backward: the targets are detached, g has no graph to θ2
        primary_logits, primary_loss, aux_loss, grads = multitask_gradient(
            net, names, params, x, y, target.detach(), loss_fn, extra_inner_loss, create_graph=False
        )
        buffers = buffer_copies(net)  # own statistics for the look-ahead
        call = functional_forward(net, names, buffers, x)
        theta = [p.detach() for p in params]
        outer, v = self.direction(
            call,
            functional_forward(net, names, buffers, x_o),
            names,
            theta,
            grads,
            y,
            y_o,
            target,
            loss_fn,
            extra_inner_loss,
            config,
        )
        objective = self.surrogate(call, theta, v, target, loss_fn, config)
        return SharedStep(
            soft=soft,
            target=target,
            outer=outer,
            objective=objective,
            net_grads=list(grads),
            primary_loss=primary_loss,
            aux_loss=aux_loss,
            primary_logits=primary_logits,
        )
