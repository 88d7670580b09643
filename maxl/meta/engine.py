"""The base class of the meta-gradient engines and what their two forms return.

Every engine computes the same outer objective of MAXL's generator,

    J(θ2) = L_pri(f(x_o; θ1⁺(θ2)), y_o) + λ Σ_k ȳ_k log ȳ_k,
    θ1⁺(θ2) = θ1 − α ∇θ1 [L_pri(f(x; θ1), y) + L_aux(f(x; θ1), g(x, y; θ2))]

(Liu, Davison, Johns, NeurIPS 2019, arXiv:1901.08933, Eq. 3–4; the outer batch (x_o, y_o) is
(x, y) unless ``outer_batch`` is given; θ1⁺ is θ1^(k) after ``MetaConfig.inner_steps`` steps,
see :mod:`maxl.meta.gradient`), and differs only in how the look-ahead's contribution to ∇θ2 J
is obtained. An engine does not take ∇θ2 itself: it returns a scalar ``objective`` whose
gradient with respect to θ2 is that contribution, and :func:`maxl.meta.meta_gradient` /
:func:`maxl.meta.fused_step` add the registered terms of J (:mod:`maxl.meta.objective`; the
paper's: λH) and differentiate once. That keeps the terms of J, the graph check and the error
translation in one place; an engine reads only :class:`maxl.meta.MetaConfig`.

An engine has two forms:

* :meth:`MetaEngine.gradient` (plain): the look-ahead alone, for the alternate schedule or after
  a separate multi-task step. Returns a :class:`Lookahead`.
* :meth:`MetaEngine.fused`: the multi-task gradient ∇θ1 (L_pri + L_aux) and the look-ahead from
  one shared forward/backward of the real module. Returns a :class:`SharedStep`. Optional: an
  engine that takes its own look-ahead step (``"higher"``) does not override it.

An engine that can unroll more than one look-ahead step sets ``multi_step``; the others refuse
``inner_steps > 1`` (:func:`maxl.meta.registry.check_inner_steps`).

Engines are registered under their names (:func:`maxl.meta.register_engine`) and chosen by
:func:`maxl.meta.get_engine` from a :class:`maxl.meta.MetaConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from maxl.meta.config import MetaConfig

__all__ = ["MetaEngine", "Lookahead", "SharedStep", "LossFn", "ExtraInnerLoss", "OuterBatch"]

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss(logits, target) -> scalar`` for hard ``[B]`` and soft ``[B, K]`` targets."""

ExtraInnerLoss = Callable[[dict[str, Tensor]], Tensor]
"""``L_x(params) -> scalar``: other tasks' loss, a function of the multi-task network's
trainable parameters by name (tensors that may carry a graph)."""

OuterBatch = tuple[Tensor, Tensor]
"""``(x_o, y_o)``: images float ``[B', C, H, W]`` and primary labels int64 ``[B']`` of the outer loss."""


@dataclass
class Lookahead:
    """What an engine's plain form gives :func:`maxl.meta.meta_gradient`.

    Attributes:
        soft: g(x, y; θ2), the generated labels with their graph to θ2, float ``[B, K]``.
        target: the auxiliary targets the look-ahead learnt from, float ``[B, K]``: ``soft`` itself,
            ``soft`` scaled per image for a generator with weights, or hard samples of ``soft``
            passed straight through a Gumbel-softmax (``gumbel_tau`` > 0; see
            :func:`maxl.meta.lookahead.generated_targets`).
        outer: L_pri(f(x_o; θ1⁺), y_o), scalar (with a graph to θ2 for the double-backward engines).
        objective: a scalar whose ∇θ2 is the look-ahead's term of ∇θ2 J: ``outer`` itself for
            the exact double-backward engines, a surrogate for the others.
    """

    soft: Tensor
    target: Tensor
    outer: Tensor
    objective: Tensor


@dataclass
class SharedStep(Lookahead):
    """What an engine's fused form gives :func:`maxl.meta.fused_step`: the look-ahead and the
    multi-task step computed from the same forward/backward.

    Attributes:
        net_grads: ∇θ1 (L_pri + L_aux [+ L_x]) at θ1, one tensor per trainable parameter of the
            multi-task network (order of ``net.parameters()``); may still carry a graph.
        primary_loss: L_pri(f(x; θ1), y), scalar.
        aux_loss: L_aux(f(x; θ1), g(x, y; θ2)), scalar.
        primary_logits: f's primary logits at θ1, float ``[B, P]``.
    """

    net_grads: list[Tensor]
    primary_loss: Tensor
    aux_loss: Tensor
    primary_logits: Tensor


class MetaEngine:
    """One way of computing the look-ahead term of MAXL's meta-gradient ∇θ2 J.

    Subclasses set ``name`` (the registry key) and implement :meth:`gradient`; those that can
    share the multi-task forward/backward also override :meth:`fused`.

    Attributes:
        name: the key under which the engine is registered (``MetaConfig.engine_name``).
        order: ``"second"`` (exact; selected by ``MetaConfig.engine``) or ``"first"``
            (selected by ``MetaConfig.order``).
        needs_double_backward: whether the engine differentiates the network's backward
            (``create_graph=True``); if so, the callers walk the graph for ops that cannot be
            differentiated twice and explain autograd's errors (:mod:`maxl.meta.graph_check`).
        multi_step: whether both forms unroll ``MetaConfig.inner_steps`` > 1 look-ahead steps.
    """

    name: str = ""
    order: str = "second"
    needs_double_backward: bool = False
    multi_step: bool = False

    @property
    def supports_fused(self) -> bool:
        """Whether the engine has a fused form (it overrides :meth:`fused`)."""
        return type(self).fused is not MetaEngine.fused

    def gradient(
        self,
        net: nn.Module,
        generator: nn.Module,
        x: Tensor,
        y: Tensor,
        loss_fn: LossFn,
        config: MetaConfig,
        extra_inner_loss: ExtraInnerLoss | None = None,
        outer_batch: OuterBatch | None = None,
    ) -> Lookahead:
        """The plain form: the look-ahead from θ1 without touching the real network.

        Args:
            net: the multi-task network; ``net(x)`` returns ``(primary [B, P], aux [B, K])``.
            generator: the label generator; ``generator(x, y)`` returns soft labels ``[B, K]``.
            x: images float ``[B, C, H, W]``.
            y: primary labels int64 ``[B]``.
            loss_fn: ``loss(logits, target) -> scalar``.
            config: the :class:`maxl.meta.MetaConfig` (α, ε₀, k = ``inner_steps``, ...).
            extra_inner_loss: optional L_x(params), added to the look-ahead's inner loss.
            outer_batch: optional ``(x_o [B', C, H, W], y_o [B'])`` of the outer loss
                L_pri(f(x_o; θ1⁺), y_o); None: (x, y). The look-ahead steps stay on (x, y).

        Returns:
            :class:`Lookahead`. Neither network's parameters, ``.grad`` or buffers change.

        Raises:
            NotImplementedError: the subclass does not implement it.
        """
        raise NotImplementedError(f"engine {self.name!r} has no gradient form")

    def fused(
        self,
        net: nn.Module,
        generator: nn.Module,
        x: Tensor,
        y: Tensor,
        loss_fn: LossFn,
        config: MetaConfig,
        extra_inner_loss: ExtraInnerLoss | None = None,
        outer_batch: OuterBatch | None = None,
    ) -> SharedStep:
        """The fused form: the multi-task gradient and the look-ahead from one forward/backward.

        The multi-task forward runs on the real module, so its BatchNorm running statistics
        advance once, as in a plain multi-task step; look-ahead passes run on copies. Args as in
        :meth:`gradient`.

        Returns:
            :class:`SharedStep`.

        Raises:
            NotImplementedError: the engine has no fused form (``supports_fused`` is False).
        """
        raise NotImplementedError(f"engine {self.name!r} has no fused form")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
