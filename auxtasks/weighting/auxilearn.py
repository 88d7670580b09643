"""AuxiLearn: an auxiliary network that combines the task losses, trained by implicit differentiation.

The network trains on L_T(θ, φ) = h_φ(L_pri, L_aux,1, ..., L_aux,n), a monotone network h_φ of the
task losses (linear: h = Σ_i w_i L_i with w ≥ 0; nonlinear: Linear → Softplus → Linear with
non-negative weights), and φ learns from the primary loss on an auxiliary split of the training
images by the implicit function theorem,

    dL_pri^aux(θ*)/dφ = −∇θ L_pri^auxᵀ [∇²θ L_T]⁻¹ ∇²θφ L_T,

the inverse Hessian by a truncated Neumann series (:func:`maxl.meta.task_weights.implicit_combination_gradient`,
which shares the series with the ``"implicit"`` engine). φ takes Adam steps and its weights are
clipped at 0 after each (the monotone networks of the paper).

Differences from the paper: h_φ combines the batch's task losses, not each image's losses (the
tasks here return a batch mean; for the linear network the two are the same), and the primary
loss is one of its inputs.

References:
    Navon, Achituve, Maron, Chechik, Fetaya. "Auxiliary Learning by Implicit Differentiation".
    ICLR 2021, Sec. 3 (Eq. 3, the Neumann approximation) and Sec. 4 (linear and nonlinear
    auxiliary networks). Lorraine, Vicol, Duvenaud. AISTATS 2020, Algorithm 3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from maxl.meta.task_weights import ImplicitGradient, implicit_combination_gradient

from .base import Weighting

__all__ = ["AuxiLearn", "AuxiLearnNonlinear"]


class AuxiLearn(Weighting):
    """AuxiLearn (Navon et al., ICLR 2021) with a linear auxiliary network h(L) = Σ_i w_i L_i, w ≥ 0
    from ``init``; φ is a meta-parameter (``learner.meta_parameters()``), learnt by
    ``learner.weight_step(x, y, (x_aux, y_aux), alpha=lr)`` on a batch of the auxiliary split.

    Args:
        lr: Adam's learning rate for φ (> 0).
        terms: K, the Neumann terms after the first (>= 0).
        hidden: the nonlinear network's hidden width (>= 1).
        init: the linear network's initial weights (>= 0).

    Raises:
        ValueError: ``lr`` not > 0, ``terms`` < 0, ``hidden`` < 1, ``init`` < 0.
    """

    meta_learned = True
    nonlinear = False
    OPTIONS = {
        "lr": (float, "Adam's learning rate for the auxiliary network"),
        "terms": (int, "Neumann terms of the inverse Hessian after the first"),
        "hidden": (int, "the nonlinear auxiliary network's hidden width"),
        "init": (float, "the linear auxiliary network's initial weights"),
    }
    adam_m: Tensor  # buffers made at bind: Adam's moments over φ flattened, its steps, φ after the last step
    adam_v: Tensor
    adam_steps: Tensor
    phi_after_step: Tensor

    def __init__(self, lr: float = 3e-4, terms: int = 3, hidden: int = 10, init: float = 1.0):
        super().__init__()
        if not lr > 0 or math.isinf(lr) or terms < 0 or hidden < 1 or not init >= 0:
            raise ValueError(
                "AuxiLearn needs lr > 0 and finite, terms >= 0, hidden >= 1, init >= 0; "
                f"got {lr}, {terms}, {hidden}, {init}"
            )
        self.lr, self.terms, self.hidden, self.init = float(lr), int(terms), int(hidden), float(init)
        self.net: nn.Module | None = None
        self._last: Tensor | None = None  # the last batch's task losses, for the logged weights

    def _build(self) -> None:
        n = len(self.task_names)
        if self.nonlinear:
            first, second = nn.Linear(n, self.hidden), nn.Linear(self.hidden, 1)
            with torch.no_grad():  # h ≈ softplus(Σ L_i): every task weighted about 1 at the start
                first.weight.uniform_(0.9, 1.1)
                first.bias.zero_()
                second.weight.fill_(1.0 / self.hidden)
                second.bias.zero_()
            self.net = nn.Sequential(first, nn.Softplus(), second)
        else:
            self.net = nn.Linear(n, 1, bias=False)
            with torch.no_grad():
                self.net.weight.fill_(self.init)
        size = sum(p.numel() for p in self.net.parameters())
        self.register_buffer("adam_m", torch.zeros(size))
        self.register_buffer("adam_v", torch.zeros(size))
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("phi_after_step", self._phi().clone())

    def _phi(self) -> Tensor:
        assert self.net is not None, "bind() first"
        return torch.cat([p.detach().reshape(-1) for p in self.net.parameters()])

    def _h(self, losses: Tensor) -> Tensor:
        """h_φ of the task losses float ``[T]``: a scalar."""
        assert self.net is not None, "bind() first"
        return self.net(losses.unsqueeze(0)).reshape(())

    def combine(self, losses) -> Tensor:
        self._check(losses)
        stacked = torch.stack([losses[n] for n in self.task_names])
        self._last = stacked.detach()
        return self._h(stacked)

    def loss_weights(self) -> dict[str, Tensor]:
        """∂h/∂L_i at the last batch's losses (at L = 1 before any): the weights, for the linear network."""
        at = self._last if self._last is not None else torch.ones(len(self.task_names))
        at = at.to(self._phi()).requires_grad_()
        with torch.enable_grad():
            (slope,) = torch.autograd.grad(self._h(at), at)
        return {n: slope[i].detach() for i, n in enumerate(self.task_names)}

    def meta_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters()) if self.net is not None else []

    def meta_gradient(self, learner, images, labels, held_out, *, alpha: float, index=None) -> ImplicitGradient:
        """dL_pri(auxiliary batch)/dφ by implicit differentiation with ``terms`` Neumann terms of
        step α (the network's learning rate).

        Raises:
            ValueError: φ changed since the last step (the main optimiser holds it).
        """
        if not torch.equal(self._phi(), self.phi_after_step):
            raise ValueError(
                f"{type(self).__name__}'s auxiliary network changed outside its meta step: the main optimiser "
                "holds it (a meta-parameter); build it from learner.network_parameters(), not learner.parameters()"
            )
        task_losses, outer_loss, params = learner.task_weight_problem(images, labels, held_out, index=index)
        return implicit_combination_gradient(
            task_losses, outer_loss, params, self._h, self.meta_parameters(), alpha, self.terms
        )

    @torch.no_grad()
    def apply_gradient(self, grad: list[Tensor]) -> None:
        """One Adam step of φ along ``grad`` (one tensor per parameter of the auxiliary network),
        then every weight (not the biases) clipped at 0.

        Raises:
            FloatingPointError: ``grad`` holds NaN or Inf (φ is left as it was).
        """
        assert self.net is not None, "bind() first"
        flat = torch.cat([g.reshape(-1) for g in grad]).to(self.adam_m)
        if not torch.isfinite(flat).all():
            raise FloatingPointError(f"non-finite hypergradient of {type(self).__name__}'s auxiliary network")
        b1, b2 = 0.9, 0.999
        self.adam_steps += 1
        t = int(self.adam_steps)
        self.adam_m.mul_(b1).add_(flat, alpha=1 - b1)
        self.adam_v.mul_(b2).addcmul_(flat, flat, value=1 - b2)
        step = self.lr * (self.adam_m / (1 - b1**t)) / ((self.adam_v / (1 - b2**t)).sqrt() + 1e-8)
        offset = 0
        for name, p in self.net.named_parameters():
            p.sub_(step[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
            if name.endswith("weight"):
                p.clamp_(min=0.0)  # monotone: every task's loss can only add to h
            p.grad = None
        self.phi_after_step.copy_(self._phi())

    def extra_repr(self) -> str:
        return f"lr={self.lr}, terms={self.terms}, nonlinear={self.nonlinear}"


class AuxiLearnNonlinear(AuxiLearn):
    """AuxiLearn with the nonlinear auxiliary network h = Linear(T, hidden) → Softplus →
    Linear(hidden, 1), weights ≥ 0 (Navon et al., ICLR 2021, Sec. 4)."""

    linear_in_losses = False  # the update is not ∇θ Σ w_i L_i with fixed w
    nonlinear = True
