"""Random loss weighting (RLW): a fresh random convex combination of the losses at every step.

At each training step, draw λ = softmax(z), z ~ N(0, I_T), and minimise Σ_i λ_i L_i (heads
included, as in the paper). In expectation every task weighs 1/T; the randomness is the method.

The weights are those of torchjd's ``RandomWeighting`` (the same draw from torch's global
generator: a test checks it), but applied to the losses: ∇ Σ_i λ_i L_i = Σ_i λ_i g_i costs one
backward pass where an aggregator of the Jacobian costs one per task.

References:
    Lin, Ye, Xu, Shi, Zhang, Kwok. "Reasonable Effectiveness of Random Weighting: A Litmus Test
    for Multi-Task Learning". TMLR 2022, Sec. 3 (RLW with the normal distribution).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Weighting

__all__ = ["RandomWeighting"]


class RandomWeighting(Weighting):
    """λ = softmax(z), z ~ N(0, I_T) drawn at every training step (Lin et al., TMLR 2022).

    A draw happens in ``combine`` in training mode with gradients enabled; evaluation reuses the
    last draw (the losses it reports are the logged ones, not the update).

    Attributes:
        lam: the current λ, float ``[T]`` (a buffer: ``1/T`` each before the first draw).
    """

    lam: Tensor  # a buffer, made by bind()

    def _build(self) -> None:
        t = len(self.task_names)
        self.register_buffer("lam", torch.full((t,), 1.0 / t))

    def combine(self, losses):
        self._check(losses)
        if self.training and torch.is_grad_enabled():
            z = torch.randn(len(self.task_names))  # z ~ N(0, I_T), torch's global generator
            self.lam.copy_(torch.softmax(z, dim=-1))
        return super().combine(losses)

    def loss_weights(self):
        return {n: self.lam[i] for i, n in enumerate(self.task_names)}
