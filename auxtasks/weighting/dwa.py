"""Dynamic Weight Average: weight each task by how slowly its loss has been falling.

With L_k(t) the mean loss of task k over epoch t, K tasks and temperature T,

    r_k(t−1) = L_k(t−1) / L_k(t−2),      λ_k(t) = K exp(r_k(t−1)/T) / Σ_i exp(r_i(t−1)/T),

and λ_k(t) = 1 in the first two epochs (no ratio yet). A task whose loss fell less in the
last epoch (r near or above 1) gets more weight; Σ_k λ_k = K.

References:
    Liu, Johns, Davison. "End-to-End Multi-Task Learning with Attention". CVPR 2019, Eq. 7
    (T = 2 in their experiments).
"""

from __future__ import annotations

import torch

from .base import Weighting

__all__ = ["DynamicWeightAverage"]


class DynamicWeightAverage(Weighting):
    """Weights from the ratio of the last two epochs' mean losses (Liu, Johns, Davison, CVPR 2019).

    The losses of every training step (``combine`` in training mode) are averaged over the
    epoch; the learner's ``end_epoch()`` closes the epoch and sets the next weights.

    Args:
        temperature: T; larger T gives weights closer to 1 (2 in the paper).

    Raises:
        ValueError: T <= 0.
    """

    # buffers, made by bind()
    epoch_sum: torch.Tensor
    epoch_steps: torch.Tensor
    history: torch.Tensor
    epochs_seen: torch.Tensor
    lambdas: torch.Tensor

    OPTIONS = {"temperature": (float, "T of the softmax over the loss ratios")}

    def __init__(self, temperature: float = 2.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"DWA temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def _build(self) -> None:
        k = len(self.task_names)
        self.register_buffer("epoch_sum", torch.zeros(k, dtype=torch.float64))  # Σ L_k this epoch
        self.register_buffer("epoch_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("history", torch.zeros(2, k, dtype=torch.float64))  # L(t−2), L(t−1)
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("lambdas", torch.ones(k))

    def loss_weights(self):
        return {n: self.lambdas[i] for i, n in enumerate(self.task_names)}

    def combine(self, losses):
        self._check(losses)
        if self.training and torch.is_grad_enabled():
            self.epoch_sum += torch.stack([losses[n].detach() for n in self.task_names]).to(self.epoch_sum)
            self.epoch_steps += 1
        return super().combine(losses)

    def end_epoch(self) -> None:
        """Store this epoch's mean losses and set the weights of the next epoch."""
        if int(self.epoch_steps) == 0:
            return
        self.history = torch.stack([self.history[1], self.epoch_sum / self.epoch_steps])
        self.epochs_seen += 1
        self.epoch_sum.zero_()
        self.epoch_steps.zero_()
        if int(self.epochs_seen) >= 2:
            ratio = self.history[1] / self.history[0]  # r_k(t−1) = L_k(t−1) / L_k(t−2)
            k = len(self.task_names)
            self.lambdas = (k * torch.softmax(ratio / self.temperature, dim=0)).float()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
