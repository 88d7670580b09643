"""Geometric loss strategy (GLS): minimise the geometric mean of the task losses.

    L = (Π_i L_i)^(1/T),      ∇L = (L / T) Σ_i ∇L_i / L_i

so each task's gradient is weighted by L / (T L_i): the loss scales cancel, and a task whose loss
is small (already learnt) weighs less than under a sum, without any hyperparameter.

References:
    Chennupati, Sistu, Yogamani, Rawashdeh. "MultiNet++: Multi-Stream Feature Aggregation and
    Geometric Loss Strategy for Multi-Task Learning". CVPR Workshops 2019, Sec. 3.2.
"""

from __future__ import annotations

import torch

from .base import Weighting

__all__ = ["GeometricLoss"]


class GeometricLoss(Weighting):
    """L = (Π_i L_i)^(1/T), computed as exp(mean_i log L_i) (Chennupati et al., CVPRW 2019).

    ``weights()`` reports the effective weight of each loss, ∂L/∂L_i = L / (T L_i).

    Args:
        eps: added to every loss inside the log, against log 0 (a loss that reaches exactly 0).
    """

    linear_in_losses = False  # the update is not ∇θ Σ w_i L_i with fixed w
    OPTIONS = {"eps": (float, "added to every loss inside the log")}

    def __init__(self, eps: float = 1e-12):
        super().__init__()
        if not eps >= 0:
            raise ValueError(f"GLS eps must be >= 0, got {eps}")
        self.eps = float(eps)
        self._effective: dict[str, float] = {}

    def combine(self, losses):
        self._check(losses)
        logs = torch.stack([torch.log(losses[n] + self.eps) for n in self.task_names])  # [T]
        total = torch.exp(logs.mean())  # (Π_i L_i)^(1/T)
        t = len(self.task_names)
        self._effective = {
            n: float(total.detach() / (t * (losses[n].detach() + self.eps))) for n in self.task_names
        }  # ∂L/∂L_i
        return total

    def loss_weights(self):
        return {n: torch.tensor(self._effective.get(n, 1.0)) for n in self.task_names}

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
