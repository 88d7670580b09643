"""Dynamic task prioritisation: more weight to the tasks that are done worst.

Each task t has a performance measure κ_t ∈ [0, 1] (its accuracy on the training batch, or
exp(−L_t) for ``measure="loss"`` and for tasks without an accuracy, e.g. regressions), smoothed
by an exponential moving average, κ̄_t ← β κ̄_t + (1 − β) κ_t (first value: κ_t), and weighted
focal-style (Guo et al. 2018, Eq. 3 and Sec. 3.3):

    w_t = −(1 − κ̄_t)^γ log κ̄_t

A task near perfect (κ̄ → 1) gets a weight near 0; a poor one (κ̄ → 0) a large weight. κ̄ is
clamped to [ε, 1] (ε = 1e-4) so that w stays finite. γ ≥ 0 is the focusing parameter
(γ = 0: −log κ̄). The weights are constants of the step (no gradient flows into κ̄).

References:
    Guo, Haque, Huang, Yeung, Fei-Fei. "Dynamic Task Prioritization for Multitask Learning".
    ECCV 2018, Sec. 3.2–3.3 (task-level prioritisation).
"""

from __future__ import annotations

import math

import torch

from .base import Weighting

__all__ = ["DynamicTaskPrioritization", "MEASURES", "dtp_weight"]

MEASURES = ("accuracy", "loss")
_EPS = 1e-4


def dtp_weight(kappa: float, gamma: float) -> float:
    """w = −(1 − κ)^γ log κ of one κ ∈ (0, 1] (clamped below at 1e-4)."""
    kappa = min(max(kappa, _EPS), 1.0)
    return -((1.0 - kappa) ** gamma) * math.log(kappa)


class DynamicTaskPrioritization(Weighting):
    """Focal-style task weights from moving averages of each task's performance (Guo et al. 2018).

    The learner passes each task's batch accuracy to :meth:`observe` before :meth:`combine`
    (training mode only); ``combine`` then updates κ̄ and the weights.

    Args:
        gamma: γ ≥ 0, the focusing parameter.
        momentum: β ∈ [0, 1), the moving average's weight on the past.
        measure: ``"accuracy"`` (the batch accuracy; exp(−L) for tasks without one) or
            ``"loss"`` (exp(−L) for every task).

    Raises:
        ValueError: γ < 0, β outside [0, 1), an unknown measure.
    """

    uses_performance = True
    # buffers, made by bind()
    kappa: torch.Tensor
    lambdas: torch.Tensor

    OPTIONS = {
        "gamma": (float, "focusing parameter of the focal-loss-style weight"),
        "momentum": (float, "moving-average rate of the performance measure"),
        "measure": (str, "the performance measure"),
    }

    def __init__(self, gamma: float = 1.0, momentum: float = 0.9, measure: str = "accuracy"):
        super().__init__()
        if gamma < 0 or not 0 <= momentum < 1 or measure not in MEASURES:
            raise ValueError(
                f"DTP needs gamma >= 0, momentum in [0, 1) and measure in {MEASURES}, got "
                f"{gamma}, {momentum}, {measure!r}"
            )
        self.gamma, self.momentum, self.measure = float(gamma), float(momentum), measure
        self._performance: dict = {}

    def _build(self) -> None:
        t = len(self.task_names)
        self.register_buffer("kappa", torch.full((t,), float("nan"), dtype=torch.float64))  # κ̄, nan: none yet
        self.register_buffer("lambdas", torch.ones(t))

    def loss_weights(self):
        return {n: self.lambdas[i] for i, n in enumerate(self.task_names)}

    def observe(self, performance) -> None:
        self._performance = dict(performance)

    def combine(self, losses):
        self._check(losses)
        if self.training and torch.is_grad_enabled():
            for i, n in enumerate(self.task_names):
                value = self._performance.get(n) if self.measure == "accuracy" else None
                if value is None:
                    value = math.exp(-float(losses[n].detach()))  # κ = exp(−L)
                old = float(self.kappa[i])
                self.kappa[i] = value if math.isnan(old) else self.momentum * old + (1 - self.momentum) * value
                self.lambdas[i] = dtp_weight(float(self.kappa[i]), self.gamma)
            self._performance = {}
        return super().combine(losses)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, momentum={self.momentum}, measure={self.measure!r}"
