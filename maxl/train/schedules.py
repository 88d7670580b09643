"""The order of the steps in an epoch.

* :class:`MultitaskOnly`: one pass of multi-task steps (no label-generation network).
* :class:`Alternate` (the MAXL reference code): one pass of multi-task steps with the
  generator frozen, then one pass over the reshuffled training set of generator steps with
  the multi-task network frozen (Liu, Davison, Johns, NeurIPS 2019, Algorithm 1).
* :class:`PerStep`: in one pass, a generator step every ``gen_every`` steps; the labels and
  the look-ahead of that step come from the networks before either update, and the two
  updates share one forward/backward when :meth:`~maxl.train.step.StepPath.fused` applies.

Both record as label statistics the generator's label distribution (its soft labels), also where
the multi-task network learns from per-image scaled or hard (Gumbel) targets.
:func:`gumbel_temperature` gives the temperature of an epoch for hard labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from maxl.meta import MetaResult
from maxl.train.config import TrainConfig
from maxl.train.diagnostics import LabelUsage
from maxl.train.step import StepPath

__all__ = ["EpochSums", "Schedule", "MultitaskOnly", "Alternate", "PerStep", "make_schedule", "gumbel_temperature"]

Batches = Callable[[int], Iterable]  # pass number within the epoch -> batches (x, y, index) on the device


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
        for part in ("lookahead_grad_norm", "entropy_grad_norm"):  # with MetaConfig.record_parts
            if getattr(result, part) is not None:
                self.meta_sums[f"meta_{part}"] = self.meta_sums.get(f"meta_{part}", 0.0) + getattr(result, part).item()
        if result.image_scales is not None:  # WAMAL's per-image weights of the auxiliary loss
            for key, value in (("mean", result.image_scales.mean()), ("std", result.image_scales.std())):
                key = f"meta_image_weight_{key}"
                self.meta_sums[key] = self.meta_sums.get(key, 0.0) + value.item()
        self.meta_steps += 1

    def record(self) -> dict[str, float]:
        record = {"train_acc": self.correct / max(self.images, 1)}
        record.update({f"train_{k}": v / max(self.steps, 1) for k, v in self.sums.items()})
        record.update({k: v / max(self.meta_steps, 1) for k, v in self.meta_sums.items()})
        return record


class Schedule:
    """One epoch of steps. ``run(steps, batches, sums, bar)``; ``bar(iterable, desc)`` wraps a
    pass in a progress bar; ``step_count()`` is the number of multi-task steps so far."""

    def __init__(self, config: TrainConfig):
        self.config = config

    def run(self, steps: StepPath, batches: Batches, sums: EpochSums, bar, counter) -> None:
        raise NotImplementedError


class MultitaskOnly(Schedule):
    def run(self, steps, batches, sums, bar, counter):
        for x, y, idx in bar(batches(0), "train"):
            stats, labels = steps.multitask(x, y, idx)
            sums.add_step(stats, y, labels, idx)
            counter.step += 1


def _outer_batches(config: TrainConfig, batches: Batches):
    """The outer loss's batches: None (the inner batch itself) or, with ``meta_batch="other"``,
    the batches of an independent shuffle of the training images (pass 2 of the epoch)."""
    if config.meta_batch == "same":
        while True:
            yield None
    while True:  # as many as needed: the shuffle repeats
        for x, y, _ in batches(2):
            yield x, y


class Alternate(Schedule):
    def run(self, steps, batches, sums, bar, counter):
        MultitaskOnly.run(self, steps, batches, sums, bar, counter)
        outer = _outer_batches(self.config, batches)
        for x, y, idx in bar(batches(1), "generator"):  # θ2 updates, θ1 frozen
            sums.add_meta(steps.generator(x, y, idx, next(outer)))


class PerStep(Schedule):
    def run(self, steps, batches, sums, bar, counter):
        fused = self.config.fused and steps.learner.can_fuse()
        outer = _outer_batches(self.config, batches)
        for x, y, idx in bar(batches(0), "train"):
            if counter.step % self.config.gen_every == 0:
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
            counter.step += 1


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


def make_schedule(config: TrainConfig, has_generator: bool) -> Schedule:
    """The schedule of ``config.schedule``, or :class:`MultitaskOnly` without a generator."""
    if not has_generator:
        return MultitaskOnly(config)
    return {"alternate": Alternate, "per-step": PerStep}[config.schedule](config)
