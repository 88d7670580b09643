"""GradNorm: learn the loss weights so that all tasks train at a similar rate.

With weights w_i(t), the shared parameters W, G_i = ‖∇_W w_i L_i‖, Ḡ = mean_i G_i, the
relative inverse training rate r_i = L̃_i / mean_j L̃_j of L̃_i = L_i(t) / L_i(0), the weights
follow the gradient of

    L_grad = Σ_i | G_i − Ḡ · r_i^α |                                         (Eq. 2)

with the target Ḡ·r_i^α held constant, and are renormalised after each step so that
Σ_i w_i = T (the number of tasks). Since G_i = w_i ‖∇_W L_i‖ and the target is a constant,
∂L_grad/∂w_i = sign(G_i − Ḡ r_i^α) · ‖∇_W L_i‖, computed here in closed form from the
per-task gradients (no double backward). The network itself takes the gradient of
Σ_i w_i L_i.

W: the paper takes the last shared layer to save compute; here W is all shared parameters,
whose per-task gradients the learner computes anyway.

References:
    Chen, Badrinarayanan, Lee, Rabinovich. "GradNorm: Gradient Normalization for Adaptive
    Loss Balancing in Deep Multitask Networks". ICML 2018, Eq. 1–2 and Algorithm 1 (α = 1.5
    on NYUv2).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import GradientWeighting

__all__ = ["GradNorm"]


class GradNorm(GradientWeighting):
    """Loss weights learnt by gradient normalisation (Chen et al., ICML 2018).

    The parameter ``task_weights`` (float ``[T]``, initialised to 1, ``task_names`` order)
    is created at ``bind`` and must be in the optimiser: ``backward`` writes
    ∂L_grad/∂w into its ``.grad`` and the optimiser's step moves it. The weights are
    renormalised to sum to T before each use; the first batch's losses are L_i(0).

    Args:
        alpha: α, the strength of the pull towards equal training rates (1.5).

    Raises:
        ValueError: α < 0.
    """

    OPTIONS = {"alpha": (float, "strength of the pull towards equal training rates")}

    def __init__(self, alpha: float = 1.5):
        super().__init__()
        if alpha < 0:
            raise ValueError(f"GradNorm alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.task_weights: nn.Parameter | None = None

    initial_losses: torch.Tensor  # a buffer, made by bind()

    def _build(self) -> None:
        t = len(self.task_names)
        self.task_weights = nn.Parameter(torch.ones(t))
        self.register_buffer("initial_losses", torch.full((t,), float("nan")))  # L_i(0)

    @torch.no_grad()
    def _renormalise(self) -> None:
        w = self.task_weights
        assert w is not None, "bind() first"
        w.mul_(len(self.task_names) / w.sum())  # Σ w_i = T

    def loss_weights(self):
        assert self.task_weights is not None, "bind() first"
        return {n: w for n, w in zip(self.task_names, self.task_weights.detach().clone())}

    def combine(self, losses):
        self._renormalise()
        return super().combine(losses)

    def combine_gradients(self, grads, losses):
        names = self.task_names
        assert self.task_weights is not None, "bind() first"
        w = self.task_weights.detach()
        current = torch.stack([losses[n].detach() for n in names]).to(w)  # L_i(t)
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(current)
        norms = torch.stack([grads[n].norm() for n in names]).to(w)  # ‖∇_W L_i‖
        g = w * norms  # G_i
        ratio = current / self.initial_losses  # L̃_i
        target = g.mean() * (ratio / ratio.mean()) ** self.alpha  # Ḡ r_i^α, held constant
        grad_w = torch.sign(g - target) * norms  # ∂ Σ|G_i − target_i| / ∂w_i
        self.task_weights.grad = grad_w if self.task_weights.grad is None else self.task_weights.grad + grad_w
        return sum(w[i] * grads[n] for i, n in enumerate(names))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
