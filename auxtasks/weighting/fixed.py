"""Equal and fixed loss weights: ``L = Σ_i w_i L_i`` with constant ``w_i``.

Equal weights (all 1) are MAXL's choice (Liu, Davison, Johns, NeurIPS 2019: mean(L_pri) +
mean(L_aux)) and the usual baseline of the multi-task weighting literature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .base import Weighting

__all__ = ["Fixed", "Equal"]


class Fixed(Weighting):
    """Constant weights: ``L = Σ_i w_i L_i``.

    Args:
        weights: ``{task name: w_i}``; tasks not named get ``default``.
        default: the weight of unnamed tasks (1).

    Raises:
        ValueError: a weight that is negative or not finite, or (at ``bind``) a name that is
            not one of the learner's tasks.
    """

    def __init__(self, weights: Mapping[str, float] | None = None, default: float = 1.0):
        super().__init__()
        self.given = {str(k): float(v) for k, v in (weights or {}).items()}
        self.default = float(default)
        for name, w in {**self.given, "default": self.default}.items():
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"loss weight of {name!r} must be finite and >= 0, got {w}")

    def _build(self) -> None:
        unknown = sorted(set(self.given) - set(self.task_names))
        if unknown:
            raise ValueError(f"fixed weights name unknown tasks {unknown}; the tasks are {list(self.task_names)}")

    def loss_weights(self):
        return {n: torch.tensor(self.given.get(n, self.default)) for n in self.task_names}

    def is_unit_sum(self) -> bool:
        return all(w == 1.0 for w in (*self.given.values(), self.default))

    def extra_repr(self) -> str:
        return f"weights={self.given}, default={self.default}"


class Equal(Fixed):
    """Every loss weighted by 1: ``L = Σ_i L_i`` (MAXL's and most auxiliary-learning papers' choice)."""

    def __init__(self):
        super().__init__()
