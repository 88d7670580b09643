"""The meta-gradient of the primary loss with respect to the weights of the task losses.

The training loss is L(θ; λ) = Σ_i λ_i L_i(θ) over the primary task and the auxiliary tasks on a
training batch; one look-ahead (inner) step gives

    θ⁺(λ) = θ − α ∇θ Σ_i λ_i L_i(θ)

and the outer objective is the primary loss on a held-out batch, J(λ) = L_pri^val(θ⁺(λ)) (in
Auto-λ's auxiliary-learning mode only the primary task is in the outer loss). As ∇θ L_i does not
depend on λ, ∂θ⁺/∂λ_i = −α ∇θ L_i(θ), and with v = ∇θ⁺ L_pri^val(θ⁺)

    ∂J/∂λ_i = −α ⟨∇θ L_i(θ), v⟩                                                      (1)

the alignment of task i's gradient with the primary gradient at the look-ahead point (Liu, James,
Davison, Johns, "Auto-Lambda: Disentangling Dynamic Task Relationships", TMLR 2022, Sec. 3, Eq. 2–3;
the second-order term of DARTS, Liu, Simonyan, Yang, ICLR 2019, Eq. 7, with the mixed Hessian
∂²L/∂λ∂θ = [∇θ L_i]_i). Three engines compute it:

* ``"jvp"`` (default, exact): v by one backward at θ⁺, then ⟨∇θ L_i(θ), v⟩ for every i from one
  forward-mode pass of the task losses along v (``torch.autograd.forward_ad``).
* ``"func"`` (exact): the look-ahead written out with ``create_graph=True`` and J differentiated
  with respect to λ by double backward; the only engine for ``inner_steps`` > 1 (θ⁺ is then k
  steps, each with the same weights and batch).
* ``"fd"`` (Auto-λ's reference form): the mixed Hessian-vector product of Eq. (1) by a central
  difference of the task losses along v, ⟨∇θ L_i, v⟩ ≈ (L_i(θ + εv) − L_i(θ − εv)) / 2ε with
  ε = ε₀ / ‖v‖ (DARTS, Eq. 8); error O(ε²).

With the real training step's per-task gradients g_i = ∇θ L_i(θ) at hand (one forward and one
backward per task of the step's own graph, :meth:`auxtasks.AuxiliaryLearner.task_gradients`), Eq. (1)
needs no second-order term at all: θ⁺ = θ − α Σ_j λ_j g_j, one backward at θ⁺ gives v, and
⟨g_i, v⟩ are inner products (:func:`fused_task_weight_gradient`, the fused Auto-λ step).

Everything runs through closures on the caller's parameters by name (``task_losses(params)``,
``outer_loss(params)``), which must run the network by ``torch.func.functional_call`` on copies
of its buffers, so that no parameter, ``.grad`` or BatchNorm statistic of the real network changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

__all__ = [
    "TASK_WEIGHT_ENGINES",
    "TaskWeightGradient",
    "task_weight_gradient",
    "lookahead_point",
    "fused_task_weight_gradient",
    "ImplicitGradient",
    "implicit_combination_gradient",
]

#: The engines of :func:`task_weight_gradient`, the default first.
TASK_WEIGHT_ENGINES = ("jvp", "func", "fd")

TaskLosses = Callable[[dict[str, Tensor]], Tensor]
"""``task_losses(params) -> float [T]``: every task's loss L_i on the training batch, primary first."""
OuterLoss = Callable[[dict[str, Tensor]], Tensor]
"""``outer_loss(params) -> scalar``: the outer loss (the primary loss on the held-out batch)."""


@dataclass
class TaskWeightGradient:
    """What :func:`task_weight_gradient` returns.

    Attributes:
        grad: ∂J/∂λ, float ``[T]``, detached, in the order of the task losses.
        outer_loss: J = L_out(θ⁺), a detached scalar.
        alignments: ⟨∇θ L_i(θ), v⟩, float ``[T]`` (``"jvp"`` and ``"fd"``; None for ``"func"``).
    """

    grad: Tensor
    outer_loss: Tensor
    alignments: Tensor | None = None


def _grads(loss: Tensor, params: dict[str, Tensor], create_graph: bool = False) -> dict[str, Tensor]:
    """∇ of ``loss`` with respect to every tensor of ``params`` (zeros for those it does not use)."""
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph, allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(params.items(), grads)}


def gradient_dot(a: Mapping[str, Tensor | None], b: Mapping[str, Tensor | None], zero: Tensor) -> Tensor:
    """⟨a, b⟩ = Σ_n (a[n] · b[n]).sum() of two gradients given as ``{parameter name: tensor}``,
    detached; a parameter that either does not reach (None, or absent from ``b``) counts 0. The sum
    starts from ``zero`` (a scalar of the dtype and device wanted)."""
    return sum(
        ((x.detach() * y.detach()).sum() for n, x in a.items() if x is not None and (y := b.get(n)) is not None),
        zero,
    )


def lookahead_point(
    task_losses: TaskLosses, params: dict[str, Tensor], weights: Tensor, alpha: float
) -> tuple[dict[str, Tensor], Tensor]:
    """θ⁺ = θ − α ∇θ Σ_i λ_i L_i(θ), detached, and the task losses L_i(θ) (detached ``[T]``).

    Raises:
        ValueError: ``weights`` is not of the task losses' shape ``[T]``.
    """
    theta = {n: p.detach().requires_grad_() for n, p in params.items()}
    with torch.enable_grad():
        losses = task_losses(theta)
        if losses.shape != weights.shape:
            raise ValueError(f"{len(weights)} weights for {losses.numel()} task losses")
        g = _grads((weights.detach() * losses).sum(), theta)
    return {n: (theta[n] - alpha * g[n]).detach() for n in theta}, losses.detach()


def _outer_direction(outer_loss: OuterLoss, point: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """L_out(θ⁺) detached and v = ∇θ⁺ L_out(θ⁺)."""
    fast = {n: p.detach().requires_grad_() for n, p in point.items()}
    with torch.enable_grad():
        loss = outer_loss(fast)
        v = _grads(loss, fast)
    return loss.detach(), v


def task_weight_gradient(
    task_losses: TaskLosses,
    outer_loss: OuterLoss,
    params: dict[str, Tensor],
    weights: Tensor,
    alpha: float,
    *,
    engine: str = "jvp",
    fd_epsilon: float = 0.01,
    inner_steps: int = 1,
) -> TaskWeightGradient:
    """∂/∂λ of the outer loss at the look-ahead point θ⁺ = θ − α ∇θ Σ_i λ_i L_i(θ).

    Args:
        task_losses: ``params -> float [T]``, the task losses on the training batch (the same
            targets and inputs at every call: draw random targets once, outside).
        outer_loss: ``params -> scalar``, the outer loss (the primary loss on a held-out batch).
        params: θ by name, the tensors ``task_losses`` and ``outer_loss`` take (not changed).
        weights: λ, float ``[T]``.
        alpha: α > 0, the look-ahead's step size (the network's learning rate).
        engine: one of :data:`TASK_WEIGHT_ENGINES`.
        fd_epsilon: ε₀ of ``"fd"``: the difference step is ε₀ / ‖v‖.
        inner_steps: look-ahead steps (> 1 only with ``"func"``).

    Returns:
        :class:`TaskWeightGradient`.

    Raises:
        ValueError: an unknown engine, ``alpha`` or ``fd_epsilon`` not > 0, ``inner_steps`` < 1 or
            > 1 with an engine other than ``"func"``, ``weights`` not ``[T]`` like the task losses.

    References:
        Liu, James, Davison, Johns. "Auto-Lambda: Disentangling Dynamic Task Relationships".
        TMLR 2022, Sec. 3. Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search".
        ICLR 2019, Eq. 7–8.
    """
    if engine not in TASK_WEIGHT_ENGINES:
        raise ValueError(f"unknown task-weight engine {engine!r}; expected one of {TASK_WEIGHT_ENGINES}")
    if not alpha > 0 or not fd_epsilon > 0:
        raise ValueError(f"alpha and fd_epsilon must be > 0, got {alpha}, {fd_epsilon}")
    if inner_steps < 1 or (inner_steps > 1 and engine != "func"):
        raise ValueError(
            f"inner_steps must be >= 1, and > 1 only with engine 'func'; got {inner_steps} with {engine!r}"
        )
    if weights.dim() != 1:
        raise ValueError(f"weights must be a vector [T], got shape {list(weights.shape)}")
    if engine == "func":
        return _func(task_losses, outer_loss, params, weights, alpha, inner_steps)
    point, losses = lookahead_point(task_losses, params, weights, alpha)
    outer, v = _outer_direction(outer_loss, point)
    theta = {n: p.detach() for n, p in params.items()}
    if engine == "jvp":
        with fwAD.dual_level(), torch.no_grad():  # ⟨∇θ L_i(θ), v⟩ = d/dt L_i(θ + t v) at t = 0, every i at once
            dual = task_losses({n: fwAD.make_dual(theta[n], v[n]) for n in theta})
            tangent = fwAD.unpack_dual(dual).tangent
        alignments = torch.zeros_like(losses) if tangent is None else tangent.detach()
    else:  # Auto-λ's central difference along v, ε = ε₀ / ‖v‖
        norm = torch.sqrt(torch.stack([(vi.double() ** 2).sum() for vi in v.values()]).sum())
        eps = fd_epsilon / max(float(norm), 1e-12)
        with torch.no_grad():
            plus = task_losses({n: theta[n] + eps * v[n] for n in theta})
            minus = task_losses({n: theta[n] - eps * v[n] for n in theta})
        alignments = (plus - minus) / (2 * eps)
    return TaskWeightGradient(grad=-alpha * alignments, outer_loss=outer, alignments=alignments)  # Eq. (1)


def fused_task_weight_gradient(
    task_grads: Sequence[dict[str, Tensor | None]],
    outer_loss: OuterLoss,
    params: dict[str, Tensor],
    weights: Tensor,
    alpha: float,
) -> TaskWeightGradient:
    """∂/∂λ of the outer loss at θ⁺ = θ − α Σ_j λ_j g_j from given per-task gradients g_j = ∇θ L_j(θ).

    Eq. (1) exactly, ∂J/∂λ_i = −α ⟨g_i, v⟩ with v = ∇θ⁺ L_out(θ⁺): one forward and backward of the
    outer loss at θ⁺ and T inner products; no forward-mode pass, no Hessian. The fused Auto-λ step
    takes g_i from the real training step's own forward (so that the network's BatchNorm statistics
    advance once) and then updates the network by Σ_i λ_i' g_i with the new weights λ'.

    Args:
        task_grads: ``[T]`` dicts ``{name: g_i or None}`` (None: L_i does not use that tensor), the
            task order of ``weights``; every name of ``params``.
        outer_loss: ``params -> scalar``, the outer loss (on copies of the buffers).
        params: θ by name (not changed).
        weights: λ, float ``[T]``.
        alpha: α > 0, the look-ahead's step size.

    Returns:
        :class:`TaskWeightGradient` with ``alignments`` ⟨g_i, v⟩.

    Raises:
        ValueError: ``alpha`` not > 0, or ``weights`` not ``[T]`` like ``task_grads``.

    References:
        Liu, James, Davison, Johns. "Auto-Lambda: Disentangling Dynamic Task Relationships".
        TMLR 2022, Sec. 3.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if weights.shape != (len(task_grads),):
        raise ValueError(f"{weights.numel()} weights for {len(task_grads)} task gradients")
    lam = weights.detach()
    point = {}
    for n, p in params.items():
        step = [lam[i] * gi for i, gi in enumerate(g.get(n) for g in task_grads) if gi is not None]
        point[n] = p.detach() - alpha * torch.stack(step).sum(0) if step else p.detach()  # θ⁺
    outer, v = _outer_direction(outer_loss, point)
    alignments = torch.stack([gradient_dot(g, v, torch.zeros((), dtype=lam.dtype)) for g in task_grads]).to(lam.dtype)
    return TaskWeightGradient(grad=-alpha * alignments, outer_loss=outer, alignments=alignments)  # Eq. (1)


def _func(
    task_losses: TaskLosses, outer_loss: OuterLoss, params: dict[str, Tensor], weights: Tensor, alpha: float, steps: int
) -> TaskWeightGradient:
    """The exact ∂J/∂λ by double backward through ``steps`` look-ahead steps."""
    lam = weights.detach().clone().requires_grad_()
    with torch.enable_grad():
        fast = {n: p.detach().requires_grad_() for n, p in params.items()}
        for _ in range(steps):
            losses = task_losses(fast)
            if losses.shape != lam.shape:
                raise ValueError(f"{len(lam)} weights for {losses.numel()} task losses")
            g = _grads((lam * losses).sum(), fast, create_graph=True)
            fast = {n: fast[n] - alpha * g[n] for n in fast}  # θ^(j+1) = θ^(j) − α ∇θ Σ λ_i L_i
        outer = outer_loss(fast)
        (grad,) = torch.autograd.grad(outer, lam, allow_unused=True)
    return TaskWeightGradient(grad=torch.zeros_like(lam) if grad is None else grad.detach(), outer_loss=outer.detach())


@dataclass
class ImplicitGradient:
    """What :func:`implicit_combination_gradient` returns.

    Attributes:
        grad: dJ/dφ, one detached tensor per tensor of ``phi``.
        outer_loss: L_out(θ), a detached scalar.
    """

    grad: list[Tensor]
    outer_loss: Tensor


def implicit_combination_gradient(
    task_losses: TaskLosses,
    outer_loss: OuterLoss,
    params: dict[str, Tensor],
    combine: Callable[[Tensor], Tensor],
    phi: Sequence[Tensor],
    alpha: float,
    terms: int,
) -> ImplicitGradient:
    """The hypergradient of the outer loss with respect to the parameters φ of a loss combination,
    by implicit differentiation (AuxiLearn).

    With the inner loss L_T(θ, φ) = combine_φ(L_1(θ), ..., L_T(θ)) and θ*(φ) a stationary point of
    it, the implicit function theorem gives

        dL_out(θ*)/dφ = −∇θ L_out(θ*)ᵀ [∇²θ L_T]⁻¹ ∇²θφ L_T

    (Navon, Achituve, Maron, Chechik, Fetaya, "Auxiliary Learning by Implicit Differentiation",
    ICLR 2021, Sec. 3, Eq. 3; Lorraine, Vicol, Duvenaud, AISTATS 2020, Eq. 3), evaluated at the
    current θ, with [∇²θ L_T]⁻¹ ≈ α Σ_{j=0}^{K} (I − αH)^j, the truncated Neumann series of the
    ``"implicit"`` engine (:func:`maxl.meta.engines.implicit.neumann_terms`). So with
    v = Σ_j (I − αH)^j ∇θ L_out, the result is −α ∂/∂φ ⟨∇θ L_T(θ, φ), v⟩ (one more backward).

    Args:
        task_losses: ``params -> float [T]`` on the training batch (see :func:`task_weight_gradient`).
        outer_loss: ``params -> scalar`` on the auxiliary (held-out) batch.
        params: θ by name (not changed).
        combine: ``losses [T] -> scalar``, differentiable in ``phi`` (the auxiliary network).
        phi: the combination's parameters (tensors that require grad).
        alpha: α > 0, the series' step (it converges for 0 < αλ < 2 over H's eigenvalues λ).
        terms: K >= 0, the Neumann terms after the first.

    Returns:
        :class:`ImplicitGradient`.

    Raises:
        ValueError: ``alpha`` not > 0 or ``terms`` < 0.
        FloatingPointError: the series diverged (v not finite).
    """
    from maxl.meta.engines.implicit import neumann_terms

    if not alpha > 0 or terms < 0:
        raise ValueError(f"alpha must be > 0 and terms >= 0, got {alpha}, {terms}")
    theta = {n: p.detach().requires_grad_() for n, p in params.items()}
    leaves = list(theta.values())
    with torch.enable_grad():
        outer = outer_loss(theta)
        g = list(_grads(outer, theta).values())  # ∇θ L_out(θ)
        inner = combine(task_losses(theta))  # L_T(θ, φ)
        grads = torch.autograd.grad(inner, leaves, create_graph=True, allow_unused=True)
        grads = tuple(torch.zeros_like(t) if gi is None else gi for gi, t in zip(grads, leaves))
        *_, v = neumann_terms(grads, leaves, g, alpha, terms)
        if not all(torch.isfinite(vi).all() for vi in v):
            raise FloatingPointError(
                f"the Neumann series diverged (alpha {alpha}, {terms} terms): lower alpha or the number of terms"
            )
        used = [(gi, vi) for gi, vi in zip(grads, v) if gi.requires_grad]
        mixed = torch.autograd.grad(
            [gi for gi, _ in used], list(phi), grad_outputs=[vi for _, vi in used], allow_unused=True
        )  # ∂/∂φ ⟨∇θ L_T, v⟩
    hyper = [torch.zeros_like(p) if m is None else -alpha * m.detach() for p, m in zip(phi, mixed)]
    return ImplicitGradient(grad=hyper, outer_loss=outer.detach())
