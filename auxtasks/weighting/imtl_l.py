"""IMTL-L: learn a scale per task that brings every scaled loss to the same value.

With s_i learnt by gradient descent together with the network,

    L = Σ_i ( e^{s_i} L_i − s_i ),      ∂L/∂s_i = e^{s_i} L_i − 1

so at the optimum of s_i the scaled loss e^{s_i} L_i is 1 for every task: the tasks are balanced
in loss scale. The network's gradient is Σ_i e^{s_i} ∇L_i.

References:
    Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang. "Towards Impartial Multi-task Learning".
    ICLR 2021, Sec. 3.1 (IMTL-L).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Weighting

__all__ = ["ImpartialLoss"]


class ImpartialLoss(Weighting):
    """Learnt loss scales e^{s_i} with the term −s_i (Liu et al., ICLR 2021, IMTL-L).

    The parameter ``log_scale`` (float ``[T]``, ``task_names`` order) is made at ``bind`` and must
    be in the optimiser (it is a parameter of the learner).

    Args:
        init: initial s_i (0: every scale 1).
    """

    OPTIONS = {"init": (float, "initial log scale of every task")}

    def __init__(self, init: float = 0.0):
        super().__init__()
        self.init = float(init)
        self.log_scale: nn.Parameter | None = None

    def _build(self) -> None:
        self.log_scale = nn.Parameter(torch.full((len(self.task_names),), self.init))

    def loss_weights(self):
        assert self.log_scale is not None, "bind() first"
        return {n: torch.exp(s) for n, s in zip(self.task_names, self.log_scale)}

    def combine(self, losses):
        self._check(losses)
        weights = self.loss_weights()
        assert self.log_scale is not None  # loss_weights() checked it
        return sum(weights[n] * losses[n] - s for n, s in zip(self.task_names, self.log_scale))  # Σ e^s L − s

    def extra_repr(self) -> str:
        return f"init={self.init}"
