"""Auto-λ: task weights learnt by the meta-gradient of the primary loss through a look-ahead step.

The network trains on L = Σ_i λ_i L_i (primary task included, λ_i ≥ 0, initialised to 0.1). At
every meta step the weights take one Adam step along ∂/∂λ L_pri(θ⁺; held-out batch) with
θ⁺ = θ − α ∇θ Σ_i λ_i L_i on the training batch (auxiliary-learning mode: only the primary task
in the outer loss), and are then clipped at 0. ∂/∂λ_i is −α ⟨∇θ L_i(θ), ∇θ⁺ L_pri(θ⁺)⟩: a task whose
gradient points where the primary loss on unseen images falls gains weight
(:mod:`maxl.meta.task_weights`; engines ``"jvp"``, exact and the default, ``"func"``, exact, and
``"fd"``, the reference's finite-difference Hessian-vector product).

Differences from the reference implementation (lorenmt/auto-lambda): the look-ahead is a plain
gradient step of size α (the reference steps its copy of the network with the SGD optimiser's
momentum and weight decay), and the weights are clipped at 0 after each step.

References:
    Liu, James, Davison, Johns. "Auto-Lambda: Disentangling Dynamic Task Relationships". TMLR
    2022, Sec. 3–4. Kingma, Ba. "Adam: A Method for Stochastic Optimization". ICLR 2015, Alg. 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from maxl.meta.task_weights import (
    TASK_WEIGHT_ENGINES,
    TaskWeightGradient,
    fused_task_weight_gradient,
    task_weight_gradient,
)

from .base import Weighting

__all__ = ["AutoLambda", "WEIGHT_OPTIMIZERS"]

#: the steps a meta-learned weight can take: Adam's (the reference's) or a plain gradient step
WEIGHT_OPTIMIZERS = ("adam", "sgd")


class AutoLambda(Weighting):
    """Auto-λ (Liu et al., TMLR 2022): weights λ ``[T]`` (``task_names`` order) learnt by Adam on
    the look-ahead meta-gradient of the primary loss on a held-out batch.

    λ (the parameter ``lam``) is a meta-parameter: ``learner.meta_parameters()`` holds it and
    ``learner.network_parameters()`` does not. Once per meta step call
    ``learner.weight_step(x, y, (x_val, y_val), alpha=lr)``. Adam's moments are buffers, so
    that a ``state_dict`` holds them.

    Args:
        lr: Adam's learning rate for λ (> 0).
        init: initial λ_i of every task (≥ 0), the reference's 0.1.
        engine: one of :data:`maxl.meta.task_weights.TASK_WEIGHT_ENGINES`.
        fd_epsilon: ε₀ of the ``"fd"`` engine.
        betas: Adam's (β1, β2).
        optimizer: the weights' step, one of :data:`WEIGHT_OPTIMIZERS`: ``"adam"`` (the reference's;
            each weight moves by about ``lr`` per step whatever its gradient's size) or ``"sgd"``
            (λ ← λ − lr · ∂L/∂λ: a task whose signal is stronger moves faster).
        fused: a trainer (:class:`maxl.train.step.StepPath`) takes the weight step from the real
            training step's forward and per-task backward passes instead of a look-ahead of its own
            (:func:`maxl.meta.task_weights.fused_task_weight_gradient`: the same λ update as the
            exact engines, cheaper; default). Used with the exact engines ``"jvp"`` and ``"func"``;
            ``"fd"`` (an approximation chosen on purpose) always runs its own look-ahead.

    Raises:
        ValueError: ``lr`` not > 0 (or NaN), ``init`` < 0, an unknown engine or optimizer.
    """

    meta_learned = True
    OPTIONS = {
        "lr": (float, "Adam's learning rate for the weights"),
        "init": (float, "initial weight of every task"),
        "engine": (str, f"meta-gradient engine, one of {', '.join(TASK_WEIGHT_ENGINES)}"),
        "fd_epsilon": (float, "the fd engine's step ε0 (the difference step is ε0 / ‖v‖)"),
        "fused": (bool, "take the weight step from the training step's own forward/backward (exact engines)"),
        "optimizer": (str, "the weights' step: adam (default) or sgd (plain gradient step, lr × gradient)"),
    }
    adam_m: Tensor  # buffers made at bind: Adam's moments, its step count, λ after the last step
    adam_v: Tensor
    adam_steps: Tensor
    lam_after_step: Tensor

    def __init__(
        self,
        lr: float = 3e-4,
        init: float = 0.1,
        engine: str = "jvp",
        fd_epsilon: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        fused: bool = True,
        optimizer: str = "adam",
    ):
        super().__init__()
        if not lr > 0 or math.isinf(lr):
            raise ValueError(f"Auto-λ's weight learning rate must be > 0 and finite, got {lr}")
        if not init >= 0:
            raise ValueError(f"Auto-λ's initial weight must be >= 0, got {init}")
        if engine not in TASK_WEIGHT_ENGINES:
            raise ValueError(f"unknown task-weight engine {engine!r}; expected one of {TASK_WEIGHT_ENGINES}")
        self.lr, self.init, self.engine, self.fd_epsilon, self.betas = float(lr), float(init), engine, fd_epsilon, betas
        self.fused = bool(fused)
        if optimizer not in WEIGHT_OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {optimizer!r} for the task weights; expected one of {WEIGHT_OPTIMIZERS}"
            )
        self.optimizer = optimizer
        self.lam: nn.Parameter | None = None

    def _build(self) -> None:
        n = len(self.task_names)
        self.lam = nn.Parameter(torch.full((n,), self.init))
        self.register_buffer("adam_m", torch.zeros(n))  # first moment
        self.register_buffer("adam_v", torch.zeros(n))  # second moment
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("lam_after_step", self.lam.detach().clone())  # to tell a foreign change

    def loss_weights(self) -> dict[str, Tensor]:
        assert self.lam is not None, "bind() first"
        return {n: self.lam[i] for i, n in enumerate(self.task_names)}

    def meta_parameters(self) -> list[nn.Parameter]:
        return [self.lam] if self.lam is not None else []

    def meta_gradient(self, learner, images, labels, held_out, *, alpha: float, index=None) -> TaskWeightGradient:
        """∂/∂λ L_pri(θ⁺) on the held-out batch (:func:`maxl.meta.task_weights.task_weight_gradient`).

        Raises:
            ValueError: λ changed since the last meta step (the main optimiser holds it).
        """
        self._check_untouched()
        assert self.lam is not None  # _check_untouched: bound
        task_losses, outer_loss, params = learner.task_weight_problem(images, labels, held_out, index=index)
        return task_weight_gradient(
            task_losses, outer_loss, params, self.lam.detach(), alpha, engine=self.engine, fd_epsilon=self.fd_epsilon
        )

    def fuses_with_step(self) -> bool:
        """True with ``fused`` and an exact engine, for Auto-λ itself (a subclass with its own
        meta-gradient has its own fused form, or none)."""
        return self.fused and self.engine != "fd" and type(self).meta_gradient is AutoLambda.meta_gradient

    def fused_meta_gradient(self, learner, task_grads, held_out, *, alpha: float, losses=None) -> TaskWeightGradient:
        """∂/∂λ L_pri(θ⁺) on the held-out batch from the training step's per-task gradients
        ``task_grads`` (:meth:`auxtasks.AuxiliaryLearner.task_gradients`), θ⁺ = θ − α Σ λ_j g_j:
        :func:`maxl.meta.task_weights.fused_task_weight_gradient`, equal to :meth:`meta_gradient`
        (the step's ``losses`` are not needed: the outer loss is on the held-out batch).

        Raises:
            ValueError: λ changed since the last meta step (the main optimiser holds it).
        """
        self._check_untouched()
        assert self.lam is not None  # _check_untouched: bound
        outer_loss, params = learner.held_out_problem(held_out)
        return fused_task_weight_gradient(task_grads, outer_loss, params, self.lam.detach(), alpha)

    def _check_untouched(self) -> None:
        """Raise ValueError if λ changed since the last meta step (the main optimiser holds it)."""
        assert self.lam is not None, "bind() first"
        if not torch.equal(self.lam.detach(), self.lam_after_step):
            raise ValueError(
                f"{type(self).__name__}'s weights changed outside their meta step: the main optimiser holds them "
                "(a meta-parameter); build it from learner.network_parameters(), not learner.parameters()"
            )

    @torch.no_grad()
    def apply_gradient(self, grad: Tensor) -> None:
        """One step of λ along ``grad`` float ``[T]`` (Adam's, or with ``optimizer="sgd"``
        λ ← λ − lr · grad), then λ ← max(λ, 0).

        Raises:
            FloatingPointError: ``grad`` holds NaN or Inf (λ is left as it was).
        """
        assert self.lam is not None, "bind() first"
        if not torch.isfinite(grad).all():
            raise FloatingPointError(f"non-finite meta-gradient of the task weights {self.task_names}: {grad.tolist()}")
        grad = grad.to(self.lam)
        if self.optimizer == "sgd":
            update = self.lr * grad
        else:
            b1, b2 = self.betas
            self.adam_steps += 1
            t = int(self.adam_steps)
            self.adam_m.mul_(b1).add_(grad, alpha=1 - b1)
            self.adam_v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            m_hat, v_hat = self.adam_m / (1 - b1**t), self.adam_v / (1 - b2**t)
            update = self.lr * m_hat / (v_hat.sqrt() + 1e-8)
        self.lam.sub_(update).clamp_(min=0.0)  # λ ≥ 0
        self.lam_after_step.copy_(self.lam)
        self.lam.grad = None

    def extra_repr(self) -> str:
        return (
            f"lr={self.lr}, init={self.init}, engine={self.engine!r}, fused={self.fused}, optimizer={self.optimizer!r}"
        )
