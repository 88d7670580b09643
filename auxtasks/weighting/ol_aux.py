"""OL-AUX: auxiliary-task weights from the alignment of their gradients with the primary one,
accumulated over N steps (a first-order N-step look-ahead).

After N steps θ_t → θ_{t+N} of L = L_pri + Σ_k w_k L_aux,k with step size α, the first-order
change of the primary loss with respect to the weights is

    ∂L_pri(θ_{t+N}) / ∂w_k ≈ −α Σ_{j=t}^{t+N−1} ∇θ L_pri(θ_j)ᵀ ∇θ L_aux,k(θ_j)

(Lin, Baweja, Kantor, Held, "Adaptive Auxiliary Task Weighting for Reinforcement Learning",
NeurIPS 2019, Sec. 3, Eq. 4–6, Algorithm 1): at every training step the inner products on the
training batch are accumulated, and every N steps the weights take one step along the sum. A task
whose gradient keeps pointing where the primary loss falls gains weight.

The inner products need only the per-task gradients g_i = ∇θ L_i(θ) on the training batch, which
the training step computes anyway: with ``fused`` (the default), a trainer
(:class:`maxl.train.step.StepPath`) takes them from the step's own forward and per-task backward
passes (:meth:`OLAux.fused_meta_gradient`) instead of a forward and T backward passes of OL-AUX's
own (:meth:`OLAux.meta_gradient`); the same alignments, the same weights.

Differences from the paper: the step is Adam's by default (as Auto-λ's,
:class:`auxtasks.weighting.AutoLambda`, so that one weight learning rate means the same for every
meta-learned weighting; ``optimizer="sgd"`` takes the paper's plain step) and the weights are
clipped at 0; the primary weight stays 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from maxl.meta.task_weights import TaskWeightGradient, gradient_dot

from .auto_lambda import AutoLambda

__all__ = ["OLAux"]


class OLAux(AutoLambda):
    """OL-AUX (Lin et al., NeurIPS 2019): auxiliary weights (from 1) learnt every ``horizon``
    steps from the gradient alignments of the steps between.

    Call ``learner.weight_step(x, y, None, alpha=lr)`` at every training step (the held-out
    batch is not used: OL-AUX learns from the training batch).

    Args:
        lr: Adam's learning rate for the weights (> 0).
        horizon: N, the steps whose alignments make one weight update (>= 1).
        init: initial weight of every auxiliary task (>= 0); the primary task's is 1 throughout.
        fused: a trainer takes the alignments from the training step's own per-task gradients
            (:meth:`fused_meta_gradient`; no forward or backward of OL-AUX's own; default) instead
            of :meth:`meta_gradient`.
        optimizer: ``"adam"`` (default: every weight moves by about ``lr`` per update whatever
            its alignment's size) or ``"sgd"`` (the paper's w ← w − lr · Σ: a task whose gradient
            aligns more strongly with the primary one gains weight faster).

    Raises:
        ValueError: ``lr`` not > 0, ``horizon`` < 1, ``init`` < 0, an unknown ``optimizer``.
    """

    uses_held_out = False
    OPTIONS = {
        "lr": (float, "Adam's learning rate for the auxiliary weights"),
        "horizon": (int, "N, the steps whose gradient alignments make one update"),
        "init": (float, "initial weight of every auxiliary task"),
        "fused": (bool, "take the alignments from the training step's own forward/backward"),
        "optimizer": (str, "the weights' step: adam (default) or sgd (the paper's plain gradient step)"),
    }
    accumulated: Tensor  # buffers made at bind: the horizon's sum of −α⟨∇L_pri, ∇L_i⟩ and its steps
    accumulated_steps: Tensor

    def __init__(
        self, lr: float = 3e-4, horizon: int = 5, init: float = 1.0, fused: bool = True, optimizer: str = "adam"
    ):
        super().__init__(lr=lr, init=init, fused=fused, optimizer=optimizer)
        if horizon < 1:
            raise ValueError(f"OL-AUX's horizon must be >= 1 steps, got {horizon}")
        self.horizon = int(horizon)

    def _build(self) -> None:
        super()._build()
        assert self.lam is not None  # made by super()._build
        with torch.no_grad():
            self.lam[0] = 1.0  # the primary task's weight is not learnt
            self.lam_after_step.copy_(self.lam)
        self.register_buffer("accumulated", torch.zeros(len(self.task_names)))  # Σ_j over the horizon
        self.register_buffer("accumulated_steps", torch.zeros((), dtype=torch.int64))

    def meta_gradient(self, learner, images, labels, held_out, *, alpha: float, index=None) -> TaskWeightGradient:
        """−α ⟨∇θ L_pri(θ), ∇θ L_i(θ)⟩ for every task on the training batch (one backward each;
        ``held_out`` is not used): ``grad`` float ``[T]`` (0 for the primary task), ``outer_loss``
        the primary loss of the batch, ``alignments`` the inner products.

        Raises:
            ValueError: the weights changed since the last step (the main optimiser holds them).
        """
        self._check_untouched()
        task_losses, _, params = learner.task_weight_problem(images, labels, (images, labels), index=index)
        theta = {n: p.detach().requires_grad_() for n, p in params.items()}
        with torch.enable_grad():
            losses = task_losses(theta)
            grads = [
                torch.autograd.grad(losses[i], list(theta.values()), retain_graph=True, allow_unused=True)
                for i in range(len(losses))
            ]
        return _alignment_gradient([dict(zip(theta, g)) for g in grads], losses[0], alpha)

    def fuses_with_step(self) -> bool:
        """``fused``: the trainer calls :meth:`fused_meta_gradient` with the training step's own
        per-task gradients (OL-AUX has no engine: its alignments are inner products of those)."""
        return self.fused

    def fused_meta_gradient(self, learner, task_grads, held_out, *, alpha: float, losses=None) -> TaskWeightGradient:
        """:meth:`meta_gradient` from the training step's per-task gradients ``task_grads``
        (:meth:`auxtasks.AuxiliaryLearner.task_gradients` of the step's forward: the same θ and
        batch) and its task losses ``losses`` (``{name: scalar}``, ``AuxOutput.losses``; the
        ``outer_loss`` is its primary loss), with no forward or backward of its own; ``held_out``
        and ``learner`` are not used.

        Raises:
            ValueError: the weights changed since the last step (the main optimiser holds them),
                or ``losses`` is None.
        """
        self._check_untouched()
        if losses is None:
            raise ValueError("OL-AUX's fused step needs the training step's task losses (losses=out.losses)")
        return _alignment_gradient(task_grads, losses[self.task_names[0]], alpha)

    @torch.no_grad()
    def apply_gradient(self, grad: Tensor) -> None:
        """Add ``grad`` float ``[T]`` to the horizon's sum; at its N-th step, one Adam step of the
        auxiliary weights along the sum (then clipped at 0), and the sum restarts.

        Raises:
            FloatingPointError: ``grad`` holds NaN or Inf.
        """
        if not torch.isfinite(grad).all():
            raise FloatingPointError(f"non-finite OL-AUX alignment of the tasks {self.task_names}: {grad.tolist()}")
        self.accumulated.add_(grad.to(self.accumulated))
        self.accumulated_steps += 1
        if int(self.accumulated_steps) < self.horizon:
            return
        total = self.accumulated.clone()
        total[0] = 0.0
        self.accumulated.zero_()
        self.accumulated_steps.zero_()
        super().apply_gradient(total)

    def extra_repr(self) -> str:
        return (
            f"lr={self.lr}, horizon={self.horizon}, init={self.init}, fused={self.fused}, optimizer={self.optimizer!r}"
        )


def _alignment_gradient(grads, primary_loss: Tensor, alpha: float) -> TaskWeightGradient:
    """Eq. 6's term of one step from per-task gradients ``grads`` (``[T]`` dicts by parameter name,
    None where L_i does not reach a parameter: 0 in the inner product), primary first: ``grad``
    −α ⟨g_pri, g_i⟩ (0 for the primary task), ``outer_loss`` the primary loss, ``alignments``."""
    primary = grads[0]
    zero = torch.zeros((), dtype=primary_loss.dtype, device=primary_loss.device)
    dots = [gradient_dot(g, primary, zero) for g in grads]
    alignments = torch.stack(dots).to(primary_loss.dtype).detach()
    grad = -alpha * alignments  # Eq. 6, one term of the sum over the horizon
    grad[0] = 0.0
    return TaskWeightGradient(grad=grad, outer_loss=primary_loss.detach(), alignments=alignments)
