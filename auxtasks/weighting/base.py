"""The base classes of the loss weightings.

A weighting turns the per-task losses ``{"primary": L_0, "rotation": L_1, ...}`` of a batch
into the update of the network. Two kinds:

* :class:`Weighting`: a weighted sum ``L = Σ_i w_i L_i`` (weights fixed, learnt, or set
  from the loss history); the update is the gradient of ``L``.
* :class:`GradientWeighting`: acts on the gradients of the *shared* parameters. It takes the
  gradient ``g_i = ∇_shared L_i`` of every task, combines them into one vector (projecting,
  dropping or scaling them), and writes it into the shared parameters' ``.grad``; the
  task-specific parameters (the heads) get the gradient of ``Σ_i w_i L_i``, that is each
  head the gradient of its own loss.

The learner calls :meth:`Weighting.bind` once with the task names, ``"primary"`` first, so
that parameters and buffers that depend on the number of tasks exist before the user builds
the optimiser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, cast

import torch
from torch import Tensor, nn

__all__ = ["Weighting", "GradientWeighting", "flat_gradients", "PRIMARY"]

#: Name of the primary task's loss.
PRIMARY = "primary"


def flat_gradients(loss: Tensor, params: Sequence[Tensor], retain_graph: bool = True) -> Tensor:
    """``∇_params loss`` as one flat vector (zeros for parameters the loss does not use)."""
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


class Weighting(nn.Module):
    """A weighted sum of the task losses, ``L = Σ_i w_i L_i``.

    Subclasses implement :meth:`loss_weights` (and, if they learn, add terms in
    :meth:`combine`); may create parameters in :meth:`_build` and keep a loss history
    through :meth:`end_epoch`.

    Attributes:
        task_names: the task names in order, ``"primary"`` first (set by :meth:`bind`).
        likelihoods: ``{name: "softmax" or "gaussian"}`` (see :data:`auxtasks.task.LIKELIHOODS`).
    """

    #: True for weightings that act on the gradients of the shared parameters.
    uses_gradients: bool = False
    #: True for weightings that read each task's performance (:meth:`observe`).
    uses_performance: bool = False
    #: hyperparameters settable by name, ``{name: (type, help)}`` (``--weighting-option``; the
    #: defaults are ``__init__``'s; see :mod:`auxtasks.weighting.options`).
    OPTIONS: ClassVar[dict[str, tuple[type, str]]] = {}
    #: True for weightings whose weights are meta-parameters, learnt by their own outer step
    #: (:meth:`meta_parameters`, and ``meta_step(learner, ...)``; Auto-λ, OL-AUX, AuxiLearn).
    meta_learned: bool = False
    #: For a meta-learned weighting: True if its outer loss is on held-out images (Auto-λ,
    #: AuxiliaryLearn), False if it learns from the training batch alone (OL-AUX).
    uses_held_out: bool = True
    #: True if the update is ∇θ Σ_i w_i L_i with the weights of :meth:`loss_weights` (a loss
    #: that is linear in the task losses); False for a nonlinear combination (GLS, STCH, FAMO,
    #: AuxiLearn's network), whose effective weights depend on the losses themselves.
    linear_in_losses: bool = True

    def __init__(self):
        super().__init__()
        self.task_names: tuple[str, ...] = ()
        self.likelihoods: dict[str, str] = {}

    def bind(self, task_names: Sequence[str], likelihoods: Mapping[str, str] | None = None) -> None:
        """Set the tasks (``"primary"`` first) and build what depends on them.

        Raises:
            ValueError: the names are not unique, do not start with ``"primary"``, or the
                weighting is already bound to other tasks.
        """
        names = tuple(task_names)
        if not names or names[0] != PRIMARY or len(set(names)) != len(names):
            raise ValueError(f"task names must be unique and start with {PRIMARY!r}, got {list(names)}")
        if self.task_names and self.task_names != names:
            raise ValueError(
                f"{type(self).__name__} is bound to tasks {list(self.task_names)} already; "
                f"make a new one for {list(names)}"
            )
        if self.task_names:
            return
        self.task_names = names
        self.likelihoods = {n: (likelihoods or {}).get(n, "softmax") for n in names}
        self._build()

    def _build(self) -> None:
        """Create the parameters / buffers that depend on ``task_names`` (none by default)."""

    def _check(self, losses: Mapping[str, Tensor]) -> None:
        if not self.task_names:
            raise RuntimeError(f"{type(self).__name__} is not bound to any tasks: call bind(names) first")
        if tuple(losses) != self.task_names:
            raise ValueError(f"losses for tasks {list(losses)} do not match the bound tasks {list(self.task_names)}")

    def loss_weights(self) -> dict[str, Tensor]:
        """Current weight of every task's loss, ``{name: scalar tensor}``."""
        raise NotImplementedError

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The scalar to minimise, ``Σ_i w_i L_i`` (plus any term the weighting learns from)."""
        self._check(losses)
        weights = self.loss_weights()
        # cast: _check() refuses an unbound weighting, so there is at least one task and the sum is a Tensor
        return cast(Tensor, sum(weights[n] * losses[n] for n in self.task_names))

    def meta_parameters(self) -> list[nn.Parameter]:
        """The weighting's meta-parameters: learnt by its own outer step, never by the main
        optimiser (none by default; a learnt weighting such as uncertainty's log σ² trains with
        the network instead)."""
        return []

    def meta_gradient(self, learner, images: Tensor, labels: Tensor, held_out, *, alpha: float, index=None):
        """A meta-learned weighting's gradient of its outer loss on ``held_out`` with respect to
        its meta-parameters: an object with ``grad`` (a tensor or a list of tensors, what
        :meth:`apply_gradient` takes) and ``outer_loss`` (a scalar)."""
        raise NotImplementedError(f"{type(self).__name__} is not meta-learned")

    def apply_gradient(self, grad) -> None:
        """Update the meta-parameters with a :meth:`meta_gradient`'s ``grad`` (its own optimiser)."""
        raise NotImplementedError(f"{type(self).__name__} is not meta-learned")

    def meta_step(self, learner, images: Tensor, labels: Tensor, held_out, *, alpha: float, index=None):
        """One outer step of a meta-learned weighting (``meta_learned``), called by
        :meth:`auxtasks.AuxiliaryLearner.weight_step`: :meth:`meta_gradient`, then
        :meth:`apply_gradient`; returns the former's result."""
        result = self.meta_gradient(learner, images, labels, held_out, alpha=alpha, index=index)
        self.apply_gradient(result.grad)
        return result

    def fuses_with_step(self) -> bool:
        """Whether a trainer may take this weighting's outer step from the real training step's
        own forward (``fused_meta_gradient(learner, task_grads, held_out, alpha=, losses=)`` with the
        per-task gradients of that forward, :meth:`auxtasks.AuxiliaryLearner.task_gradients`, and
        its task losses by name): Auto-λ with ``fused`` and an exact engine, OL-AUX with ``fused``.
        False by default."""
        return False

    def fused_meta_gradient(self, learner, task_grads, held_out, *, alpha: float, losses=None):
        """The outer step's meta-gradient from the real step's per-task gradients and its task
        losses ``losses`` (``{name: scalar}``, the forward's ``AuxOutput.losses``), where
        :meth:`fuses_with_step`; see :class:`auxtasks.weighting.AutoLambda`, :class:`auxtasks.weighting.OLAux`."""
        raise NotImplementedError(f"{type(self).__name__} has no fused weight step")

    def is_unit_sum(self) -> bool:
        """Whether the update is the plain gradient of ``Σ_i L_i`` (every weight 1, no learnt
        term): then MAXL's look-ahead step is the real step and the two can share a pass."""
        return False

    def lookahead_weights(self) -> dict[str, float] | None:
        """The weights λ_i of the network's next update θ ← θ − α ∇θ Σ_i λ_i L_i, detached
        floats by task name, for a look-ahead that should take the step the network really takes
        (MAXL's generator, :meth:`auxtasks.AuxiliaryLearner.meta_gradient`); None where the update
        is not such a sum (a gradient weighting, ``uses_gradients``, or a nonlinear combination,
        ``linear_in_losses`` False): the look-ahead then weights every loss 1. Terms of
        :meth:`combine` that do not depend on θ (uncertainty's ½ log σ²) do not move the step."""
        if self.uses_gradients or not self.linear_in_losses:
            return None
        return {n: float(w.detach()) for n, w in self.loss_weights().items()}

    def weights(self) -> dict[str, float]:
        """Current weights as floats, for logging."""
        return {n: float(w.detach()) for n, w in self.loss_weights().items()}

    def backward(
        self,
        losses: Mapping[str, Tensor],
        total: Tensor,
        shared: Sequence[Tensor],
        specific: Sequence[Tensor],
        *,
        representation: Tensor | None = None,
    ) -> None:
        """Accumulate the update into ``.grad``: here ``total.backward()``.

        Args:
            losses: per-task losses, as given to :meth:`combine`.
            total: ``combine(losses)``.
            shared: the shared parameters (the backbone's).
            specific: the task-specific parameters (the heads').
            representation: the backbone's output on the batch, with its graph (MGDA-UB).
        """
        total.backward()

    def observe(self, performance: Mapping[str, float | None]) -> None:
        """Take each task's performance on a training batch (accuracy in [0, 1], None where
        the task has none); called before :meth:`combine` when ``uses_performance``."""

    def end_epoch(self) -> None:
        """Called by the learner's ``end_epoch``; weightings with a loss history roll it here."""


class GradientWeighting(Weighting):
    """A weighting that combines the per-task gradients of the shared parameters.

    :meth:`combine` is ``Σ_i w_i L_i`` (all ``w_i = 1`` unless a subclass says otherwise) and
    serves the heads and the logs; the shared parameters get
    :meth:`combine_gradients` of the per-task gradients instead.
    """

    uses_gradients = True

    def loss_weights(self) -> dict[str, Tensor]:
        return {n: torch.tensor(1.0) for n in self.task_names}

    def combine_gradients(self, grads: dict[str, Tensor], losses: Mapping[str, Tensor]) -> Tensor:
        """Combine the flat per-task gradients ``{name: float [P]}`` into one ``[P]`` update."""
        raise NotImplementedError

    def backward(self, losses, total, shared, specific, *, representation=None) -> None:
        self._check(losses)
        shared = [p for p in shared if p.requires_grad]
        grads = {n: flat_gradients(losses[n], shared) for n in self.task_names}  # g_i = ∇_shared L_i
        update = self.combine_gradients(grads, losses)  # [P]
        if specific:
            torch.autograd.backward(total, inputs=list(specific))  # each head: the gradient of its own loss
        offset = 0
        for p in shared:
            g = update[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
            p.grad = g.clone() if p.grad is None else p.grad + g
