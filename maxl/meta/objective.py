"""The outer objective J of the generator's meta step, and the registry of its label terms.

The generator minimises

    J(θ2) = L_pri(f(x_o; θ1⁺(θ2)), y_o) + Σ_t R_t(ŷ),    ŷ = g(x, y; θ2) float [B, K],

where the engines compute the first term at the look-ahead point θ1⁺ (:mod:`maxl.meta.gradient`)
and each *label term* R_t depends on θ2 through the generated labels of the inner batch alone.
The paper's J has one label term, the batch-mean entropy λ Σ_k ȳ_k log ȳ_k with
ȳ = mean_b ŷ_b (Liu, Davison, Johns, NeurIPS 2019, arXiv:1901.08933, Eq. 4), which keeps the
generator from collapsing onto a few auxiliary classes.

Terms are registered like the engines: :func:`register_term` adds a function
``R(soft [B, K], config: MetaConfig) -> scalar or None`` (None: off with these settings), and
:func:`maxl.meta.gradient.outer_gradient`, which every engine and the fused step share, adds every
registered term to J, so that a new regulariser leaves the engines untouched. A term that must run
the generator again (on a second view of the images, as the view-consistency term of
:class:`auxtasks.GeneratedLabels` does) is passed to the meta step as ``extra_outer_loss``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from maxl.core.losses import mean_entropy, negative_entropy
from maxl.meta.config import MetaConfig

__all__ = ["LabelTerm", "register_term", "unregister_term", "term_names", "label_terms", "paper_objective"]

#: ``R(soft labels [B, K], config) -> scalar tensor``, or None where the term is off.
LabelTerm = Callable[[Tensor, MetaConfig], "Tensor | None"]

_TERMS: dict[str, LabelTerm] = {}


def register_term(name: str) -> Callable[[LabelTerm], LabelTerm]:
    """Decorator: register ``fn`` as the label term ``name`` of J (added after the terms
    registered before it).

    Raises:
        ValueError: a term of that name is registered already.
    """

    def add(fn: LabelTerm) -> LabelTerm:
        if name in _TERMS:
            raise ValueError(f"an objective term {name!r} is registered already: {_TERMS[name]!r}")
        _TERMS[name] = fn
        return fn

    return add


def unregister_term(name: str) -> None:
    """Remove the label term ``name``.

    Raises:
        KeyError: no term of that name.
    """
    if name not in _TERMS:
        raise KeyError(f"no objective term {name!r}; registered: {term_names()}")
    del _TERMS[name]


def term_names() -> tuple[str, ...]:
    """The registered label terms, in the order they are added to J."""
    return tuple(_TERMS)


def label_terms(soft: Tensor, config: MetaConfig) -> Tensor:
    """Σ_t R_t(ŷ): the registered terms of J on the generated labels ``soft`` float ``[B, K]``
    (rows on the simplex), a scalar with the graph to θ2."""
    total: Tensor | None = None
    for term in _TERMS.values():
        value = term(soft, config)
        if value is not None:
            total = value if total is None else total + value
    return total if total is not None else soft.sum() * 0.0


def paper_objective(outer_loss: Tensor, soft: Tensor, entropy_weight: float) -> Tensor:
    """The paper's J = L_pri(θ1⁺) + λ Σ_k ȳ_k log ȳ_k (Liu, Davison, Johns 2019, Eq. 4), from the
    look-ahead's primary loss ``outer_loss`` (scalar) and the labels ``soft`` float ``[B, K]``."""
    return outer_loss + entropy_weight * negative_entropy(soft)


@register_term("batch-entropy")
def batch_entropy(soft: Tensor, config: MetaConfig) -> Tensor:
    """λ Σ_k ȳ_k log ȳ_k, ȳ = mean_b ŷ_b (``entropy_weight``; the paper, Eq. 4): lowest when the
    batch's labels use every auxiliary class equally."""
    return config.entropy_weight * negative_entropy(soft)


@register_term("image-entropy")
def image_entropy(soft: Tensor, config: MetaConfig) -> Tensor | None:
    """μ mean_b H(ŷ_b) (``image_entropy_weight``; off at 0): lowest when each image's label is
    one-hot. With μ = λ, the two entropy terms are −λ times the mutual information of image and
    label."""
    return config.image_entropy_weight * mean_entropy(soft) if config.image_entropy_weight else None
