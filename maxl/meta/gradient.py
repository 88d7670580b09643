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

Engines, all computing ∇θ2 J for the same J through the network's own ``forward``, each in its
own module of :mod:`maxl.meta.engines` and registered under its name
(:mod:`maxl.meta.registry`; ``MetaConfig.engine_name`` says which one a config uses):

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
  double backward is needed, so it works with every op (engine ``"first"``).
* ``order="implicit"``: not J's gradient but its long-horizon counterpart, the implicit-function
  hypergradient at θ1 with the inverse Hessian of L_pri + L_aux as K Neumann terms
  (:mod:`maxl.meta.engines.implicit`; Lorraine, Vicol, Duvenaud, AISTATS 2020; AuxiLearn).

The look-ahead never changes the real network: it runs on copies of the BatchNorm running
statistics, and no ``.grad`` of θ1 is touched.

Two generalisations of the look-ahead (defaults: the paper's):

* **An outer batch** (``outer_batch=(x_o, y_o)``): J(θ2) = L_pri(f(x_o; θ1⁺(θ2)), y_o) + λH on a
  different batch from the inner step, which stays on (x, y) with the generator's labels of x.
  Measured on the batch it was trained on, the look-ahead rewards labels that help fit that
  batch; on a held-out batch it rewards labels that help generalise, the bilevel split of DARTS
  (Liu, Simonyan, Yang, ICLR 2019, Eq. 3–4: weights on training data, architecture on validation
  data) and AuxiLearn (Navon et al., "Auxiliary Learning by Implicit Differentiation", ICLR
  2021: auxiliary parameters on a held-out auxiliary set).
* **A k-step look-ahead** (``MetaConfig.inner_steps`` = k): θ1^(0) = θ1,
  θ1^(j+1) = θ1^(j) − α ∇θ1 [L_pri(f(x; θ1^(j)), y) + L_aux(f(x; θ1^(j)), g(x, y; θ2))],
  on the same batch and labels, differentiable through every step, and J at θ1⁺ = θ1^(k): the
  multi-step inner loop of MAML (Finn, Abbeel, Levine, ICML 2017, Sec. 2.2). The generator then
  sees the effect of its labels over several updates instead of one. Engines ``"func"`` (also
  fused) and ``"higher"``; ``"jvp"`` and ``order="first"`` take one step only and refuse k > 1.

Both keep every engine's BatchNorm handling: all look-ahead passes run on copies of the buffers.

Other auxiliary tasks trained on the same network (rotation, colourisation, ... from
:mod:`auxtasks`) also move θ1 in the real step. ``extra_inner_loss`` adds their loss L_x(θ1)
to the look-ahead, θ1⁺ = θ1 − α ∇θ1 (L_pri + L_aux + L_x), so that θ1⁺ is where the real step
goes. L_x does not depend on θ2: it shifts the point at which L_pri(θ1⁺) is differentiated
but adds no mixed derivative of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from maxl.core.losses import negative_entropy
from maxl.meta.config import MetaConfig
from maxl.meta.engine import ExtraInnerLoss, Lookahead, LossFn, MetaEngine, OuterBatch
from maxl.meta.graph_check import check_double_backward, explain_double_backward_errors
from maxl.meta.objective import ObjectiveConfig, TermInputs, objective_terms
from maxl.meta.registry import check_inner_steps, get_engine

__all__ = ["MetaResult", "meta_gradient", "outer_gradient", "ExtraOuterLoss"]

#: ``R(soft labels [B, K]) -> scalar``: a further term of J that depends on θ2 alone
ExtraOuterLoss = Callable[[Tensor], Tensor]


@dataclass
class MetaResult:
    """Output of :func:`meta_gradient`.

    Attributes:
        grads: ∇θ2 J, one tensor per parameter of the generator (same order as
            ``generator.parameters()``).
        outer_loss: L_pri(f(x_o; θ1⁺), y_o) on the outer batch (θ1⁺ = θ1^(k); for
            ``order="first"``: at the virtual step θ1′ = θ1⁺).
        neg_entropy: H = Σ ȳ log ȳ of the batch.
        soft_labels: the generated labels (the distribution), detached, float ``[B, sum(ψ)]``.
        lookahead_grad_norm, entropy_grad_norm: the norms of the two parts of ``grads`` (with
            ``ObjectiveConfig.record_parts``; else None): the look-ahead's ‖∇θ2 L_pri(θ1⁺)‖ (with
            the terms of part ``"lookahead"``, e.g. centred by class) and the label terms'
            ‖∇θ2 Σ_t R_t‖ (the paper: ‖λ ∇θ2 H‖).
        image_scales: each image's auxiliary-loss scale, float ``[B]``, for a generator with
            per-image weights (WAMAL; else None).
        targets: what the look-ahead's auxiliary head learnt from, detached, float
            ``[B, sum(ψ)]``: ``soft_labels``, or their per-image scaled form (WAMAL), or hard
            one-hot samples of them (``gumbel_tau`` > 0, scaled too with weights). A multi-task
            step that should follow the look-ahead learns from these (the same noise draw).
    """

    grads: list[Tensor]
    outer_loss: Tensor
    neg_entropy: Tensor
    soft_labels: Tensor
    lookahead_grad_norm: Tensor | None = None
    entropy_grad_norm: Tensor | None = None
    image_scales: Tensor | None = None
    targets: Tensor | None = None


def outer_gradient(
    engine: MetaEngine,
    look: Lookahead,
    generator: nn.Module,
    objective: ObjectiveConfig,
    check_graph: bool,
    extra_outer_loss: ExtraOuterLoss | None = None,
    primary: Tensor | None = None,
    second_view: Callable[[], Tensor] | None = None,
) -> MetaResult:
    """∇θ2 J from an engine's look-ahead: the step that :func:`meta_gradient` and
    :func:`maxl.meta.fused_step` share. J is the look-ahead's term plus the registered terms of
    :mod:`maxl.meta.objective`, differentiated once::

        J = look.objective + Σ_t R_t(ŷ)        (the paper: R = λ Σ_k ȳ_k log ȳ_k)

    Args:
        engine: the engine that computed ``look``.
        look: its :class:`~maxl.meta.engine.Lookahead` (or :class:`~maxl.meta.engine.SharedStep`).
        generator: the label generator; its trainable parameters are θ2.
        objective: the terms' settings (:class:`~maxl.meta.objective.ObjectiveConfig`).
        check_graph: for an engine that needs double backward, walk the graph of ``look.objective``.
        extra_outer_loss: ``R(soft) -> scalar``, a further term of J on the generated labels
            ``soft [B, K]`` (a term of the caller's own, outside the registry).
        primary: the inner batch's primary labels int64 ``[B]`` (the ``"centre-by-class"`` term).
        second_view: ``() -> g(x′, y)`` float ``[B, K]``, the labels of another view of the inner
            batch (the ``"view-consistency"`` term; :class:`~maxl.meta.objective.TermInputs`).

    Returns:
        :class:`MetaResult`.

    Raises:
        DoubleBackwardError: see :mod:`maxl.meta.graph_check`.
        ValueError: from a term whose inputs are missing (``centre_by_class`` without ``primary``
            or with per-image weights / hard labels; ``consistency_weight`` without ``second_view``).
    """
    if check_graph and engine.needs_double_backward:
        check_double_backward(look.objective)
    gen_params: list[Tensor] = [p for p in generator.parameters() if p.requires_grad]
    inputs = TermInputs(soft=look.soft, primary=primary, look=look, second_view=second_view)
    terms = objective_terms(inputs, objective)  # {part: Σ R_t}: λ Σ ȳ log ȳ (the paper), μ, ν, ...
    label_part = terms.get("labels", look.soft.sum() * 0.0)
    if extra_outer_loss is not None:
        label_part = label_part + extra_outer_loss(look.soft)
    lookahead_part = look.objective + terms["lookahead"] if "lookahead" in terms else look.objective
    parts = {}
    with explain_double_backward_errors(engine.needs_double_backward):
        if objective.record_parts:  # the two parts of ∇θ2 J separately
            look_grads = _grads(lookahead_part, gen_params, retain_graph=True)
            label_grads = _grads(label_part, gen_params)
            grads = [a + b for a, b in zip(look_grads, label_grads)]
            parts = {"lookahead_grad_norm": _norm(look_grads), "entropy_grad_norm": _norm(label_grads)}
        else:
            grads = list(torch.autograd.grad(lookahead_part + label_part, gen_params))  # ∇θ2 J
    if getattr(generator, "weight_range", 0):  # per-image weights: the target rows sum to the scales
        parts["image_scales"] = look.target.detach().sum(1)
    return MetaResult(
        grads=list(grads),
        outer_loss=look.outer.detach(),
        neg_entropy=negative_entropy(look.soft).detach(),
        soft_labels=look.soft.detach(),
        targets=look.target.detach(),
        **parts,
    )


def _grads(value: Tensor, params: list[Tensor], retain_graph: bool = False) -> list[Tensor]:
    """∇ ``value`` for each of ``params``, zeros where it does not depend on one."""
    grads = torch.autograd.grad(value, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def _norm(tensors: list[Tensor]) -> Tensor:
    # cast: the generator has parameters, so the sum is a Tensor, not sum()'s start 0
    return torch.sqrt(cast(Tensor, sum((t.detach() ** 2).sum() for t in tensors)))


def meta_gradient(
    net: nn.Module,
    generator: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    config: MetaConfig | None = None,
    check_graph: bool = True,
    *,
    extra_inner_loss: ExtraInnerLoss | None = None,
    outer_batch: OuterBatch | None = None,
    extra_outer_loss: ExtraOuterLoss | None = None,
    objective: ObjectiveConfig | None = None,
    second_view: Callable[[], Tensor] | None = None,
) -> MetaResult:
    """Compute the generator's meta-gradient ∇θ2 J on one batch (see the module docstring).

    Neither network's parameters, ``.grad`` or BatchNorm running statistics of the
    multi-task network are changed; the caller applies ``grads`` with its optimiser. The
    engine is the registered one of ``config`` (:func:`maxl.meta.get_engine`).

    Args:
        net: the multi-task network; ``net(x)`` returns ``(primary [B, P], aux [B, K])``.
        generator: the label-generation network; ``generator(x, y)`` returns soft labels
            ``[B, K]``.
        x: images float ``[B, C, H, W]``.
        y: primary labels int64 ``[B]``.
        loss_fn: ``loss(logits, target) -> scalar`` for hard ``[B]`` and soft ``[B, K]``
            targets (e.g. :func:`maxl.core.losses.focal_loss`).
        config: :class:`MetaConfig`, how the gradient is computed; defaults to the paper's settings.
        check_graph: for an engine that needs double backward (``"func"``, ``"higher"``),
            walk the autograd graph for ops whose backward cannot be differentiated (a
            trainer does it on its first step only).
        extra_inner_loss: optional ``L_x(params) -> scalar``, called with the multi-task
            network's trainable parameters by name (``dict(net.named_parameters())``; the
            tensors may carry a graph and must be used instead of the module's own, e.g.
            through ``torch.func.functional_call``). It is added to the look-ahead loss:
            θ1⁺ = θ1 − α ∇θ1 (L_pri + L_aux + L_x). Used by :mod:`auxtasks` to include the
            other auxiliary tasks of the real step (at every step when ``inner_steps`` > 1).
        outer_batch: optional ``(x_o, y_o)``, images float ``[B', C, H, W]`` and primary labels
            int64 ``[B']`` (e.g. a held-out meta split): the outer loss is
            L_pri(f(x_o; θ1⁺), y_o), while the look-ahead steps stay on (x, y) with the
            generator's labels of x. None: (x, y), the paper's J.
        extra_outer_loss: optional ``R(soft [B, K]) -> scalar``, a term of J of the caller's own
            (added to the registered ones).
        objective: :class:`~maxl.meta.objective.ObjectiveConfig`, the terms of J; defaults to the
            paper's J (λ = 0.2).
        second_view: ``() -> g(x′, y)`` float ``[B, K]``, the generator's labels of another view of
            ``x`` (needed by ``objective.consistency_weight`` > 0;
            :meth:`auxtasks.GeneratedLabels.second_view` makes it).

    Returns:
        :class:`MetaResult`.

    Raises:
        DoubleBackwardError: ``order="second"`` with engine ``"func"``/``"higher"`` and an op of
            the network has no double backward, or one that autograd cannot follow; the message
            suggests ``order="first"`` (``"jvp"`` needs no double backward either).
        RuntimeError: for engine ``"jvp"``, an op without a forward-mode derivative (use
            ``"func"`` then).
        ValueError: ``config`` names an engine that is not registered, ``inner_steps > 1`` with an
            engine that takes one step only, or ``outer_batch`` is not a pair of one batch size.

    References:
        Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
        NeurIPS 2019, arXiv:1901.08933, Eq. 3–4.
        Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search". ICLR 2019 (outer batch).
        Navon et al. "Auxiliary Learning by Implicit Differentiation". ICLR 2021 (outer batch).
        Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning". ICML 2017 (``inner_steps``).
    """
    cfg = config or MetaConfig()
    engine = get_engine(cfg)
    check_inner_steps(engine, cfg.inner_steps)
    with explain_double_backward_errors(engine.needs_double_backward):
        look = engine.gradient(net, generator, x, y, loss_fn, cfg, extra_inner_loss, outer_batch)
    return outer_gradient(
        engine, look, generator, objective or ObjectiveConfig(), check_graph, extra_outer_loss, y, second_view
    )
