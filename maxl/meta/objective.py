"""The outer objective J of the generator's meta step: its settings (:class:`ObjectiveConfig`) and
the registry of its terms.

The generator minimises

    J(θ2) = L_pri(f(x_o; θ1⁺(θ2)), y_o) + Σ_t R_t,    ŷ = g(x, y; θ2) float [B, K],

where the engines compute the first term at the look-ahead point θ1⁺ (:mod:`maxl.meta.gradient`)
and each registered *term* R_t depends on θ2 through the generated labels. The paper's J has one
term, the batch-mean entropy λ Σ_k ȳ_k log ȳ_k with ȳ = mean_b ŷ_b (Liu, Davison, Johns, NeurIPS
2019, arXiv:1901.08933, Eq. 4), which keeps the generator from collapsing onto a few auxiliary
classes. The built-in terms, in the order they are added:

* ``"batch-entropy"``: λ Σ_k ȳ_k log ȳ_k (``entropy_weight``; the paper's).
* ``"image-entropy"``: μ mean_b H(ŷ_b) (``image_entropy_weight``; off at 0).
* ``"view-consistency"``: −ν I(ŷ, g(x′, y)), the mutual information of the labels of two views of
  the images (``consistency_weight``; off at 0). The second view x′ is drawn by whoever holds the
  images' normalisation, :class:`auxtasks.GeneratedLabels` (``consistency_colour``, ``_flip``,
  ``_rotation``), before the look-ahead, and reaches the term as :attr:`TermInputs.second_view`.
* ``"centre-by-class"`` (part ``"lookahead"``): removes from the look-ahead's push on the labels,
  p_b = ∂L_pri(θ1⁺)/∂ŷ_b, its mean c_b over the batch's images of the same primary class. It is the
  term R = −Σ_b ⟨sg(c_b), ŷ_b⟩ (sg: no gradient), whose ∇θ2 is −Σ_b (∂ŷ_b/∂θ2)ᵀ c_b, so that the
  look-ahead's ∇θ2 L_pri + ∇θ2 R = Σ_b (∂ŷ_b/∂θ2)ᵀ (p_b − c_b): the centred push
  (``centre_by_class``). Its value is a surrogate (only its gradient means something).

Terms are registered like the engines: :func:`register_term` adds a function
``R(inputs: TermInputs, config: ObjectiveConfig) -> scalar or None`` (None: off with these
settings), and :func:`maxl.meta.gradient.outer_gradient`, which every engine and the fused step
share, adds every registered term to J, so that a new regulariser leaves the engines untouched;
the engines never read an :class:`ObjectiveConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from maxl.core.fields import check_field_types, setting
from maxl.core.losses import mean_entropy, negative_entropy, paired_mutual_information

if TYPE_CHECKING:
    from maxl.meta.engine import Lookahead

__all__ = [
    "ObjectiveConfig",
    "TermInputs",
    "ObjectiveTerm",
    "PARTS",
    "register_term",
    "unregister_term",
    "term_names",
    "objective_terms",
    "paper_objective",
    "class_means",
]

#: The parts of ∇θ2 J that ``ObjectiveConfig.record_parts`` reports: the look-ahead's (with the
#: terms that reshape it) and the label terms'.
PARTS = ("lookahead", "labels")


@dataclass
class ObjectiveConfig:
    """Settings of the generator's outer objective J (the section ``objective`` of a run).

    Attributes:
        entropy_weight: λ of the negative-entropy term (0.2 in the paper).
        image_entropy_weight: μ of a per-image entropy term, J += μ mean_b H(ŷ_b): it makes each
            image's label sharp while λ's batch-mean term keeps the labels balanced; μ = λ gives
            the mutual information J = L_pri(θ1⁺) − λ [H(ȳ) − mean_b H(ŷ_b)] (0: the paper's J).
        consistency_weight: ν of a view-consistency term, J −= ν I(g(x), g(x')), the mutual
            information of the labels of two augmented views (IIC; Ji, Henriques, Vedaldi, ICCV
            2019); the second view is made by :class:`auxtasks.GeneratedLabels`.
        consistency_colour: s, the strength of a colour distortion of the second view (brightness,
            contrast, saturation factors in [1 − s, 1 + s], grayscale with probability 0.2;
            :func:`auxtasks.generated.random_colour`); 0: flip and shift only.
        consistency_flip: the second view is a mirror image half of the time (True; False for
            data whose classes a mirror image changes, such as digits).
        consistency_rotation: the second view is also rotated by an angle drawn from
            [−r, r] degrees (:func:`auxtasks.generated.random_rotation`); 0: no rotation.
        centre_by_class: remove from the look-ahead's push on the labels, ∂L_pri(θ1⁺)/∂ŷ_b, its
            mean over the batch's images of the same primary class before it reaches θ2, so that
            the look-ahead only decides which images of a class take which auxiliary class,
            not how often each is taken (that part moves the class's mean label ȳ_k, which the
            entropy term governs). Needs a generator without per-image weights or hard labels.
        record_parts: also report the norms of the two parts of ∇θ2 J (:data:`PARTS`): the
            look-ahead's ∇θ2 L_pri(θ1⁺) (centred with ``centre_by_class``) and the label terms'
            (λ's entropy term and the others); a diagnostic costing one more backward through the
            generator, the gradient itself is their sum. It lives here because the split is one
            of J's terms, not of an engine.

    Raises:
        ValueError: a value of the wrong type (:func:`maxl.core.fields.check_field_types`), a
            negative weight, ``consistency_colour`` outside [0, 1), ``consistency_rotation``
            outside [0, 180].

    References:
        Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
        NeurIPS 2019, arXiv:1901.08933, Eq. 4 (λ).
        Ji, Henriques, Vedaldi. "Invariant Information Clustering". ICCV 2019 (ν).
    """

    entropy_weight: float = setting(0.2, help="lambda of the negative-entropy term")
    image_entropy_weight: float = setting(
        0.0,
        help="mu of the per-image entropy term of J (sharp labels per image); = "
        "--entropy-weight: the mutual information",
    )
    consistency_weight: float = setting(
        0.0, help="nu of the view-consistency term of J: the mutual information of two augmented views' labels (IIC)"
    )
    consistency_colour: float = setting(0.0, help="strength s in [0, 1) of a colour distortion of the second view")
    consistency_flip: bool = setting(
        True, flag="--consistency-no-flip", help="no mirror images among the second views (for digits)"
    )
    consistency_rotation: float = setting(0.0, help="rotate the second view by up to this many degrees")
    centre_by_class: bool = setting(
        False,
        flag="--centre-meta-gradient",
        help="remove from the look-ahead's push on the labels its mean over the batch's "
        "images of each primary class: the look-ahead decides which images take "
        "which auxiliary class, the entropy term how often each is taken",
    )
    record_parts: bool = setting(
        False,
        flag="--record-meta-parts",
        help="record the norms of the meta-gradient's look-ahead and entropy parts every "
        "epoch (one more generator backward)",
    )

    def __post_init__(self):
        check_field_types(self, "objective")
        for name in ("entropy_weight", "image_entropy_weight", "consistency_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.consistency_colour < 1:
            raise ValueError(f"consistency_colour must be in [0, 1), got {self.consistency_colour}")
        if not 0 <= self.consistency_rotation <= 180:
            raise ValueError(f"consistency_rotation must be in [0, 180] degrees, got {self.consistency_rotation}")


@dataclass
class TermInputs:
    """What a term of J may read.

    Attributes:
        soft: ŷ = g(x, y; θ2), the generated labels of the inner batch with their graph to θ2,
            float ``[B, K]`` (rows on the simplex).
        primary: the inner batch's primary labels, int64 ``[B]`` (None where the caller has none).
        look: the engine's look-ahead (:class:`maxl.meta.engine.Lookahead`): ``look.objective``
            is the scalar whose ∇θ2 is the look-ahead's part of ∇θ2 J (None outside a meta step).
        second_view: ``() -> g(x′, y; θ2)`` float ``[B, K]``, the generator's labels of another
            view x′ of the inner batch (drawn before the look-ahead; the generator runs when it is
            called), or None where the caller made none.
    """

    soft: Tensor
    primary: Tensor | None = None
    look: Lookahead | None = None
    second_view: Callable[[], Tensor] | None = None


#: ``R(inputs, config) -> scalar tensor``, or None where the term is off.
ObjectiveTerm = Callable[[TermInputs, ObjectiveConfig], "Tensor | None"]

_TERMS: dict[str, tuple[ObjectiveTerm, str]] = {}


def register_term(name: str, *, part: str = "labels") -> Callable[[ObjectiveTerm], ObjectiveTerm]:
    """Decorator: register ``fn`` as the term ``name`` of J (added after the terms registered
    before it).

    Args:
        name: the term's name.
        part: which part of ∇θ2 J ``record_parts`` counts it in (:data:`PARTS`): ``"labels"`` (a
            regulariser of the labels) or ``"lookahead"`` (a term that reshapes the look-ahead's
            own push, such as ``"centre-by-class"``).

    Raises:
        ValueError: a term of that name is registered already, or an unknown part.
    """
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r} of the objective term {name!r}; expected one of {PARTS}")

    def add(fn: ObjectiveTerm) -> ObjectiveTerm:
        if name in _TERMS:
            raise ValueError(f"an objective term {name!r} is registered already: {_TERMS[name][0]!r}")
        _TERMS[name] = (fn, part)
        return fn

    return add


def unregister_term(name: str) -> None:
    """Remove the term ``name``.

    Raises:
        KeyError: no term of that name.
    """
    if name not in _TERMS:
        raise KeyError(f"no objective term {name!r}; registered: {term_names()}")
    del _TERMS[name]


def term_names() -> tuple[str, ...]:
    """The registered terms, in the order they are added to J."""
    return tuple(_TERMS)


def objective_terms(inputs: TermInputs, config: ObjectiveConfig) -> dict[str, Tensor]:
    """Σ_t R_t by part: ``{part: the sum of the registered terms of that part that are on}``, each a
    scalar with its graph to θ2 (a part with no term on is left out)."""
    sums: dict[str, Tensor] = {}
    for term, part in _TERMS.values():
        value = term(inputs, config)
        if value is not None:
            sums[part] = value if part not in sums else sums[part] + value
    return sums


def paper_objective(outer_loss: Tensor, soft: Tensor, entropy_weight: float) -> Tensor:
    """The paper's J = L_pri(θ1⁺) + λ Σ_k ȳ_k log ȳ_k (Liu, Davison, Johns 2019, Eq. 4), from the
    look-ahead's primary loss ``outer_loss`` (scalar) and the labels ``soft`` float ``[B, K]``."""
    return outer_loss + entropy_weight * negative_entropy(soft)


def class_means(push: Tensor, primary: Tensor) -> Tensor:
    """For each row of ``push`` float ``[B, K]``, the mean of the rows of its primary class
    (``primary`` int64 ``[B]``), float ``[B, K]``."""
    classes, inverse = torch.unique(primary, return_inverse=True)
    sums = torch.zeros(len(classes), push.shape[1], dtype=push.dtype, device=push.device).index_add_(0, inverse, push)
    counts = torch.bincount(inverse, minlength=len(classes)).to(push.dtype)
    return (sums / counts[:, None])[inverse]


@register_term("batch-entropy")
def batch_entropy(inputs: TermInputs, config: ObjectiveConfig) -> Tensor:
    """λ Σ_k ȳ_k log ȳ_k, ȳ = mean_b ŷ_b (``entropy_weight``; the paper, Eq. 4): lowest when the
    batch's labels use every auxiliary class equally."""
    return config.entropy_weight * negative_entropy(inputs.soft)


@register_term("image-entropy")
def image_entropy(inputs: TermInputs, config: ObjectiveConfig) -> Tensor | None:
    """μ mean_b H(ŷ_b) (``image_entropy_weight``; off at 0): lowest when each image's label is
    one-hot. With μ = λ, the two entropy terms are −λ times the mutual information of image and
    label."""
    return config.image_entropy_weight * mean_entropy(inputs.soft) if config.image_entropy_weight else None


@register_term("view-consistency")
def view_consistency(inputs: TermInputs, config: ObjectiveConfig) -> Tensor | None:
    """−ν I(ŷ, ŷ′) with ŷ′ = g(x′, y) the labels of a second view (``consistency_weight``; off at 0;
    :func:`maxl.core.losses.paired_mutual_information`).

    Raises:
        ValueError: ν > 0 without a second view.
    """
    weight = config.consistency_weight
    if not weight:
        return None
    if inputs.second_view is None:
        raise ValueError(
            "the view-consistency term (consistency_weight > 0) needs a second view of the images: "
            "pass second_view= to meta_gradient / fused_step (auxtasks.GeneratedLabels.second_view makes it)"
        )
    return -weight * paired_mutual_information(inputs.soft, inputs.second_view())


@register_term("centre-by-class", part="lookahead")
def centre_by_class(inputs: TermInputs, config: ObjectiveConfig) -> Tensor | None:
    """−Σ_b ⟨sg(c_b), ŷ_b⟩, c_b the mean look-ahead push ∂L_pri(θ1⁺)/∂ŷ over the images of b's
    primary class (``centre_by_class``; off when False): added to the look-ahead's term, it centres
    the push per class (see the module docstring). Its value is a surrogate.

    Raises:
        ValueError: no primary labels or look-ahead, or labels that are not the soft ones the
            look-ahead learnt from (per-image weights, hard Gumbel labels).
    """
    if not config.centre_by_class:
        return None
    look = inputs.look
    if inputs.primary is None or look is None:
        raise ValueError("centre_by_class needs the inner batch's primary labels and the look-ahead")
    if look.target is not look.soft:
        raise ValueError(
            "centre_by_class does not apply to a generator with per-image weights (image_weight_range) "
            "or hard Gumbel labels (gumbel_tau): its push is taken on the soft labels"
        )
    (push,) = torch.autograd.grad(look.objective, look.soft, retain_graph=True)  # ∂L_pri(θ1⁺)/∂ŷ, [B, K]
    return -(class_means(push, inputs.primary).detach() * look.soft).sum()
