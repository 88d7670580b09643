"""DB-MTL: balance the tasks in loss scale (a log transform) and in gradient magnitude.

1. Loss scale: every task's loss enters as log L_i, so its gradient is g_i / L_i (g_i = ∇L_i),
   whatever the loss's units.
2. Gradient magnitude: an exponential moving average of the shared parameters' log-loss gradients,

       ĝ_i(t) = (1 − β_t) ∇log L_i(t) + β_t ĝ_i(t−1),      β_t = β / t^σ     (t = 1, 2, ...; ĝ(0) = 0)

   and every task is scaled to the largest norm among them,

       d = Σ_i ( max_j ‖ĝ_j‖ / ‖ĝ_i‖ ) ĝ_i.

The shared parameters take d; each head the gradient of its own log L_i.

References:
    Lin, Ye, Xu, Shi, Zhang, Kwok. "Dual-Balancing for Multi-Task Learning". arXiv:2308.12029,
    2023, Sec. 3 (Eq. 2 and 4, Algorithm 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import GradientWeighting

__all__ = ["DualBalancing"]


class DualBalancing(GradientWeighting):
    """Log losses and gradient-norm balancing with a moving average (Lin et al., 2023).

    ``weights()`` reports the scale max_j ‖ĝ_j‖ / ‖ĝ_i‖ of each task at the last step.

    Args:
        beta: β, the moving average's rate at t = 1, in [0, 1).
        beta_sigma: σ >= 0, the decay of the rate (β_t = β / t^σ).
        eps: added to every loss inside the log and to the norms.

    Attributes:
        grad_ema: ĝ, float ``[T, P]`` (a buffer; ``[0]`` before the first step).
        steps: t, the steps taken (a buffer).

    Raises:
        ValueError: β outside [0, 1) or σ < 0.
    """

    OPTIONS = {
        "beta": (float, "moving-average rate of the log-loss gradients at the first step"),
        "beta_sigma": (float, "decay of that rate, beta_t = beta / t^sigma"),
        "eps": (float, "added inside the log and to the norms"),
    }
    grad_ema: Tensor
    steps: Tensor
    scale: Tensor

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.5, eps: float = 1e-8):
        super().__init__()
        if not 0 <= beta < 1 or not beta_sigma >= 0:
            raise ValueError(f"DB-MTL needs 0 <= beta < 1 and beta_sigma >= 0, got {beta}, {beta_sigma}")
        self.beta, self.beta_sigma, self.eps = float(beta), float(beta_sigma), float(eps)

    def _build(self) -> None:
        self.register_buffer("grad_ema", torch.zeros(0))  # sized at the first step (P is unknown here)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("scale", torch.ones(len(self.task_names)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "grad_ema"
        if key in state_dict:  # a checkpoint's ĝ has the network's size
            self.grad_ema = torch.zeros_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def combine(self, losses):
        self._check(losses)
        return sum(torch.log(losses[n] + self.eps) for n in self.task_names)  # the heads: ∇ log L_i

    def weights(self) -> dict[str, float]:
        return {n: float(s) for n, s in zip(self.task_names, self.scale)}

    def combine_gradients(self, grads, losses):
        g = torch.stack([grads[n] / (losses[n].detach() + self.eps) for n in self.task_names])  # ∇log L_i: [T, P]
        self.steps += 1
        rate = self.beta / float(self.steps) ** self.beta_sigma  # β_t
        if self.grad_ema.shape != g.shape:
            self.grad_ema = torch.zeros_like(g.detach())  # ĝ(0) = 0
        self.grad_ema = g.detach() + rate * (self.grad_ema - g.detach())  # (1 − β_t) g + β_t ĝ
        norms = self.grad_ema.norm(dim=1)  # [T]
        self.scale = (norms.max() / (norms + self.eps)).to(self.scale)
        return self.scale.to(g) @ self.grad_ema  # Σ_i scale_i ĝ_i: [P]

    def extra_repr(self) -> str:
        return f"beta={self.beta}, beta_sigma={self.beta_sigma}"
