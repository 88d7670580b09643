"""The training loop. Nothing here depends on the method, the backbone or the data set: the
trainer drives the :class:`auxtasks.AuxiliaryLearner` it is given (or the one
:func:`maxl.train.aux_learner.build_learner` makes for ``config.method``) through the one step
path (:mod:`maxl.train.step`) in the order of its schedule (:mod:`maxl.train.schedules`).

Data sets yield ``(image [C, H, W], primary label, index)``. The run folder receives
``config.json`` (written by the builder), ``metrics.jsonl`` (one JSON record per epoch),
``summary.json`` and ``checkpoint.pt`` (written atomically every epoch, with
``checkpoint_every`` also every that many steps, and when a signal stops the run: see
:mod:`maxl.train.preemption`), and with
``tensorboard=True`` the same metrics as TensorBoard events. Inside a ``torch.distributed``
process group (``torchrun``, see :mod:`maxl.train.distributed`) every process trains on its
share of each batch and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sized
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from auxtasks import AuxiliaryLearner
from auxtasks.learner import frozen_running_stats
from auxtasks.supervised import SupervisedLabels
from maxl.core.hierarchy import Hierarchy
from maxl.core.losses import classification_loss
from maxl.data.augment import BatchAugment, pass_draws
from maxl.data.datasets import ImageTensorDataset
from maxl.meta import MetaConfig, get_engine
from maxl.meta.objective import ObjectiveConfig
from maxl.nn.networks import MultiTaskNetwork
from maxl.train import distributed
from maxl.train.aux_learner import build_learner
from maxl.train.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    capture_rng,
    config_differences,
    read_checkpoint,
    restore_rng,
)
from maxl.train.checks import FiniteChecks, check_aux_labels, check_data, check_primary_labels
from maxl.train.config import GeneratorConfig, TrainConfig
from maxl.train.determinism import enable_determinism
from maxl.train.diagnostics import LabelUsage, warn_label_usage
from maxl.train.migrate import migrate
from maxl.train.optim import make_optimisers
from maxl.train.preemption import Preempted, StopSignals
from maxl.train.run_log import RunLog
from maxl.train.schedules import EpochSums, Position, gumbel_temperature, make_schedule
from maxl.train.step import StepPath

__all__ = ["Trainer", "seed_everything", "resolve_device", "CompileFallbackWarning"]

# tags the shuffles of the weights' outer batches (weight_split = 0) apart from any other use of the run seed
_WEIGHT_STREAM = 0x776C


class CompileFallbackWarning(UserWarning):
    """``compile=True`` with a meta-gradient engine that torch.compile cannot serve: the run is eager."""


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; under torchrun one GPU per process."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and distributed.is_distributed():
        device = torch.device("cuda", distributed.local_rank())
    return device


class Trainer:
    """Train a multi-task network (and a label-generation network for ``maxl``).

    Args:
        net: the multi-task network, ``net(x) -> (primary [B, P], aux [B, K] or None)``; it
            is what is evaluated and checkpointed.
        train_set, test_set: data sets yielding ``(image [C, H, W], primary label, index)``.
        config: :class:`~maxl.train.config.TrainConfig`.
        out_dir: run folder (created); None writes nothing.
        generator: the label-generation network (``maxl``).
        aux_labels: int64 ``[N_train]`` fixed auxiliary labels indexed by the training
            sample's index (``human``, ``random``, ``kmeans``), each inside its sample's ψ block.
        learner: the :class:`auxtasks.AuxiliaryLearner` on ``net``'s backbone and heads to train
            (e.g. from :func:`maxl.train.aux_learner.build_learner`, with more tasks or another
            weighting); default: the learner of ``config.method`` with equal weights.
        psi: the hierarchy ψ of ``aux_labels``; if given, each label is checked to lie in its
            sample's block (needs the training set's ``labels`` tensor).
        record: the configuration stored in checkpoints and compared on resume (default:
            ``train``, ``generator`` and, with generated labels, ``meta``; the builder passes the
            whole run configuration).
        val_set: a validation set held out from the training images: evaluated every epoch
            (``val_loss``, ``val_acc``), for choosing settings without the test set.
        human_labels: int64 ``[N_train]`` human auxiliary labels of the training images, for
            the generated labels' ``label_nmi_human`` diagnostic.
        weight_set: the images of a meta-learned weighting's outer loss (Auto-λ, AuxiLearn):
            held out from the training images (:func:`maxl.train.build.hold_out_for_weights`),
            or, with ``weight_from_training``, the training images themselves, not augmented
            (``aux.weight_split = 0``: :func:`maxl.train.build.training_images_for_weights`). Its
            batches are drawn from the run's seed and the step count alone, so a resumed run and
            every process draw the same ones (:meth:`_weight_indices`).
        weight_from_training: ``weight_set`` is ``train_set``'s N images at the same positions
            (nothing held out, Auto-λ's reference practice): each epoch's outer batches are a pass
            over a shuffle of them of its own, not the training loader's.
        weight_every: a weight step before every this many multi-task steps.
        arch_set: split B of the training images for an architecture search with updates of its
            own (AdaShare's policy updates, :meth:`maxl.nn.architectures.AdaShare.arch_step`):
            when the network's trunk has ``arch_parameters()``, each epoch whose trunk says
            ``arch_step_active`` ends with one pass over this set updating only those
            parameters, with the trunk's own optimiser (``make_arch_optimizer()``); the
            network's weights and BatchNorm statistics stay as they are
            (:func:`maxl.train.build.hold_out_for_architecture` carves it).
        arch_aux_labels: int64 ``[N_B]`` the fixed auxiliary labels of ``arch_set``'s images.
        objective: the terms of the generator's objective J, for the learner made here when
            ``learner`` is None (default: the paper's J); a given learner carries its own.
        meta: how the meta-gradient ∇θ2 J is computed (:class:`maxl.MetaConfig`: order, engine,
            α, ...), for the learner made here when ``learner`` is None, as ``objective`` (default:
            the paper's second-order step with α = the multi-task lr at each step,
            ``MetaConfig(inner_lr=None)``); a given learner carries its own.
        gen_config: the generator's optimiser and schedule (:class:`GeneratorConfig`; default:
            the paper's: SGD lr 1e-3, weight decay 5e-4, the alternate schedule); its network
            settings are read where the generator is made (:func:`maxl.train.build.make_generator`).

    Inside a ``torch.distributed`` process group, ``config.batch_size`` is the global batch:
    each of the N processes takes ``batch_size / N`` images of it.

    Raises:
        ValueError: the networks, images or labels do not fit the method or each other (the
            message names the bad value and what was expected).
        ImportError: ``config.tensorboard`` without the ``tensorboard`` package.
    """

    epoch: int  # epochs completed
    step: int  # multi-task steps completed

    def __init__(
        self,
        net: nn.Module,
        train_set: Dataset,
        test_set: Dataset,
        config: TrainConfig,
        out_dir: str | os.PathLike | None = None,
        generator: nn.Module | None = None,
        aux_labels: Tensor | None = None,
        learner: AuxiliaryLearner | None = None,
        psi: Hierarchy | list[int] | None = None,
        record: dict | None = None,
        val_set: Dataset | None = None,
        human_labels: Tensor | None = None,
        weight_set: Dataset | None = None,
        weight_from_training: bool = False,
        weight_every: int = 1,
        arch_set: Dataset | None = None,
        arch_aux_labels: Tensor | None = None,
        objective: ObjectiveConfig | None = None,
        gen_config: GeneratorConfig | None = None,
        meta: MetaConfig | None = None,
    ):
        self.config = cfg = config
        self.gen_config = gen = gen_config if gen_config is not None else GeneratorConfig()
        if cfg.deterministic:
            enable_determinism()
        self.is_main = distributed.rank() == 0  # only rank 0 writes files and prints
        if cfg.batch_size % distributed.world_size():
            raise ValueError(
                f"batch_size {cfg.batch_size} (the global batch) is not divisible by the "
                f"{distributed.world_size()} processes"
            )
        self.loss_fn = classification_loss(cfg.loss, cfg.focal_gamma)
        if aux_labels is not None:
            check_aux_labels(aux_labels, train_set, getattr(net, "num_aux", None), psi)
        if learner is None:
            # cast: without a learner, net is a MultiTaskNetwork (build_learner takes its backbone and heads)
            learner = build_learner(
                cast(MultiTaskNetwork, net),
                cfg.method,
                loss_fn=self.loss_fn,
                generator=generator,
                aux_labels=aux_labels,
                meta=meta if meta is not None else MetaConfig(inner_lr=None),
                objective=objective,
            )
        self.device = resolve_device(cfg.device)
        self.net, self.learner = net.to(self.device), learner.to(self.device)
        self.generator = learner.generated.generator if learner.generated is not None else None
        if cfg.channels_last:  # NHWC weights here, NHWC images in _batches
            for module in (self.net, self.learner):
                module.to(memory_format=torch.channels_last)
        if cfg.compile:
            self._compile()
        self.train_set, self.test_set, self.val_set = train_set, test_set, val_set
        self.human_labels = human_labels
        check_data(self.net, self.generator, train_set, test_set, self.device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None and self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if record is None:
            record = {"train": asdict(cfg), "generator": asdict(gen)}
            if learner.generated is not None:
                record["meta"] = asdict(learner.generated.meta)
        self.record = record
        self.log = RunLog(self.out_dir, cfg.progress, self.is_main, cfg.tensorboard)
        if distributed.world_size() > 1:  # the same start on every process, whatever the seeds
            distributed.broadcast_([t.data for t in self.learner.state_dict().values()])
        steps_per_epoch = len(cast(Sized, train_set)) // cfg.batch_size  # cast: a map-style data set has a length
        optims = make_optimisers(cfg, learner.network_parameters(), self.generator, steps_per_epoch, gen)
        self.optimizer, self.scheduler, self.gen_optimizer, self.gen_scheduler = (
            optims.optimizer,
            optims.scheduler,
            optims.gen_optimizer,
            optims.gen_scheduler,
        )
        self.checks = FiniteChecks(lambda: (self.epoch + 1, self.step + 1))
        self.weight_set, self.weight_from_training = weight_set, weight_from_training
        meta_learned = learner.weighting.meta_learned
        if meta_learned and learner.weighting.uses_held_out and weight_set is None:
            raise ValueError(
                f"weighting {type(learner.weighting).__name__} learns from held-out images: pass weight_set="
            )
        if weight_from_training and (weight_set is None or len(cast(Sized, weight_set)) != len(cast(Sized, train_set))):
            raise ValueError(
                "weight_from_training: weight_set must be the training images themselves "
                f"({len(cast(Sized, train_set))}), got "
                f"{'none' if weight_set is None else len(cast(Sized, weight_set))} "
                "(maxl.train.build.training_images_for_weights)"
            )
        learner.check_optimizer(self.optimizer)
        self.steps = StepPath(
            learner,
            self.optimizer,
            self.gen_optimizer,
            self.checks,
            getattr(net, "aux_head", None),
            per_step_scheduler=self.scheduler if optims.per_step else None,
            held_out=self._held_out_batch if meta_learned and learner.weighting.uses_held_out else None,
            weight_every=weight_every,
            step_of=lambda: self.step,
            precision=cfg.precision,
        )
        self.schedule = make_schedule(gen, self.generator is not None)
        # an architecture search with its own updates on split B (AdaShare's policy updates)
        # Any: a trunk's own hooks (arch_parameters, arch_step, make_arch_optimizer), duck-typed
        self.trunk: Any = cast(Any, getattr(self.net, "backbone", None))
        arch_params: list[nn.Parameter] = getattr(self.trunk, "arch_parameters", lambda: [])()
        self.arch_set, self.arch_aux_labels = arch_set, arch_aux_labels
        self.arch_optimizer: torch.optim.Optimizer | None = None
        if arch_params:
            if arch_set is None or len(cast(Sized, arch_set)) < cfg.batch_size:  # cast: a map-style data set
                raise ValueError(
                    f"{type(self.trunk).__name__} updates its architecture on held-out training images: pass "
                    f"arch_set= with at least batch_size = {cfg.batch_size} images "
                    "(maxl.train.build.hold_out_for_architecture)"
                )
            if arch_aux_labels is not None:
                check_aux_labels(arch_aux_labels, arch_set, getattr(net, "num_aux", None), psi)
            self.arch_optimizer = self.trunk.make_arch_optimizer()
        self.arch_batches: list[Tensor] = []  # the split-B indices of the last pass's batches (tests)
        self._arch_params: list[nn.Parameter] | None = None  # set inside arch_updates()
        self.gumbel_start = getattr(self.generator, "gumbel_tau", 0.0)  # τ0 of hard labels (0: soft)
        if gen.gumbel_tau_end is not None and self.generator is not None and not self.gumbel_start:
            raise ValueError("gumbel_tau_end needs a generator with hard labels (gumbel_tau > 0)")
        self.epoch = 0  # epochs completed
        self.step = 0  # multi-task steps completed
        self.history: list[dict] = []
        self._epoch: dict | None = None  # the epoch under way: its start's lrs, sums and position
        self._resumed: dict | None = None  # the part of an epoch a step-level checkpoint holds
        self._resumed_rng: dict | None = None  # its random state, put back once the epoch is positioned
        self._signals = StopSignals()
        self._label_warnings_given: set[str] = set()  # kinds of GeneratorLabelWarning already shown

    def _compile(self) -> None:
        """``torch.compile`` the backbones in place, or say why not (a double-backward engine)."""
        generated = self.learner.generated
        engine = get_engine(generated.meta) if generated is not None else None
        if engine is not None and engine.needs_double_backward:
            warnings.warn(
                f"--compile: the meta-gradient engine {engine.name!r} differentiates a backward pass (double "
                "backward), which torch.compile does not support; training eager (the jvp and first engines "
                "compile: --meta-engine jvp)",
                CompileFallbackWarning,
                stacklevel=3,
            )
            return
        for module in (self.net, self.generator):
            backbone = getattr(module, "backbone", None)
            if isinstance(backbone, nn.Module):
                backbone.compile()

    # ----------------------------------------------------------------- data
    def _loader(self, dataset: Dataset, train: bool, pass_index: int = 0, skip: int = 0) -> DataLoader:
        """Batches of this process. Training: the global order is a permutation drawn from
        (seed, pass_index) alone, so it is the same for any number of processes and after a
        resume; process r takes global positions r, r + N, ... (DistributedSampler), so global
        batch k is the same images as batch k of a one-process run; the first ``skip`` batches
        are left out without loading them. Test: process r takes images r, r + N, ... in order.
        A data set with a batch transform (:class:`~maxl.data.datasets.ImageTensorDataset`'s
        ``batch_transform``) yields whole uint8 batches in one gather each (:func:`_batched`)."""
        rank, size = distributed.rank(), distributed.world_size()
        batched = _batch_transform(dataset) is not None
        if not train:
            if batched:
                order = range(rank, len(cast(Sized, dataset)), size)  # cast: a map-style data set has a length
                return _batched(dataset, order, self.config.batch_size, drop_last=False)
            if size > 1:
                dataset = Subset(dataset, range(rank, len(cast(Sized, dataset)), size))  # cast: as above
            return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=False, num_workers=0)
        sampler: DistributedSampler = DistributedSampler(
            dataset, num_replicas=size, rank=rank, shuffle=True, seed=self.config.seed, drop_last=True
        )
        sampler.set_epoch(pass_index)
        local_batch = self.config.batch_size // size
        if batched:
            return _batched(dataset, _After(sampler, skip * local_batch), local_batch, drop_last=True)
        return DataLoader(
            dataset, batch_size=local_batch, sampler=_After(sampler, skip * local_batch), drop_last=True, num_workers=0
        )

    def _batches(self, dataset: Dataset, train: bool, pass_index: int = 0, skip: int = 0):
        """The batches ``(x, y, index)`` on the device. The loader's iterator is made at once (it
        draws from torch's generator), not at the first batch. With a batch transform, the
        uint8 images are moved to the device and cropped, flipped and normalised there, each
        image with its draws of this pass (:func:`maxl.data.augment.pass_draws`: from the seed,
        the pass and the image's index alone)."""
        batches = iter(self._loader(dataset, train, pass_index, skip))
        num_primary = getattr(self.net, "num_primary", None)
        augment = _batch_transform(dataset)
        draws = None
        if augment is not None and augment.augment and train:
            draws = pass_draws(augment, len(cast(Sized, dataset)), self.config.seed, pass_index)

        def on_device():
            for x, y, idx in batches:
                y, idx = torch.as_tensor(y), torch.as_tensor(idx)
                if augment is None:
                    check_primary_labels(y, num_primary)  # on the host: no device synchronisation
                else:  # uint8 [B, C, H, W] -> float32, on the device (check_data checked every label)
                    x = augment(x.to(self.device), draws.take(idx, self.device) if draws is not None else None)
                x = x.to(self.device)
                if self.config.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield x, y.to(self.device), idx.to(self.device)

        return on_device()

    def _weight_indices(self, step: int) -> Tensor:
        """The positions in ``weight_set`` of the outer batch of the weight step before multi-task
        step ``step`` (int64 ``[min(batch_size, N)]``), from the run's seed and ``step`` alone: the
        same on every process (each takes the whole global batch) and after a resume.

        A held-out split: ``batch_size`` images drawn without replacement by a generator seeded by
        the seed and the step. The training images themselves (``weight_from_training``): batch k
        of epoch e (step = e·S + k, S the epoch's steps) is positions k·B .. (k+1)·B − 1 of a
        permutation drawn from (seed, e) on a stream of its own (numpy's ``SeedSequence``), so each
        epoch's outer batches are a pass over a shuffle that is not the training loader's, as the
        second training loader of Auto-λ's reference implementation."""
        assert self.weight_set is not None  # only a meta-learned weighting asks
        n = len(cast(Sized, self.weight_set))  # cast: a map-style data set has a length
        size = min(self.config.batch_size, n)
        if self.weight_from_training:
            per_epoch = max(1, n // self.config.batch_size)  # the training loader's steps (drop_last)
            epoch, k = divmod(step, per_epoch)
            state = np.random.SeedSequence([_WEIGHT_STREAM, self.config.seed, epoch]).generate_state(2, dtype=np.uint32)
            gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            return torch.randperm(n, generator=gen)[k * size : (k + 1) * size]
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        return torch.randperm(n, generator=gen)[:size]

    def _held_out_batch(self, step: int) -> tuple[Tensor, Tensor]:
        """The outer batch ``(x_v [B', C, H, W], y_v [B'])`` of the weight step before multi-task
        step ``step``: the images of :meth:`_weight_indices` on the device."""
        assert self.weight_set is not None  # only a meta-learned weighting asks
        items = [self.weight_set[i] for i in self._weight_indices(step).tolist()]
        x = torch.stack([item[0] for item in items]).to(self.device)
        y = torch.as_tensor([int(item[1]) for item in items]).to(self.device)
        return x, y

    # ----------------------------------------------------------------- epochs
    def train_epoch(self, resumed: dict | None = None) -> dict[str, float]:
        """One epoch of the schedule, or its rest from the ``resumed`` part of a step-level
        checkpoint; returns its record (losses, accuracy, label usage)."""
        self.learner.train()
        if self.gumbel_start:  # this epoch's temperature, from the epoch alone (the same after a resume)
            assert self.generator is not None  # gumbel_start is its τ0
            # ignore: torch's stubs type nn.Module.__setattr__'s value as Tensor | Module, yet any attribute is allowed
            self.generator.gumbel_tau = gumbel_temperature(  # type: ignore[assignment]
                self.gumbel_start, self.gen_config.gumbel_tau_end, self.epoch, self.config.epochs
            )
        # an architecture with a schedule of its own (AdaShare's phases): set from the epoch alone
        begin_epoch = getattr(getattr(self.net, "backbone", None), "begin_epoch", None)
        arch_record = begin_epoch(self.epoch) if callable(begin_epoch) else {}
        hierarchy = getattr(self.generator, "hierarchy", None)
        sums = EpochSums(
            self.steps.task_keys, LabelUsage(hierarchy) if hierarchy is not None else None, self.human_labels
        )
        start = None
        if resumed is not None:
            sums.load_state_dict(resumed["sums_per_rank"][distributed.rank()])
            start = Position(**resumed["position"])
        self._epoch = {"lrs": resumed["lrs"] if resumed is not None else self._lrs(), "sums": sums}
        tag = f"epoch {self.epoch + 1}/{self.config.epochs}"
        self.schedule.run(
            self.steps, _TrainBatches(self), sums, lambda it, desc: self.log.bar(it, f"{tag} {desc}"), self, start
        )
        if self.arch_optimizer is not None and getattr(self.trunk, "arch_step_active", False):
            arch_record.update(self.arch_pass())
        self.learner.end_epoch()  # loss-history weightings (DWA) roll over
        record = distributed.all_reduce_values(sums.record(), self.device)  # equal shares: the global means
        record.update(arch_record)
        if sums.usage is not None:  # label usage of this process's share (rank 0's is the one logged)
            record.update(sums.usage.summary())
        if self.gumbel_start:
            assert self.generator is not None  # gumbel_start is its τ0
            # cast: a float attribute, which nn.Module's __getattr__ types as Tensor | Module
            record["gumbel_tau"] = cast(float, self.generator.gumbel_tau)
        return record

    def arch_pass(self) -> dict[str, float]:
        """One pass over ``arch_set`` (split B) of architecture updates (:meth:`arch_update`, one per
        batch, inside :meth:`arch_updates`). The batches' order is drawn from (seed, epoch) alone
        (the same after a resume); their split-B indices are kept in ``arch_batches``. Returns
        ``{"arch_loss": mean loss}``."""
        assert self.arch_set is not None  # arch_parameters() said so
        total, count = 0.0, 0
        self.arch_batches = []
        with self.arch_updates() as update:
            for x, y, idx in self._batches(self.arch_set, True, 3_000_000 + self.epoch):
                self.arch_batches.append(idx.cpu())
                total, count = total + update(x, y, idx), count + 1
        return {"arch_loss": total / max(count, 1)}

    @contextlib.contextmanager
    def arch_updates(self) -> Iterator[Callable[[Tensor, Tensor, Tensor], float]]:
        """The context of architecture updates; yields :meth:`arch_update`. Inside, the trunk is in
        its architecture step (``trunk.arch_step()``: e.g. AdaShare's policy logits trainable and
        its sparsity and sharing losses part of the penalty, MTL-NAS's gates σ(α)), BatchNorm
        normalises with each batch's statistics and keeps its running ones
        (:func:`auxtasks.learner.frozen_running_stats`), and the weighting combines the task losses
        in evaluation mode (its current weights; a loss-history weighting such as DWA records no
        architecture batch). All three are undone on leaving, also after an error.

        Raises:
            ValueError: the network has no architecture of its own to update (no trunk
                ``arch_parameters()``, or a fixed architecture).
        """
        if self.arch_optimizer is None:
            raise ValueError(
                f"{type(self.trunk).__name__}: no architecture parameters to update (arch_parameters() is "
                "empty: not an architecture search, a fixed architecture, or the joint scheme)"
            )
        weighting = self.learner.weighting
        weighting.eval()
        try:
            with self.trunk.arch_step(), frozen_running_stats(self.learner):
                self._arch_params = list(self.trunk.arch_parameters())
                try:
                    yield self.arch_update
                finally:
                    self._arch_params = None
        finally:
            weighting.train()

    def arch_update(self, x: Tensor, y: Tensor, idx: Tensor) -> float:
        """One architecture update on a batch of split B: the multi-task loss (with the trunk's
        penalty, e.g. AdaShare's sparsity and sharing losses or MTL-NAS's minimum-entropy term)
        differentiated with respect to the trunk's ``arch_parameters()`` only, the gradients
        averaged over the processes, and one step of the trunk's optimiser (``arch_optimizer``);
        the weights' ``.grad`` is not touched. Only inside :meth:`arch_updates`.

        Args:
            x: images ``[B, C, H, W]`` on the device.
            y: primary labels int64 ``[B]``.
            idx: the images' positions in ``arch_set`` int64 ``[B]`` (they pick the fixed
                auxiliary labels ``arch_aux_labels``, where the method has them).

        Returns:
            The batch's loss (a float).

        Raises:
            RuntimeError: called outside :meth:`arch_updates`.
            NonFiniteLossError: a non-finite loss (:class:`~maxl.train.checks.NonFiniteLossError`, a
                FloatingPointError).
        """
        params = self._arch_params
        if params is None or self.arch_optimizer is None:
            raise RuntimeError("Trainer.arch_update() runs only inside `with trainer.arch_updates() as update:`")
        given = None
        if self.arch_aux_labels is not None:
            supervised = [t.name for t in self.learner.tasks if isinstance(t, SupervisedLabels)]
            if supervised:
                labels = self.arch_aux_labels.to(idx.device)[idx]
                given = {name: labels for name in supervised}
        out = self.learner(x, y, aux_targets=given)
        self.checks.losses(arch_loss=out.loss)
        grads = list(torch.autograd.grad(out.loss, params))
        distributed.all_reduce_mean_(grads)
        self.arch_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = g
        self.arch_optimizer.step()
        self.arch_optimizer.zero_grad(set_to_none=True)
        return out.loss.item()

    def choose_architecture(self) -> dict:
        """After a search: the trunk's ``sample_architectures`` (AdaShare: N policies drawn from
        the learned distribution), each scored by its primary-task accuracy on the validation set
        (``val_set``, held out from the training images; the test set is not read); the draws
        from the run's seed alone. Returns the trunk's choice (policies, scores, the chosen one)."""
        assert self.val_set is not None  # fit asks only with a validation set
        val_set = self.val_set
        choice = self.trunk.sample_architectures(lambda: self.evaluate(val_set)["test_acc"], self.config.seed + 4)
        if self.config.progress and self.is_main:
            best = choice["scores"][choice["chosen_index"]]
            n = len(choice["scores"])
            print(f"[architecture] best of {n} samples on validation: {choice['chosen']} ({best:.4f})")
        return choice

    @torch.no_grad()
    def evaluate(self, dataset: Dataset | None = None) -> dict[str, float]:
        """Primary-task loss and accuracy on ``dataset`` (default: the test set), eval mode."""
        self.net.eval()
        correct = total = 0
        loss_sum = 0.0
        for x, y, _ in self._batches(dataset if dataset is not None else self.test_set, False):
            logits, _ = self.net(x)
            loss_sum += self.loss_fn(logits, y).item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
        if distributed.world_size() > 1:  # sums over the processes' disjoint shares of the test set
            sums = distributed.all_reduce_values({"l": loss_sum, "c": correct, "t": total}, self.device, mean=False)
            loss_sum, correct, total = sums["l"], round(sums["c"]), round(sums["t"])
        return {"test_loss": loss_sum / max(total, 1), "test_acc": correct / max(total, 1)}

    def _lrs(self) -> dict[str, float]:
        lrs = {"lr": self.optimizer.param_groups[0]["lr"]}
        if self.gen_optimizer is not None:
            lrs["gen_lr"] = self.gen_optimizer.param_groups[0]["lr"]
        return lrs

    # ----------------------------------------------------------------- steps (called by the schedule)
    def positioned(self) -> None:
        """The epoch's iterators are made: put back the random state of the step-level
        checkpoint being resumed (making them drew from torch's generator)."""
        if self._resumed_rng is not None:
            restore_rng(self._resumed_rng, self.device)
            self._resumed_rng = None

    def after_step(self, position: Position) -> None:
        """After each step: a step-level checkpoint every ``checkpoint_every`` steps of the
        epoch; on a stop signal, a checkpoint and :class:`~maxl.train.preemption.Preempted`."""
        signal_name = self._signals.agreed(self.device)
        every = self.config.checkpoint_every
        done = position.pass_ * len(_TrainBatches(self)) + position.batch  # steps of this epoch, both passes
        if self.out_dir is not None and (signal_name or (every and done % every == 0)):
            assert self._epoch is not None  # after_step runs inside train_epoch, which sets it
            self.save_checkpoint(self.out_dir / "checkpoint.pt", {**self._epoch, "position": position})
        if signal_name:
            raise self._preempted(signal_name)

    def _preempted(self, signal_name: str) -> Preempted:
        """What :meth:`fit` raises once the checkpoint of the signal is written."""
        return Preempted(
            signal_name, self.out_dir / "checkpoint.pt" if self.out_dir is not None else None, self.epoch, self.step
        )

    # ----------------------------------------------------------------- the run
    def fit(self) -> dict:
        """Train for the remaining epochs; returns the summary (also ``summary.json``).

        SIGTERM, SIGINT and SIGUSR1 stop it after the step under way, with a checkpoint.

        Raises:
            Preempted: one of these signals stopped the run (its checkpoint is written).
        """
        with self._signals:
            try:
                return self._fit()
            finally:
                self.log.close()

    def _fit(self) -> dict:
        start_time = time.time()
        for _ in range(self.epoch, self.config.epochs):
            t0 = time.time()
            resumed, self._resumed = self._resumed, None
            trained = self.train_epoch(resumed)
            assert self._epoch is not None  # train_epoch set it
            record = {"epoch": self.epoch + 1, **self._epoch["lrs"], **trained}  # the lrs of the epoch's start
            if self.val_set is not None:
                record.update({k.replace("test_", "val_"): v for k, v in self.evaluate(self.val_set).items()})
            record.update(self.evaluate())
            self.checks.parameters({"multi-task network": self.net, "label-generation network": self.generator})
            record["epoch_time_s"] = time.time() - t0
            warn_label_usage(
                record,
                getattr(self.generator, "hierarchy", None),  # collapsed or uniform labels
                already_warned=self._label_warnings_given,
                first_record=self.history[0] if self.history else None,
            )
            for scheduler in (self.scheduler, self.gen_scheduler):
                if scheduler is not None and scheduler is not self.steps.per_step_scheduler:
                    scheduler.step()
            self.epoch += 1
            self.history.append(record)
            self.log.epoch(record)
            if self.out_dir is not None:  # after the metrics line: load_checkpoint drops a record too many
                self.save_checkpoint(self.out_dir / "checkpoint.pt")
            signal_name = self._signals.agreed(self.device)
            if signal_name and self.epoch < self.config.epochs:  # signalled outside a step: this checkpoint
                raise self._preempted(signal_name)
        summary = self.summary(time.time() - start_time)
        if self.val_set is not None and getattr(self.trunk, "samples", 0) > 0:  # e.g. AdaShare's best of N
            summary["adashare_samples"] = self.choose_architecture()
        if self.out_dir is not None and self.is_main:
            atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    def summary(self, wall_time_s: float) -> dict:
        """Final, best and last-5-mean test accuracy, epochs and times of the run so far."""
        accs = [r["test_acc"] for r in self.history]
        summary = {
            "method": self.config.method,
            "epochs": self.epoch,
            "final_test_acc": accs[-1] if accs else math.nan,
            "best_test_acc": max(accs) if accs else math.nan,
            "best_epoch": 1 + int(np.argmax(accs)) if accs else None,
            "last5_mean_test_acc": float(np.mean(accs[-5:])) if accs else math.nan,
            "wall_time_s": wall_time_s,
            "mean_epoch_time_s": float(np.mean([r["epoch_time_s"] for r in self.history])) if accs else math.nan,
        }
        vals = [r["val_acc"] for r in self.history if "val_acc" in r]
        if vals:
            summary.update(final_val_acc=vals[-1], best_val_acc=max(vals), last5_mean_val_acc=float(np.mean(vals[-5:])))
        return summary

    # ----------------------------------------------------------------- checkpoints
    def _stateful(self) -> dict:
        """The objects whose ``state_dict`` a checkpoint holds, by entry name."""
        objects = {"net": self.net, "optimizer": self.optimizer, "scheduler": self.scheduler}
        if self.generator is not None:
            objects.update(generator=self.generator, gen_optimizer=self.gen_optimizer, gen_scheduler=self.gen_scheduler)
        if self.arch_optimizer is not None:
            objects["arch_optimizer"] = self.arch_optimizer
        return objects

    def state_dict(self, epoch_part: dict | None = None) -> dict:
        """The full training state (what :meth:`save_checkpoint` writes); with ``epoch_part``
        (``lrs``, ``sums``, ``position`` of the epoch under way) a step-level one, whose
        ``epoch_part`` entry lets :meth:`fit` continue the epoch at its position. Under torchrun
        every process must call it: the processes' torch RNG states are gathered."""
        state = {name: obj.state_dict() for name, obj in self._stateful().items()}
        # what the learner adds to net and generator: new heads, the weighting's state
        held = {t.data_ptr() for m in (self.net, self.generator) if m is not None for t in m.state_dict().values()}
        state["learner"] = {k: v for k, v in self.learner.state_dict().items() if v.data_ptr() not in held}
        state.update(
            epoch=self.epoch, step=self.step, history=self.history, config=self.record, rng=capture_rng(self.device)
        )
        if epoch_part is not None:  # each process's sums of its share of the epoch's batches
            state["epoch_part"] = {
                "lrs": epoch_part["lrs"],
                "position": epoch_part["position"].to_dict(),
                "sums_per_rank": distributed.all_gather_object(epoch_part["sums"].state_dict()),
            }
        return state

    def save_checkpoint(self, path: str | os.PathLike, epoch_part: dict | None = None) -> None:
        """Write the full training state to ``path`` atomically (rank 0; under torchrun every
        process must call it, as the RNG states are gathered); ``epoch_part`` as in
        :meth:`state_dict`."""
        state = self.state_dict(epoch_part)
        if self.is_main:
            atomic_torch_save(state, Path(path))

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore the state written by :meth:`save_checkpoint`, so that :meth:`fit` continues
        to exactly the numbers of an uninterrupted run. ``metrics.jsonl`` of the run folder is
        rewritten from the checkpoint's history (a crash between the metrics line and the
        checkpoint of an epoch would otherwise leave that epoch twice).

        Raises:
            FileNotFoundError: no file at ``path``.
            CheckpointError: the file is truncated or corrupt, holds pickled objects other
                than tensors, numbers, strings and containers (refused), is not a maxl
                checkpoint of this method, or was written with other settings than this
                trainer's (each differing setting is named; those in
                :data:`~maxl.train.config.RESUMABLE_CHANGES` may differ), or holds a state (an
                optimiser's, the network's) that does not fit this trainer's objects.
        """
        required = (*self._stateful(), "epoch", "step", "history", "rng", "config")
        state = read_checkpoint(path, self.device, required)
        differences = config_differences(migrate(state["config"], announce=False), self.record)
        if differences:
            raise CheckpointError(
                f"{path} was written with other settings than this trainer's: {'; '.join(differences)}"
            )
        for name, obj in self._stateful().items():
            try:
                obj.load_state_dict(state[name])
            except (ValueError, RuntimeError) as err:  # e.g. an optimiser over another number of parameters
                raise CheckpointError(
                    f"{path}: its {name!r} entry does not fit this trainer's {name}: {err}. The checkpoint was "
                    "written by a version of maxl whose network held other parameters (e.g. a derived MTL-NAS or "
                    "AdaShare architecture, --mtlnas-edges or --adashare-policy, before issue 25's fix held unused "
                    "gate or policy logits); start the run afresh"
                ) from None
        unexpected = self.learner.load_state_dict(state.get("learner", {}), strict=False).unexpected_keys
        if unexpected:
            raise CheckpointError(f"checkpoint {path} holds learner entries this learner lacks: {unexpected}")
        self.epoch, self.step, self.history = state["epoch"], state["step"], list(state["history"])
        restore_rng(state["rng"], self.device)
        self._resumed = state.get("epoch_part")  # a step-level checkpoint: fit continues inside the epoch
        self._resumed_rng = state["rng"] if self._resumed is not None else None
        if self._resumed is not None and len(self._resumed["sums_per_rank"]) != distributed.world_size():
            raise CheckpointError(
                f"{path} was written inside epoch {self.epoch + 1} by "
                f"{len(self._resumed['sums_per_rank'])} processes; resume it on as many (it holds "
                "each one's share of the epoch), or from an epoch's end on any number"
            )
        if self.out_dir is not None and self.is_main:
            atomic_write_text(self.out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))


def _batch_transform(dataset: Dataset) -> BatchAugment | None:
    """The batch transform of an :class:`ImageTensorDataset`, or None: then the per-image path."""
    return dataset.batch_transform if isinstance(dataset, ImageTensorDataset) else None


class _Gather(Dataset):
    """A data set whose item is a whole batch: ``dataset.batch(indices)``."""

    def __init__(self, dataset: ImageTensorDataset):
        self.dataset = dataset

    def __getitem__(self, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.dataset.batch(indices)

    def __len__(self) -> int:
        return len(self.dataset)


def _batched(dataset: Dataset, order, batch_size: int, drop_last: bool) -> DataLoader:
    """A loader of uint8 batches ``(images [B, C, H, W], labels [B], indices [B])`` of the
    ImageTensorDataset ``dataset`` in the order of ``order`` (a sampler or a range of indices),
    one gather per batch. It is a ``DataLoader`` (``batch_size=None`` over the batches' index
    tensors), so that making its iterator draws from torch's generator as the per-image
    loader's does: the runs' other random numbers stay where they were."""
    base = cast(ImageTensorDataset, dataset)  # cast: _batch_transform found its batch transform
    chunks = list(torch.tensor(list(order), dtype=torch.int64).split(batch_size))
    if drop_last and chunks and len(chunks[-1]) < batch_size:
        chunks.pop()
    return DataLoader(_Gather(base), batch_size=None, sampler=chunks, num_workers=0)


class _After(Sampler):
    """The indices of ``sampler`` after its first ``skip``."""

    def __init__(self, sampler: Sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(cast(Sized, self.sampler)) - self.skip)  # cast: the samplers here have a length


class _TrainBatches:
    """The training batches of the trainer's current epoch, pass by pass
    (:class:`maxl.train.schedules.Batches`)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def _order(self, k: int) -> int:
        """Passes 0 and 1 draw the orders 2e and 2e + 1 (as always); pass 2 (outer batches) its own."""
        epoch = self.trainer.epoch
        return 2 * epoch + k if k < 2 else 1_000_000 + epoch

    def __call__(self, k: int, skip: int = 0):
        return self.trainer._batches(self.trainer.train_set, True, self._order(k), skip)

    def __len__(self) -> int:
        return len(cast(Sized, self.trainer.train_set)) // self.trainer.config.batch_size  # cast: as in Trainer
