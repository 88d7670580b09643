"""The order of the steps in an epoch.

* :class:`MultitaskOnly`: one pass of multi-task steps (no label-generation network).
* :class:`Alternate` (the MAXL reference code): one pass of multi-task steps with the
  generator frozen, then one pass over the reshuffled training set of generator steps with
  the multi-task network frozen (Liu, Davison, Johns, NeurIPS 2019, Algorithm 1).
* :class:`PerStep`: in one pass, a generator step every ``gen_every`` steps; the labels and
  the look-ahead of that step come from the networks before either update, and the two
  updates share one forward/backward when :meth:`~maxl.train.step.StepPath.fused` applies.

A schedule can start inside an epoch, at the :class:`Position` of a step-level checkpoint: it
skips the batches already taken without loading them, and after making the iterators of that
position it calls ``run_state.positioned()`` (where the trainer puts back the random state of
the checkpoint, as making a ``DataLoader`` iterator draws from torch's generator). After every
step it calls ``run_state.after_step(position)`` (where the trainer writes step-level
checkpoints and stops on a signal).

Both record as label statistics the generator's label distribution (its soft labels), also where
the multi-task network learns from per-image scaled or hard (Gumbel) targets.
:func:`gumbel_temperature` gives the temperature of an epoch for hard labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Protocol

import torch

from maxl.meta import MetaResult
from maxl.train.config import GeneratorConfig
from maxl.train.diagnostics import LabelUsage
from maxl.train.step import StepPath

__all__ = [
    "EpochSums",
    "Position",
    "Batches",
    "RunState",
    "OuterBatches",
    "Schedule",
    "MultitaskOnly",
    "Alternate",
    "PerStep",
    "make_schedule",
    "gumbel_temperature",
]


class Batches(Protocol):
    """``batches(k, skip)``: the batches ``(x, y, index)`` (on the device) of pass ``k`` of the
    epoch after its first ``skip``, the pass's iterator already made; ``len(batches)``: the
    batches of a pass."""

    def __call__(self, k: int, skip: int = 0) -> Iterable: ...

    def __len__(self) -> int: ...


@dataclass
class Position:
    """Where an epoch stands after a step.

    Attributes:
        pass_: the pass of the schedule (0: the multi-task pass; 1: the generator pass of
            :class:`Alternate`).
        batch: batches of that pass taken.
        outer: batches of the outer loss's stream (:class:`OuterBatches`) taken.
    """

    pass_: int = 0
    batch: int = 0
    outer: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class RunState(Protocol):
    """What a schedule reports to (the trainer): ``step``, the multi-task steps of the run."""

    step: int

    def positioned(self) -> None: ...

    def after_step(self, position: Position) -> None: ...


class EpochSums:
    """Sums of one epoch's step statistics, turned into the epoch's record."""

    def __init__(self, step_keys: tuple[str, ...], usage: LabelUsage | None, human_labels=None):
        self.keys = ("primary_loss", "aux_loss", *step_keys)
        self.usage, self.human_labels = usage, human_labels
        self.sums: dict[str, float] = {}
        self.meta_sums: dict[str, float] = {}
        self.images = self.steps = self.meta_steps = 0
        self.correct = 0.0

    def add_step(self, stats: dict[str, float], y, labels=None, idx=None) -> None:
        if self.usage is not None and labels is not None:  # the generator's soft labels of the batch
            human = self.human_labels[idx.cpu()] if self.human_labels is not None and idx is not None else None
            self.usage.update(labels, y, human)
        for k in self.keys:
            if k in stats:
                self.sums[k] = self.sums.get(k, 0.0) + stats[k]
        self.correct += stats["primary_correct"]
        self.images += len(y)
        self.steps += 1

    def add_meta(self, result: MetaResult) -> None:
        self.meta_sums["meta_outer_loss"] = self.meta_sums.get("meta_outer_loss", 0.0) + result.outer_loss.item()
        self.meta_sums["neg_entropy"] = self.meta_sums.get("neg_entropy", 0.0) + result.neg_entropy.item()
        for part in ("lookahead_grad_norm", "entropy_grad_norm"):  # with ObjectiveConfig.record_parts
            if getattr(result, part) is not None:
                self.meta_sums[f"meta_{part}"] = self.meta_sums.get(f"meta_{part}", 0.0) + getattr(result, part).item()
        if result.image_scales is not None:  # WAMAL's per-image weights of the auxiliary loss
            for key, value in (("mean", result.image_scales.mean()), ("std", result.image_scales.std())):
                key = f"meta_image_weight_{key}"
                self.meta_sums[key] = self.meta_sums.get(key, 0.0) + value.item()
        self.meta_steps += 1

    _STATE = ("sums", "meta_sums", "images", "steps", "meta_steps", "correct")

    def state_dict(self) -> dict:
        """The sums so far (a step-level checkpoint holds them): numbers, tensors, containers."""
        state = {k: getattr(self, k) for k in self._STATE}
        if self.usage is not None:
            state["usage"] = self.usage.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            setattr(self, k, state[k])
        if self.usage is not None:
            self.usage.load_state_dict(state["usage"])

    def record(self) -> dict[str, float]:
        record = {"train_acc": self.correct / max(self.images, 1)}
        record.update({f"train_{k}": v / max(self.steps, 1) for k, v in self.sums.items()})
        record.update({k: v / max(self.meta_steps, 1) for k, v in self.meta_sums.items()})
        return record


class OuterBatches:
    """The outer loss's batches, one per generator step: None (the inner batch itself) or, with
    ``meta_batch="other"``, the batches ``(x, y)`` of an independent shuffle of the training
    images (pass 2 of the epoch; it repeats as often as needed). ``taken`` counts them; a stream
    resumed at ``taken`` inside a shuffle makes that shuffle's iterator at once, as the
    uninterrupted run had made it before the checkpoint."""

    def __init__(self, config: GeneratorConfig, batches: Batches, taken: int = 0):
        self.other, self.batches, self.taken = config.meta_batch == "other", batches, taken
        self._it = iter(batches(2, taken % len(batches))) if self.other and taken % len(batches) else None

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        self.taken += 1
        if not self.other:
            return None
        while True:
            if self._it is None:
                self._it = iter(self.batches(2))
            batch = next(self._it, None)
            if batch is not None:
                return batch[0], batch[1]
            self._it = None  # this shuffle is used up: the next one


class Schedule:
    """One epoch of steps: ``run(steps, batches, sums, bar, run_state, start)``, from ``start``
    (None: the epoch's beginning); ``bar(iterable, desc)`` wraps a pass in a progress bar."""

    def __init__(self, config: GeneratorConfig):
        self.config = config

    def run(
        self,
        steps: StepPath,
        batches: Batches,
        sums: EpochSums,
        bar,
        run_state: RunState,
        start: Position | None = None,
    ) -> None:
        raise NotImplementedError

    @staticmethod
    def _pass(k: int, batches: Batches, start: Position) -> enumerate:
        """``(batches taken after this one, batch)`` over pass ``k``, from ``start`` if it is in it."""
        skip = start.batch if start.pass_ == k else 0
        return enumerate(batches(k, skip), skip + 1)


class MultitaskOnly(Schedule):
    def run(self, steps, batches, sums, bar, run_state, start=None):
        start = start or Position()
        if start.pass_ == 0:
            self._multitask_pass(steps, batches, sums, bar, run_state, start)

    def _multitask_pass(self, steps, batches, sums, bar, run_state, start):
        train = self._pass(0, batches, start)
        run_state.positioned()
        for b, (x, y, idx) in bar(train, "train"):
            stats, labels = steps.multitask(x, y, idx)
            sums.add_step(stats, y, labels, idx)
            run_state.step += 1
            run_state.after_step(Position(0, b))


class Alternate(MultitaskOnly):
    def run(self, steps, batches, sums, bar, run_state, start=None):
        super().run(steps, batches, sums, bar, run_state, start)  # the multi-task pass (if start is in it)
        start = start or Position()
        generator_pass = self._pass(1, batches, start)
        outer = OuterBatches(self.config, batches, start.outer)
        run_state.positioned()
        for b, (x, y, idx) in bar(generator_pass, "generator"):  # θ2 updates, θ1 frozen
            sums.add_meta(steps.generator(x, y, idx, next(outer)))
            run_state.after_step(Position(1, b, outer.taken))


class PerStep(Schedule):
    def run(self, steps, batches, sums, bar, run_state, start=None):
        start = start or Position()
        fused = self.config.fused and steps.learner.can_fuse()
        train = self._pass(0, batches, start)
        outer = OuterBatches(self.config, batches, start.outer)
        run_state.positioned()
        for b, (x, y, idx) in bar(train, "train"):
            if run_state.step % self.config.every == 0:
                if fused:  # θ2 and θ1 updates from one shared forward/backward
                    result, stats = steps.fused(x, y, idx, next(outer))
                else:  # θ2 update from the current θ1, θ2; then θ1 on the look-ahead's targets before it
                    result = steps.generator(x, y, idx, next(outer))
                    stats, _ = steps.multitask(x, y, idx, targets=result.targets)
                sums.add_meta(result)
                labels = result.soft_labels
            else:
                stats, labels = steps.multitask(x, y, idx)
            sums.add_step(stats, y, labels, idx)
            run_state.step += 1
            run_state.after_step(Position(0, b, outer.taken))


def gumbel_temperature(start: float, end: float | None, epoch: int, epochs: int) -> float:
    """The Gumbel-softmax temperature of epoch ``epoch`` (0-based) of ``epochs``: linear from
    ``start`` in the first epoch to ``end`` in the last, τ_e = τ0 + (τ1 − τ0)·e/(E − 1);
    ``start`` throughout when ``end`` is None or E = 1. A function of the epoch alone, so a
    resumed run takes the same temperatures (when it is extended with ``--epochs``, the
    remaining epochs follow the new length). Annealing τ towards 0 makes the relaxed sample, and
    the straight-through gradient, closer to the hard sample's (Jang, Gu, Poole, ICLR 2017, Sec. 2.2, 4).
    """
    if end is None or epochs <= 1:
        return float(start)
    return float(start + (end - start) * min(epoch, epochs - 1) / (epochs - 1))


def make_schedule(config: GeneratorConfig, has_generator: bool) -> Schedule:
    """The schedule of ``config.schedule``, or :class:`MultitaskOnly` without a generator."""
    if not has_generator:
        return MultitaskOnly(config)
    return {"alternate": Alternate, "per-step": PerStep}[config.schedule](config)
