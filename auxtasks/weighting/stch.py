"""Smooth Tchebycheff scalarisation (STCH): a smooth maximum of the task losses.

    L = μ log Σ_i exp( λ_i (L_i − z_i) / μ ),     ∇L = Σ_i softmax_i(λ (L − z) / μ) λ_i ∇L_i

with preferences λ_i, ideal point z_i and smoothing μ > 0. As μ → 0 it is the Tchebycheff
scalarisation max_i λ_i (L_i − z_i) (minimise the worst task); as μ grows the weights tend to
uniform. Here λ_i = 1 and z_i = 0 (losses are non-negative), so the update is a convex
combination of the task gradients, heavier on the tasks with the largest losses.

References:
    Lin, Zhang, Zhang, Liu, Lai, Zhang. "Smooth Tchebycheff Scalarization for Multi-Objective
    Optimization". ICML 2024, Sec. 3 (the smooth Tchebycheff scalarisation).
"""

from __future__ import annotations

import torch

from .base import Weighting

__all__ = ["SmoothTchebycheff"]


class SmoothTchebycheff(Weighting):
    """L = μ log Σ_i exp(L_i / μ) (Lin et al., ICML 2024, with λ_i = 1, z_i = 0).

    ``weights()`` reports ∂L/∂L_i = softmax_i(L / μ) of the last batch.

    Args:
        mu: the smoothing μ > 0 (small: close to the maximum loss; large: close to uniform).

    Raises:
        ValueError: μ <= 0.
    """

    linear_in_losses = False  # the update is not ∇θ Σ w_i L_i with fixed w
    OPTIONS = {"mu": (float, "smoothing of the maximum (> 0)")}

    def __init__(self, mu: float = 1.0):
        super().__init__()
        if not mu > 0:
            raise ValueError(f"STCH mu must be > 0, got {mu}")
        self.mu = float(mu)
        self._effective: dict[str, float] = {}

    def combine(self, losses):
        self._check(losses)
        scaled = torch.stack([losses[n] for n in self.task_names]) / self.mu  # [T]
        total = self.mu * torch.logsumexp(scaled, dim=0)
        soft = torch.softmax(scaled.detach(), dim=0)  # ∂L/∂L_i
        self._effective = {n: float(soft[i]) for i, n in enumerate(self.task_names)}
        return total

    def loss_weights(self):
        return {n: torch.tensor(self._effective.get(n, 1.0 / len(self.task_names))) for n in self.task_names}

    def extra_repr(self) -> str:
        return f"mu={self.mu}"
