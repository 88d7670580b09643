"""Gradient cosine similarity: use an auxiliary gradient only where it agrees with the primary one.

With g_0 the primary task's gradient of the shared parameters and g_k an auxiliary task's,
the shared update is

    unweighted:  g_0 + Σ_k [cos(g_0, g_k) ≥ 0] · g_k
    weighted:    g_0 + Σ_k max(0, cos(g_0, g_k)) · g_k

so an auxiliary gradient that points against the primary one is dropped (and the primary
task converges to a critical point of its own loss, Du et al.'s Proposition). The cosine is
taken over all shared parameters at once.

References:
    Du, Czarnecki, Jayakumar, Farajtabar, Pascanu, Lakshminarayanan. "Adapting Auxiliary
    Losses Using Gradient Similarity". arXiv:1812.02224, 2018, Sec. 2 (both variants).
"""

from __future__ import annotations

import torch.nn.functional as F

from .base import PRIMARY, GradientWeighting

__all__ = ["GradientCosineSimilarity", "GCS_MODES"]

GCS_MODES = ("unweighted", "weighted")


class GradientCosineSimilarity(GradientWeighting):
    """Gate (``"unweighted"``) or scale (``"weighted"``) each auxiliary gradient of the shared
    parameters by its cosine similarity with the primary gradient (Du et al., 2018).

    ``weights()`` reports the factor each auxiliary gradient got at the last step.

    Args:
        mode: one of :data:`GCS_MODES` (default ``"unweighted"``, the paper's main variant).

    Raises:
        ValueError: unknown mode.
    """

    OPTIONS = {"mode": (str, "how the auxiliary gradient is gated")}

    def __init__(self, mode: str = "unweighted"):
        super().__init__()
        if mode not in GCS_MODES:
            raise ValueError(f"unknown gradient-similarity mode {mode!r}; expected one of {GCS_MODES}")
        self.mode = mode
        self.last_factors: dict[str, float] = {}

    def combine_gradients(self, grads, losses):
        primary = grads[PRIMARY]
        update = primary.clone()
        for name in self.task_names[1:]:
            cosine = F.cosine_similarity(primary, grads[name], dim=0, eps=1e-12)
            factor = (cosine >= 0).to(primary) if self.mode == "unweighted" else cosine.clamp_min(0)
            update += factor * grads[name]
            self.last_factors[name] = float(factor)
        return update

    def weights(self) -> dict[str, float]:
        return {PRIMARY: 1.0, **{n: self.last_factors.get(n, 1.0) for n in self.task_names[1:]}}

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
