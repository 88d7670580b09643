"""Uncertainty weighting: learn one homoscedastic noise level σ_i per task.

With s_i = log σ_i² learnt by gradient descent together with the network,

    classification (softmax likelihood, Eq. 10):  L = Σ_i  exp(−s_i) L_i     + ½ s_i
    regression (Gaussian likelihood, Eq. 7):      L = Σ_i ½ exp(−s_i) L_i    + ½ s_i

that is ``L_i / σ_i² + log σ_i`` and ``L_i / (2σ_i²) + log σ_i``. A task whose loss stays high
gets a larger σ_i and a smaller weight; the ``log σ`` term keeps σ from growing without bound.
For a fixed loss the optimum is σ² = 2L (classification) or σ² = L (regression).

References:
    Kendall, Gal, Cipolla. "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
    Geometry and Semantics". CVPR 2018, Eq. 7 and 10.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Weighting

__all__ = ["Uncertainty"]


class Uncertainty(Weighting):
    """Learnt weights ``exp(−s_i)`` (softmax tasks) or ``½ exp(−s_i)`` (Gaussian tasks),
    ``s_i = log σ_i²`` (Kendall et al., CVPR 2018).

    The parameter ``log_variance`` (float ``[T]``, one per task in ``task_names`` order) is
    created at ``bind`` and must be in the optimiser (it is a parameter of the learner).

    Args:
        init: initial ``s_i`` (0: σ = 1).
    """

    OPTIONS = {"init": (float, "initial log variance of every task")}

    def __init__(self, init: float = 0.0):
        super().__init__()
        self.init = float(init)
        self.log_variance: nn.Parameter | None = None

    def _build(self) -> None:
        self.log_variance = nn.Parameter(torch.full((len(self.task_names),), self.init))

    def _scale(self, name: str) -> float:
        return 0.5 if self.likelihoods[name] == "gaussian" else 1.0

    def loss_weights(self):
        assert self.log_variance is not None, "bind() first"
        return {n: self._scale(n) * torch.exp(-s) for n, s in zip(self.task_names, self.log_variance)}

    def combine(self, losses):
        self._check(losses)
        weights = self.loss_weights()
        assert self.log_variance is not None  # loss_weights() checked it
        return sum(weights[n] * losses[n] + 0.5 * s for n, s in zip(self.task_names, self.log_variance))

    def extra_repr(self) -> str:
        return f"init={self.init}"
