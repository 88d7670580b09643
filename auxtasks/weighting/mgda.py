"""MGDA: the shared update is the min-norm element of the convex hull of the tasks' gradients.

With g_t the gradient of task t's loss, MGDA finds

    α* = argmin_{α ∈ Δ^T} ‖Σ_t α_t g_t‖²       (Δ^T: α_t ≥ 0, Σ_t α_t = 1)        (Eq. 3)

a common descent direction of all tasks (or zero at a Pareto-stationary point), and the shared
parameters take Σ_t α*_t g_t; each head takes its own task's gradient. The QP depends on the
Gram matrix M_rs = g_r · g_s only. For two tasks it has the closed form (Algorithm 1)

    α_1 = clip( (g_2 − g_1)·g_2 / ‖g_1 − g_2‖², 0, 1 ),   α_2 = 1 − α_1,

and for T tasks the Frank–Wolfe solver of Algorithm 2: from the best pair's solution, move
towards the vertex e_t̂, t̂ = argmin_r (Mα)_r, by the exact line search of the two-point problem
between Σ α_t g_t and g_t̂, until the step is below a tolerance.

MGDA-UB (Sec. 3.3) solves the same problem with the gradients of the losses with respect to the
shared representation Z (the backbone's output on the batch) instead of the shared parameters,
an upper bound that costs one backward instead of T; the update is ∇ Σ_t α_t L_t.
``normalise`` scales each g_t before the solve as in the authors' code (``"l2"``: g/‖g‖,
``"loss"``: g/L, ``"loss+"``: g/(L‖g‖)); the update uses the unscaled gradients.

Why this file and not torchjd's ``MGDA``: it differs on purpose. It has the authors' gradient
normalisations and MGDA-UB (torchjd solves on the parameters' Gramian only), starts Frank–Wolfe
from the best pair's closed form (torchjd from uniform weights) and needs no optional extra, so
``--weighting mgda`` works in the base install. ``tests/unit/auxtasks/test_aggregators.py`` checks
that the two solvers agree.

References:
    Sener, Koltun. "Multi-Task Learning as Multi-Objective Optimization". NeurIPS 2018,
    Algorithms 1–2, Sec. 3.2–3.3.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import GradientWeighting

__all__ = ["MGDA", "MGDAUpperBound", "min_norm_weights", "min_norm_two", "NORMALISATIONS"]

NORMALISATIONS = ("none", "l2", "loss", "loss+")


def min_norm_two(m11: Tensor, m12: Tensor, m22: Tensor) -> Tensor:
    """γ ∈ [0, 1] minimising ‖γ v_1 + (1−γ) v_2‖² from the inner products v_i·v_j (Algorithm 1)."""
    denom = m11 - 2 * m12 + m22  # ‖v_1 − v_2‖²
    if denom <= 0:
        return torch.ones((), dtype=m11.dtype)  # v_1 = v_2: any γ
    return ((m22 - m12) / denom).clamp(0.0, 1.0)


def min_norm_weights(gram: Tensor, max_iter: int = 1000, tol: float = 1e-10) -> Tensor:
    """α ∈ Δ^T minimising αᵀ M α by Frank–Wolfe (Sener & Koltun, Algorithm 2).

    Args:
        gram: M, float ``[T, T]``, symmetric positive semi-definite (M_rs = g_r · g_s).
        max_iter: the most Frank–Wolfe steps.
        tol: stop when the step's change of α (L1) falls below it.

    Returns:
        α, float64 ``[T]``, non-negative, summing to 1.

    Raises:
        ValueError: M is not square.
    """
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"the Gram matrix must be [T, T], got shape {tuple(gram.shape)}")
    m = gram.detach().double()
    t = m.shape[0]
    if t == 1:
        return torch.ones(1, dtype=torch.float64)
    best = None  # initialise at the best pair's two-task solution (as the authors' solver does)
    for i in range(t):
        for j in range(i + 1, t):
            gamma = min_norm_two(m[i, i], m[i, j], m[j, j])
            alpha = torch.zeros(t, dtype=torch.float64)
            alpha[i], alpha[j] = gamma, 1 - gamma
            value = alpha @ m @ alpha
            if best is None or value < best[0]:
                best = (value, alpha)
    assert best is not None  # t >= 2: the loops ran
    alpha = best[1]
    for _ in range(max_iter):
        target = int(torch.argmin(m @ alpha))  # t̂: the vertex with the steepest descent
        e = torch.zeros_like(alpha)
        e[target] = 1.0
        # line search between θ = Σ α_t g_t and g_t̂: γ minimises ‖(1−γ) θ + γ g_t̂‖²
        gamma = min_norm_two(m[target, target], (m @ alpha)[target], alpha @ m @ alpha)
        new = (1 - gamma) * alpha + gamma * e
        if (new - alpha).abs().sum() < tol:
            return new
        alpha = new
    return alpha


class MGDA(GradientWeighting):
    """The shared parameters take the min-norm convex combination of the tasks' gradients
    (Sener & Koltun, NeurIPS 2018); the heads take their own gradients.

    Args:
        normalise: gradient scaling before the solve, one of :data:`NORMALISATIONS`.
        max_iter, tol: of the Frank–Wolfe solver (:func:`min_norm_weights`).

    Attributes:
        alpha: the last step's α, float ``[T]`` (``task_names`` order; logged as the weights).

    Raises:
        ValueError: an unknown normalisation.
    """

    #: solve on the gradients of the shared representation (MGDA-UB) instead of the parameters
    upper_bound: bool = False
    alpha: Tensor  # a buffer, made by bind()

    OPTIONS = {
        "normalise": (str, "gradient scaling before the solve: none, l2, loss or loss+"),
        "max_iter": (int, "most Frank-Wolfe steps"),
        "tol": (float, "stop when a step changes alpha (L1) by less"),
    }

    def __init__(self, normalise: str = "none", max_iter: int = 1000, tol: float = 1e-10):
        super().__init__()
        if normalise not in NORMALISATIONS:
            raise ValueError(f"unknown MGDA normalisation {normalise!r}; expected one of {NORMALISATIONS}")
        self.normalise, self.max_iter, self.tol = normalise, int(max_iter), float(tol)

    def _build(self) -> None:
        t = len(self.task_names)
        self.register_buffer("alpha", torch.full((t,), 1.0 / t))

    def weights(self) -> dict[str, float]:
        return {n: float(a) for n, a in zip(self.task_names, self.alpha)}

    def solve(self, grads: dict[str, Tensor], losses) -> Tensor:
        """α of the flat per-task gradients ``{name: [P]}`` (scaled by ``normalise``), float64 ``[T]``."""
        g = torch.stack([grads[n].detach().double() for n in self.task_names])  # [T, P]
        if self.normalise != "none":
            scale = torch.ones(len(g), dtype=g.dtype)
            if self.normalise in ("loss", "loss+"):
                scale = scale * torch.stack([losses[n].detach().double() for n in self.task_names])
            if self.normalise in ("l2", "loss+"):
                scale = scale * g.norm(dim=1)
            g = g / scale.clamp_min(1e-12)[:, None]
        alpha = min_norm_weights(g @ g.T, self.max_iter, self.tol)
        self.alpha.copy_(alpha.to(self.alpha))
        return alpha

    def combine_gradients(self, grads, losses):
        alpha = self.solve(grads, losses)
        return sum(alpha[i].to(grads[n]) * grads[n] for i, n in enumerate(self.task_names))  # Σ α_t g_t

    def backward(self, losses, total, shared, specific, *, representation=None) -> None:
        if not self.upper_bound:
            return super().backward(losses, total, shared, specific, representation=representation)
        self._check(losses)
        if representation is None:
            raise ValueError("MGDA-UB needs the shared representation (the learner passes it to backward)")
        grads = {}
        for n in self.task_names:  # ∇_Z L_t: one backward through the heads only
            (g,) = torch.autograd.grad(losses[n], representation, retain_graph=True, allow_unused=True)
            if g is None or not g.any():
                raise ValueError(
                    f"MGDA-UB: task {n!r} does not read the shared representation of the batch (e.g. a "
                    "task on its own inputs, such as rotation); use MGDA on the parameters instead"
                )
            grads[n] = g.reshape(-1)
        alpha = self.solve(grads, losses)
        shared = [p for p in shared if p.requires_grad]
        if shared:  # the shared parameters: ∇ Σ_t α_t L_t
            weighted = sum(float(alpha[i]) * losses[n] for i, n in enumerate(self.task_names))
            torch.autograd.backward(weighted, inputs=shared, retain_graph=bool(specific))
        if specific:
            torch.autograd.backward(total, inputs=list(specific))  # each head: its own loss's gradient

    def extra_repr(self) -> str:
        return f"normalise={self.normalise!r}, upper_bound={self.upper_bound}"


class MGDAUpperBound(MGDA):
    """MGDA-UB: α from the gradients of the shared representation (Sener & Koltun, Sec. 3.3).
    Every task must read the backbone's features of the batch itself."""

    upper_bound = True
