"""The fused MAXL step: one forward/backward of the multi-task network serves both its own
update and the generator's look-ahead.

A training step of the ``per-step`` schedule needs, on one batch and from the same θ1, θ2,

* the multi-task gradient ∇θ1 [L_pri(f(x; θ1), y) + L_aux(f(x; θ1), g(x, y; θ2)) (+ L_x(θ1))], and
* the look-ahead θ1⁺ = θ1 − α ∇θ1 [L_pri + L_aux (+ L_x)] of the meta-gradient ∇θ2 J
  (Liu, Davison, Johns, NeurIPS 2019, arXiv:1901.08933, Eq. 3–4, Algorithm 1).

They contain the same gradient, so computing it once saves a forward and a backward of the
multi-task network (and a forward of the generator, whose labels serve both). For the
``"func"`` engine that one backward is taken with ``create_graph=True``; the ``"jvp"``
engine and the first-order variant need only a plain backward (see :mod:`maxl.meta.gradient`).
Each engine provides this form as :meth:`maxl.meta.engine.MetaEngine.fused`; ``"higher"`` takes
its own look-ahead step and has none (:func:`maxl.meta.supports_fused`). L_x is the loss of the
other auxiliary tasks of the real step (``extra_inner_loss``, as in
:func:`maxl.meta.gradient.meta_gradient`); it enters both the update and the look-ahead.
The multi-task gradient is the first step of the look-ahead, so a k-step look-ahead
(``MetaConfig.inner_steps``, engine ``"func"``) continues from it with k − 1 functional steps; an
outer batch (``outer_batch``) changes only the look-ahead's outer loss, never the multi-task
gradient, which is always on (x, y). The result equals :func:`maxl.meta.gradient.meta_gradient`
(with the same ``inner_steps`` and ``outer_batch``) followed by a plain multi-task backward on
the generator's labels (+ L_x), as the tests check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from maxl.meta.config import MetaConfig
from maxl.meta.engine import ExtraInnerLoss, LossFn, OuterBatch
from maxl.meta.gradient import ExtraOuterLoss, MetaResult, outer_gradient
from maxl.meta.graph_check import explain_double_backward_errors
from maxl.meta.objective import ObjectiveConfig
from maxl.meta.registry import check_inner_steps, engine_names, get_engine

__all__ = ["FusedResult", "fused_step"]


@dataclass
class FusedResult:
    """Output of :func:`fused_step`.

    Attributes:
        meta: the generator's meta-gradient and statistics, as from
            :func:`maxl.meta.gradient.meta_gradient`.
        net_grads: ∇θ1 (L_pri + L_aux [+ L_x]), detached, one tensor per trainable parameter of
            the multi-task network (order of ``net.parameters()``).
        primary_loss: L_pri(f(x; θ1), y), detached scalar.
        aux_loss: L_aux(f(x; θ1), g(x, y; θ2)), detached scalar.
        primary_logits: f's primary logits at θ1, detached float ``[B, P]``.
    """

    meta: MetaResult
    net_grads: list[Tensor]
    primary_loss: Tensor
    aux_loss: Tensor
    primary_logits: Tensor


def fused_step(
    net: nn.Module,
    generator: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    config: MetaConfig | None = None,
    *,
    extra_inner_loss: ExtraInnerLoss | None = None,
    check_graph: bool = True,
    outer_batch: OuterBatch | None = None,
    extra_outer_loss: ExtraOuterLoss | None = None,
    objective: ObjectiveConfig | None = None,
    second_view: Callable[[], Tensor] | None = None,
) -> FusedResult:
    """The multi-task gradient and the generator's meta-gradient from one shared
    forward/backward of the multi-task network.

    The multi-task forward runs on the real module in its current mode, so the BatchNorm
    running statistics advance exactly once, as in a plain multi-task step; the look-ahead
    passes run on copies of them. No parameter and no ``.grad`` of either network is
    changed: the caller applies ``net_grads`` and ``meta.grads`` with its optimisers.

    Args:
        net, generator, x, y, loss_fn: as in :func:`maxl.meta.meta_gradient` (the multi-task
            network, the label-generation network, images ``[B, C, H, W]``, primary labels
            ``[B]``, the loss of both heads).
        config: :class:`maxl.meta.MetaConfig` whose engine has a fused form
            (:func:`maxl.meta.supports_fused`): ``order="second"`` with engine ``"func"``
            or ``"jvp"``, or ``order="first"``.
        extra_inner_loss: optional ``L_x(params) -> scalar`` of the other tasks, called with the
            multi-task network's trainable parameters by name (as in
            :func:`maxl.meta.meta_gradient`). Added to the shared loss, so ``net_grads`` =
            ∇θ1 (L_pri + L_aux + L_x) and θ1⁺ = θ1 − α ∇θ1 (L_pri + L_aux + L_x).
        check_graph: for an engine that needs double backward (``"func"``), walk the autograd
            graph for ops whose backward cannot be differentiated (a trainer does it on its
            first step only).
        outer_batch: optional ``(x_o [B', C, H, W], y_o [B'])`` of the outer loss, as in
            :func:`maxl.meta.meta_gradient`; ``net_grads`` and the losses stay on (x, y), and
            the real network's BatchNorm statistics see x only.
        extra_outer_loss, objective, second_view: the terms of J, as in
            :func:`maxl.meta.meta_gradient`.

    Returns:
        :class:`FusedResult`.

    Raises:
        ValueError: the engine has no fused form (``"higher"``: it cannot share the step),
            ``inner_steps > 1`` with an engine that takes one step only (``"jvp"``,
            ``order="first"``), or a malformed ``outer_batch``.
        DoubleBackwardError: engine ``"func"`` and an op of the network has no double backward,
            or one that autograd cannot follow; the message suggests ``order="first"``.

    References:
        Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
        NeurIPS 2019, arXiv:1901.08933, Algorithm 1.
    """
    cfg = config or MetaConfig()
    engine = get_engine(cfg)
    if not engine.supports_fused:
        fused = tuple(n for n in engine_names() if get_engine(n).supports_fused)
        raise ValueError(
            f"the meta engine {engine.name!r} has no fused form (it takes its own look-ahead "
            f"step); fused_step supports {fused}; use meta_gradient for {engine.name!r}"
        )
    check_inner_steps(engine, cfg.inner_steps)
    with explain_double_backward_errors(engine.needs_double_backward):
        step = engine.fused(net, generator, x, y, loss_fn, cfg, extra_inner_loss, outer_batch)
    meta = outer_gradient(
        engine, step, generator, objective or ObjectiveConfig(), check_graph, extra_outer_loss, y, second_view
    )
    return FusedResult(
        meta=meta,
        net_grads=[g.detach() for g in step.net_grads],
        primary_loss=step.primary_loss.detach(),
        aux_loss=step.aux_loss.detach(),
        primary_logits=step.primary_logits.detach(),
    )
