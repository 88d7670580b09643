"""The ``"implicit"`` engine (``order="implicit"``): the generator's hypergradient by implicit
differentiation, with the inverse Hessian as a truncated Neumann series.

A one-step look-ahead sees what the labels do to the primary loss after one step of learning;
their benefit may appear only after many (the horizon problem of short-horizon meta-learning,
Wu, Ren, Liao, Grosse, ICLR 2018). The implicit function theorem takes the other limit: at a
stationary point θ1*(θ2) of the inner loss L_T = L_pri + L_aux(·, g(θ2)) (+ L_x),

    dL_pri(θ1*)/dθ2 = −∇θ1 L_pri(x_o)ᵀ [∇²θ1 L_T]⁻¹ ∇²θ1θ2 L_aux

(Lorraine, Vicol, Duvenaud, "Optimizing Millions of Hyperparameters by Implicit
Differentiation", AISTATS 2020, Eq. 3; applied to auxiliary-task parameters by Navon et al.,
"Auxiliary Learning by Implicit Differentiation" (AuxiLearn), ICLR 2021, Sec. 3). The inverse
Hessian is replaced by K + 1 terms of its Neumann series, H⁻¹ ≈ α Σ_{j=0}^{K} (I − αH)^j
(Lorraine et al., Eq. 5 and Algorithm 3), so that with

    v = Σ_{j=0}^{K} (I − αH)^j ∇θ1 L_pri(f(x_o; θ1), y_o)

the look-ahead term of ∇θ2 J is −α ∂/∂θ2 ⟨∇θ1 L_aux(θ1, g(θ2)), v⟩, which the ``"jvp"``
engine's surrogate builds from one Jacobian-vector product. Read as dynamics, v is what K + 1
steps of gradient descent of step α on the quadratic model of L_T at θ1 carry forward: the
hypergradient of a (K + 1)-step horizon, linearised (Lorraine et al., Sec. 3). K = 0 gives
v = ∇θ1 L_pri(θ1), the one-step look-ahead to first order in α. Each further term costs one
Hessian-vector product of L_T, a backward through the create_graph gradient of L_T on the inner
batch (its graph is built once); the run can amortise it by updating the generator every few
steps (``TrainConfig.gen_every``), as AuxiLearn does.

H is taken on the inner batch with the generator's labels detached; v is evaluated at θ1, not
at a look-ahead point, and the recorded outer loss is L_pri(f(x_o; θ1), y_o). The series
converges for 0 < αλ < 2 over H's eigenvalues λ, and a negative eigenvalue (a non-convex inner
loss) makes its terms grow for any α; it is truncated, not iterated to convergence.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from maxl.meta.engines.jvp import JvpEngine
from maxl.meta.lookahead import multitask_loss, primary_gradient, zeros_for_unused
from maxl.meta.registry import register_engine

__all__ = ["ImplicitEngine", "neumann_sums", "neumann_terms"]


class ImplicitEngine(JvpEngine):
    """Implicit-differentiation hypergradient, [∇²θ1 L_T]⁻¹ by K + 1 Neumann terms
    (``MetaConfig.neumann_terms`` = K).

    References:
        Lorraine, Vicol, Duvenaud. "Optimizing Millions of Hyperparameters by Implicit
        Differentiation". AISTATS 2020, Eq. 3, 5, Algorithm 3.
        Navon, Achituve, Maron, Chechik, Fetaya. "Auxiliary Learning by Implicit
        Differentiation". ICLR 2021, Sec. 3.
    """

    name = "implicit"
    order = "implicit"
    needs_double_backward = True  # the Hessian-vector products
    uses_inner_gradient = False  # it builds its own create_graph gradient of L_T for H

    def direction(self, call, call_outer, names, theta, inner_grads, y, y_o, target, loss_fn, extra, config):
        """L_pri(f(x_o; θ1), y_o) and v = Σ_{j=0}^{K} (I − αH)^j ∇θ1 L_pri(f(x_o; θ1), y_o),
        H = ∇²θ1 L_T on the inner batch; args as :meth:`DetachedLookaheadEngine.direction`.

        Raises:
            FloatingPointError: v is not finite (the series diverged: α too large for H).
        """
        leaves = [t.detach().requires_grad_() for t in theta]
        outer, g_o = primary_gradient(call_outer, leaves, y_o, loss_fn)  # ∇θ1 L_pri(x_o)
        *_, v = neumann_sums(call, names, leaves, y, target, loss_fn, extra, g_o, config.inner_lr, config.neumann_terms)
        if not all(torch.isfinite(vi).all() for vi in v):
            raise FloatingPointError(
                f"the Neumann series of the implicit engine diverged (inner_lr α = "
                f"{config.inner_lr}, neumann_terms K = {config.neumann_terms}): its terms "
                "grow where |1 − αλ| > 1 for an eigenvalue λ of the Hessian (λ > 2/α, or "
                "λ < 0 for any α); lower α or K"
            )
        return outer, v


def neumann_sums(
    call,
    names: list[str],
    leaves: list[Tensor],
    y: Tensor,
    target: Tensor,
    loss_fn,
    extra,
    g: list[Tensor],
    alpha: float,
    terms: int,
) -> Iterator[list[Tensor]]:
    """The partial sums v_k = Σ_{j=0}^{k} (I − αH)^j g for k = 0, 1, ..., ``terms``, H = ∇²θ1 L_T.

    L_T = L_pri(f(x; θ1), y) + L_aux(f(x; θ1), target) (+ L_x) on the inner batch, at θ1 = ``leaves``;
    one Hessian-vector product per term, all through one create_graph gradient of L_T (Lorraine,
    Vicol, Duvenaud, AISTATS 2020, Algorithm 3).

    Args:
        call: the functional forward on the inner batch x.
        names: the trainable parameters' names (for ``extra``).
        leaves: θ1, tensors that require grad, one per trainable parameter.
        y: primary labels int64 ``[B]``.
        target: the auxiliary targets float ``[B, K]`` (used detached).
        loss_fn: ``loss(logits, target) -> scalar``.
        extra: optional L_x(params).
        g: the series' vector (∇θ1 of the outer loss), one tensor per parameter.
        alpha: the series' step α.
        terms: K.

    Yields:
        v_0 = g, v_1, ..., v_K, each a list of detached tensors.
    """
    if not terms:
        yield list(g)
        return
    with torch.enable_grad():
        inner = multitask_loss(call(leaves), y, target.detach(), loss_fn)
        if extra is not None:
            inner = inner + extra(dict(zip(names, leaves)))
        grads = torch.autograd.grad(inner, leaves, create_graph=True)  # ∇θ1 L_T, its graph kept
        yield from neumann_terms(grads, leaves, g, alpha, terms)


def neumann_terms(
    grads: Sequence[Tensor], leaves: Sequence[Tensor], g: Sequence[Tensor], alpha: float, terms: int
) -> Iterator[list[Tensor]]:
    """The partial sums v_k = Σ_{j=0}^{k} (I − αH)^j g, k = 0..``terms``, of any inner loss L_T whose
    gradient ``grads`` = ∇ L_T at ``leaves`` was taken with ``create_graph=True`` (H = ∇² L_T: one
    Hessian-vector product per term; Lorraine, Vicol, Duvenaud, AISTATS 2020, Algorithm 3).

    Yields:
        v_0 = g, v_1, ..., each a list of detached tensors shaped as ``leaves``.
    """
    p, v = list(g), list(g)
    yield v
    for _ in range(terms):  # p ← (I − αH) p, v ← v + p
        hp = zeros_for_unused(
            torch.autograd.grad(grads, list(leaves), grad_outputs=p, retain_graph=True, allow_unused=True), leaves
        )
        p = [(pi - alpha * hi).detach() for pi, hi in zip(p, hp)]
        v = [vi + pi for vi, pi in zip(v, p)]
        yield v


IMPLICIT = register_engine(ImplicitEngine())
