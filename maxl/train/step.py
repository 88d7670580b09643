"""The one training step path of every method.

Every method trains an :class:`auxtasks.AuxiliaryLearner`: ``single`` one without auxiliary
tasks, ``human`` / ``random`` / ``kmeans`` one with fixed supervised labels, ``maxl`` one
with the label-generation network's labels, each with the configured loss weighting and any
self-supervised tasks. Three kinds of step serve all of them:

* :meth:`StepPath.multitask`: θ1 ← θ1 − lr·update of the learner's losses (its weighting
  decides the update);
* :meth:`StepPath.generator`: θ2 ← θ2 − lr₂·∇θ2 J, MAXL's meta-gradient (Liu, Davison,
  Johns, NeurIPS 2019, arXiv:1901.08933, Eq. 3–4, Algorithm 1);
* :meth:`StepPath.fused`: both from one shared forward/backward, where the engine and the
  learner allow it (:meth:`auxtasks.AuxiliaryLearner.can_fuse`); the same updates.

With a meta-learned weighting, a weight step comes before every ``weight_every``-th multi-task step:
:meth:`StepPath.weights` (its own look-ahead), or, for Auto-λ and OL-AUX with ``fused`` (the default
of ``maxl train``), the fused form inside :meth:`StepPath.multitask`, which takes the weights'
meta-gradient from the multi-task step's own forward and per-task gradients.

Each step checks its losses and gradients for NaN/Inf, and under torchrun averages the
gradients over the processes (every process holds the whole model; the BatchNorm
statistics of rank 0 are shared after each step, as DistributedDataParallel does).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from auxtasks import AuxiliaryLearner
from auxtasks.learner import step_with
from auxtasks.weighting import Equal
from maxl.core.precision import autocast, check_precision
from maxl.meta import MetaResult
from maxl.meta.lookahead import generated_targets
from maxl.meta.task_weights import TaskWeightGradient
from maxl.train import distributed
from maxl.train.checks import FiniteChecks

__all__ = ["StepPath"]


class StepPath:
    """The steps of one run.

    Args:
        learner: the learner of the run (its generated task, if any, is MAXL's).
        optimizer: the optimiser of the learner's network parameters.
        gen_optimizer: the label-generation network's optimiser (None without one).
        checks: the run's :class:`~maxl.train.checks.FiniteChecks`.
        aux_head: the multi-task network's auxiliary head: the loss of the task on it is
            logged as ``aux_loss`` (the method's own auxiliary task).
        per_step_scheduler: a learning-rate schedule stepped after every multi-task update.
        held_out: ``held_out(step) -> (x_v, y_v)``, the held-out batch of a meta-learned
            weighting's weight step before multi-task step ``step`` (None without one).
        weight_every: a weight step before every ``weight_every``-th multi-task step.
        step_of: the run's multi-task steps so far (the trainer's ``step``).
        precision: ``"fp32"`` or ``"bf16"``: the forward passes of the steps, the look-ahead
            and the meta-gradient under bfloat16 autocast (:mod:`maxl.core.precision`; the
            parameters, gradients and optimisers stay float32).
    """

    def __init__(
        self,
        learner: AuxiliaryLearner,
        optimizer: torch.optim.Optimizer,
        gen_optimizer: torch.optim.Optimizer | None,
        checks: FiniteChecks,
        aux_head=None,
        per_step_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        held_out=None,
        weight_every: int = 1,
        step_of=None,
        precision: str = "fp32",
    ):
        check_precision(precision)
        self.precision = precision
        self.learner, self.optimizer, self.gen_optimizer, self.checks = learner, optimizer, gen_optimizer, checks
        self.per_step_scheduler = per_step_scheduler
        weighting = learner.weighting
        if weighting.meta_learned and ((held_out is None and weighting.uses_held_out) or step_of is None):
            raise ValueError(
                f"weighting {type(weighting).__name__} is meta-learned: it needs the step count (step_of=)"
                + (" and held-out batches (held_out=)" if weighting.uses_held_out else "")
            )
        self.meta_learned = weighting.meta_learned
        # Auto-λ's / OL-AUX's weight step from the training step's own forward (float32 only: it shares that pass)
        self.fused_weights = self.meta_learned and weighting.fuses_with_step() and precision == "fp32"
        self.held_out, self.weight_every, self.step_of = held_out, weight_every, step_of
        generated = learner.generated  # α = the current lr of the multi-task network unless the config sets it
        self._alpha_follows_lr = generated is not None and generated.meta.inner_lr is None
        own = [t.name for t in learner.tasks if aux_head is not None and t.head is aux_head]
        self.own_task = own[0] if own else None
        # per-task losses and weights are logged when they say more than primary + own losses
        plain = type(learner.weighting) is Equal and all(t.name == self.own_task for t in learner.tasks)
        self.task_keys = (
            ()
            if plain
            else (*(f"loss_{n}" for n in learner.task_names[1:]), *(f"weight_{n}" for n in learner.task_names))
        )
        if self.meta_learned:  # the weights' meta-gradient per task (where it is one number per task)
            self.task_keys += tuple(f"meta_grad_{n}" for n in learner.task_names)
        self._params = learner.network_parameters()
        self._lookahead_params = learner.lookahead_parameters()  # the fused step's θ1, fixed for the run
        self._names = {id(p): n for n, p in learner.named_parameters()}

    @property
    def generated(self):
        """The learner's :class:`auxtasks.GeneratedLabels` task, or None."""
        return self.learner.generated

    def multitask(
        self, x: Tensor, y: Tensor, idx: Tensor, targets: Tensor | None = None
    ) -> tuple[dict[str, float], Tensor | None]:
        """One update of the multi-task network on a batch; ``targets`` are the generated
        targets float ``[B, K]`` to learn from (default: the generator's current ones, made here).
        Returns the step's statistics and, when the targets were made here, the generator's soft
        labels of the batch (the distribution, for the label statistics: the targets may be scaled
        per image or hard samples of it); None with ``targets`` or without a generator."""
        soft = None
        weight_step = self.meta_learned and self.step_of() % self.weight_every == 0
        fuse = weight_step and self.fused_weights
        weight_result = None
        held_out = self.held_out(self.step_of()) if weight_step and self.held_out is not None else None
        if weight_step and not fuse:  # the weights' outer step, in float32
            weight_result = self.weights(x, y, idx, held_out)
        with self._autocast(x):
            if self.generated is not None and targets is None:
                with torch.no_grad():  # no gradient to θ2; labels and targets from one generator pass
                    soft, targets = generated_targets(self.generated.generator, x, y)
            given = {self.generated.name: targets} if targets is not None and self.generated is not None else None
            out = self.learner(x, y, index=idx, aux_targets=given)
        self.checks.losses(**{f"{name}_loss": loss for name, loss in out.losses.items()}, multitask_loss=out.loss)
        if fuse:  # the weight step from this forward, then the update Σ λ'_i g_i with the new weights
            grads, weight_result = self._fused_weights(out, held_out)
            distributed.all_reduce_mean_([g for g in grads if g is not None])
            self.checks.grads(((self._names[id(p)], g) for p, g in zip(self._params, grads)), "multi-task network")
            step_with(self._params, grads, self.optimizer)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.learner.backward(out)
            distributed.all_reduce_mean_([p.grad for p in self._params if p.grad is not None])
            self.checks.grads(((self._names[id(p)], p.grad) for p in self._params), "multi-task network")
            self.optimizer.step()
        self._after_update()
        stats = {f"loss_{name}": loss.item() for name, loss in out.losses.items() if name != "primary"}
        weights = self.learner.weighting.weights() if fuse else out.weights  # the weights of this update
        stats.update({f"weight_{name}": w for name, w in weights.items()})
        grad = weight_result.grad if weight_result is not None else None
        if isinstance(grad, Tensor) and grad.numel() == len(self.learner.task_names):  # AuxiLearn's: φ's, no
            stats.update({f"meta_grad_{n}": g for n, g in zip(self.learner.task_names, grad.tolist())})
        if self.own_task is not None:
            stats["aux_loss"] = stats[f"loss_{self.own_task}"]
        stats["primary_loss"] = out.losses["primary"].item()
        stats["primary_correct"] = (out.primary_logits.argmax(1) == y).sum().item()
        return stats, soft

    def weights(self, x: Tensor, y: Tensor, idx: Tensor, held_out: tuple[Tensor, Tensor] | None):
        """One step of a meta-learned weighting on the training batch and a held-out batch, with
        the look-ahead's α the network's current learning rate; under torchrun the weights'
        meta-gradient is averaged over the processes. A non-finite meta-gradient stops the run
        (:class:`~maxl.train.checks.NonFiniteGradientError`) before the weights change."""
        weighting = self.learner.weighting
        alpha = self.optimizer.param_groups[0]["lr"]
        result = weighting.meta_gradient(self.learner, x, y, held_out, alpha=alpha, index=idx)
        self.checks.losses(weight_outer_loss=result.outer_loss)
        grads = result.grad if isinstance(result.grad, list) else [result.grad]
        distributed.all_reduce_mean_(grads)
        self.checks.grads(((f"weighting[{i}]", g) for i, g in enumerate(grads)), "task weights")
        weighting.apply_gradient(result.grad)
        return result

    def _fused_weights(
        self, out, held_out: tuple[Tensor, Tensor] | None
    ) -> tuple[list[Tensor | None], TaskWeightGradient]:
        """The fused weight step on the real forward ``out``: per-task gradients g_i from its graph
        (:meth:`auxtasks.AuxiliaryLearner.task_gradients`), the weights' meta-gradient from them and
        the step's task losses (Auto-λ: at θ⁺ = θ − α Σ λ_i g_i,
        :func:`maxl.meta.task_weights.fused_task_weight_gradient`; OL-AUX: the alignments ⟨g_pri, g_i⟩;
        ``held_out`` None for a weighting without one; averaged over the processes under torchrun,
        checked, applied), then the network's gradient
        Σ λ'_i g_i (+ the architecture's penalty) with the new weights λ', one per ``_params``
        (None where nothing reaches a parameter): the update of :meth:`weights` followed by a
        plain step, with one forward of the training batch; and the weight step's result."""
        learner, weighting = self.learner, self.learner.weighting
        task_grads = learner.task_gradients(out)
        alpha = self.optimizer.param_groups[0]["lr"]
        result = weighting.fused_meta_gradient(learner, task_grads, held_out, alpha=alpha, losses=out.losses)
        self.checks.losses(weight_outer_loss=result.outer_loss)
        distributed.all_reduce_mean_([result.grad])
        self.checks.grads([("weighting[0]", result.grad)], "task weights")
        weighting.apply_gradient(result.grad)
        lam = [w.detach() for w in weighting.loss_weights().values()]  # λ' in task_names order
        penalty: list[Tensor | None] = [None] * len(self._params)
        if out.penalty is not None:
            penalty = list(torch.autograd.grad(out.penalty, self._params, retain_graph=True, allow_unused=True))
        grads: list[Tensor | None] = []
        for p, pen in zip(self._params, penalty):
            name = self._names[id(p)]
            parts = []
            for w, g in zip(lam, task_grads):
                gi = g.get(name)
                if gi is not None:
                    parts.append(w * gi)
            if pen is not None:
                parts.append(pen)
            grads.append(torch.stack(parts).sum(0) if parts else None)
        return grads, result

    def generator(self, x: Tensor, y: Tensor, idx: Tensor | None = None, outer=None) -> MetaResult:
        """One update of the label-generation network by its meta-gradient on a batch (a
        replica-local look-ahead under torchrun, see :mod:`maxl.train.distributed`); ``outer``:
        another batch ``(x_o, y_o)`` for the outer loss."""
        self._set_alpha()
        with self._autocast(x):
            result = self.learner.meta_gradient(x, y, index=idx, outer_batch=outer)
        self.checks.losses(meta_outer_loss=result.outer_loss, neg_entropy=result.neg_entropy)
        self._apply_meta(result)
        return result

    def fused(self, x: Tensor, y: Tensor, idx: Tensor, outer=None) -> tuple[MetaResult, dict[str, float]]:
        """A generator update and a multi-task update from one shared forward/backward; the
        same updates as :meth:`generator` then :meth:`multitask` on its labels."""
        self._set_alpha()
        with self._autocast(x):
            r = self.learner.fused_gradients(x, y, index=idx, outer_batch=outer)
        self.checks.losses(
            primary_loss=r.primary_loss,
            multitask_loss=r.primary_loss + r.aux_loss,
            meta_outer_loss=r.meta.outer_loss,
            neg_entropy=r.meta.neg_entropy,
        )
        self._apply_meta(r.meta)
        params = self._lookahead_params
        distributed.all_reduce_mean_(r.net_grads)
        self.checks.grads(zip((self._names[id(p)] for p in params), r.net_grads), "multi-task network")
        step_with(params, r.net_grads, self.optimizer)
        self._after_update()
        stats = {
            "aux_loss": r.aux_loss.item(),
            "primary_loss": r.primary_loss.item(),
            "primary_correct": (r.primary_logits.argmax(1) == y).sum().item(),
        }
        return r.meta, stats

    def _autocast(self, x: Tensor):
        """bfloat16 autocast on ``x``'s device with ``precision="bf16"``, else nothing."""
        return autocast(self.precision, x.device)

    def _apply_meta(self, result: MetaResult) -> None:
        distributed.all_reduce_mean_(result.grads)  # the mean of the processes' meta-gradients
        generator = self.generated.generator
        names = [n for n, p in generator.named_parameters() if p.requires_grad]
        self.checks.grads(zip(names, result.grads), "label-generation network")
        assert self.gen_optimizer is not None  # a generated task has its optimiser
        self.learner.apply_meta_gradient(result, self.gen_optimizer)

    def _set_alpha(self) -> None:
        if self._alpha_follows_lr:  # θ1⁺ = θ1 − α ∇θ1 (...) with α the lr of the step to come
            task = self.generated
            task.meta = replace(task.meta, inner_lr=self.optimizer.param_groups[0]["lr"])

    def _after_update(self) -> None:
        if self.per_step_scheduler is not None:
            self.per_step_scheduler.step()
        if distributed.world_size() > 1:  # rank 0's BatchNorm statistics everywhere, as DDP does
            distributed.broadcast_([b.data for b in self.learner.buffers() if b is not None])
