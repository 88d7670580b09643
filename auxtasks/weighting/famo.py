"""FAMO: fast adaptive multitask optimisation, weights learnt from how fast each loss falls.

Task logits ξ ∈ R^T give weights z = softmax(ξ). The network minimises

    L = Σ_i z_i log L_i / c,      c = Σ_i z_i / L_i   (constant: not differentiated)

whose gradient Σ_i (z_i / (c L_i)) ∇L_i is a convex combination of the task gradients. After a
step, the change of the log losses δ_i = log L_i(t) − log L_i(t+1) says which tasks improved;
ξ takes an Adam step (learning rate ``lr``, weight decay ``gamma``) along

    −∇_ξ (z·δ) = −Jᵀ_softmax δ = −z ⊙ (δ − z·δ),

raising the weight of the tasks that improved least (Algorithm 1: the update that makes every
task's log loss fall at the same rate, in one step per iteration and no per-task gradients).

Here δ compares the losses of consecutive training batches (the ξ update happens in the next
step's ``combine``), where the paper re-evaluates the same batch after the step; that saves a
forward pass per step.

References:
    Liu, Liu, Stone, Liu. "FAMO: Fast Adaptive Multitask Optimization". NeurIPS 2023, Sec. 3
    (Eq. 5–7, Algorithm 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Weighting

__all__ = ["FAMO"]


class FAMO(Weighting):
    """Weights z = softmax(ξ) learnt by Adam from the losses' decrease (Liu et al., NeurIPS 2023).

    ξ and its Adam state are buffers (saved with the learner), not parameters: they follow their
    own update, not the gradient of the loss.

    Args:
        lr: Adam's learning rate for ξ.
        gamma: Adam's weight decay on ξ (pulls the weights towards uniform).
        eps: added to every loss inside the log.

    Attributes:
        logits: ξ, float ``[T]``.

    Raises:
        ValueError: lr <= 0 or gamma < 0.
    """

    linear_in_losses = False  # the update is not ∇θ Σ w_i L_i with fixed w
    OPTIONS = {
        "lr": (float, "learning rate of the task logits' Adam"),
        "gamma": (float, "weight decay of the task logits"),
        "eps": (float, "added to every loss inside the log"),
    }
    logits: Tensor
    adam_m: Tensor
    adam_v: Tensor
    adam_steps: Tensor
    previous: Tensor
    has_previous: Tensor

    #: Adam's moment rates and denominator guard (torch.optim.Adam's defaults)
    betas, adam_eps = (0.9, 0.999), 1e-8

    def __init__(self, lr: float = 0.025, gamma: float = 0.01, eps: float = 1e-8):
        super().__init__()
        if not lr > 0 or not gamma >= 0:
            raise ValueError(f"FAMO needs lr > 0 and gamma >= 0, got {lr}, {gamma}")
        self.lr, self.gamma, self.eps = float(lr), float(gamma), float(eps)
        self._effective: dict[str, float] = {}

    def _build(self) -> None:
        t = len(self.task_names)
        self.register_buffer("logits", torch.zeros(t))
        self.register_buffer("adam_m", torch.zeros(t))
        self.register_buffer("adam_v", torch.zeros(t))
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("previous", torch.zeros(t))  # log L_i of the last training batch
        self.register_buffer("has_previous", torch.zeros((), dtype=torch.bool))

    def _update_logits(self, delta: Tensor) -> None:
        """One Adam step of ξ along ∇_ξ (z·δ) = z ⊙ (δ − z·δ), with weight decay γ."""
        z = torch.softmax(self.logits, dim=0)
        grad = z * (delta - z @ delta) + self.gamma * self.logits  # Jᵀ_softmax δ + γ ξ
        b1, b2 = self.betas
        self.adam_steps += 1
        step = int(self.adam_steps)
        self.adam_m.mul_(b1).add_((1 - b1) * grad)
        self.adam_v.mul_(b2).add_((1 - b2) * grad * grad)
        denom = (self.adam_v / (1 - b2**step)).sqrt() + self.adam_eps
        self.logits.sub_(self.lr * (self.adam_m / (1 - b1**step)) / denom)

    def combine(self, losses):
        self._check(losses)
        stacked = torch.stack([losses[n] for n in self.task_names]) + self.eps  # [T]
        logs = torch.log(stacked)
        if self.training and torch.is_grad_enabled():
            now = logs.detach().to(self.previous)
            if bool(self.has_previous):
                self._update_logits(self.previous - now)  # δ = log L(t) − log L(t+1)
            self.previous.copy_(now)
            self.has_previous.fill_(True)
        z = torch.softmax(self.logits, dim=0).to(logs)
        c = (z / stacked.detach()).sum()  # Σ z_i / L_i
        effective = z / (c * stacked.detach())  # ∂L/∂L_i, sums to 1
        self._effective = {n: float(effective[i]) for i, n in enumerate(self.task_names)}
        return (z * logs).sum() / c

    def loss_weights(self):
        return {n: torch.tensor(self._effective.get(n, 1.0 / len(self.task_names))) for n in self.task_names}

    def extra_repr(self) -> str:
        return f"lr={self.lr}, gamma={self.gamma}"
