"""The training loop: multi-task network, optional auxiliary labels, optional generator.

Nothing here depends on a particular backbone or data set: the trainer takes the networks
and data sets it is given. Data sets yield ``(image [C, H, W], primary label, index)``.

Methods:
    * ``single``: the primary task alone.
    * ``human``, ``random``, ``kmeans``: a fixed auxiliary label per training image
      (``aux_labels[index]``, made by the caller), learnt as a second task.
    * ``maxl``: auxiliary labels from the label-generation network, which is trained with
      the meta-gradient of :mod:`maxl.meta.gradient` (Liu, Davison, Johns, NeurIPS 2019, Alg. 1).

Schedules for ``maxl``:
    * ``alternate`` (the reference code): each epoch, one pass of multi-task updates with
      the generator frozen, then one pass over the reshuffled training set of generator
      updates with the multi-task network frozen.
    * ``per-step``: in one pass, a generator update every ``gen_every`` steps; labels and
      look-ahead of that step come from the networks before either update. With ``fused``
      (default) that step's multi-task update and look-ahead share one forward/backward
      (:func:`maxl.meta.fused_step`; same gradients, fewer passes).

The run folder receives ``config.json`` (written by the caller), ``metrics.jsonl`` (one
JSON record per epoch), ``summary.json`` and ``checkpoint.pt`` (written atomically), and
with ``tensorboard=True`` the same metrics as TensorBoard events in ``tensorboard/``.

Inside a ``torch.distributed`` process group (``torchrun``, see :mod:`maxl.train.distributed`)
every process trains on its share of each batch and only rank 0 writes files.
"""

from __future__ import annotations

import ast
import json
import math
import os
import pickle
import random
import re
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from maxl.train import distributed
from maxl.train.determinism import enable_determinism
from maxl.train.diagnostics import LabelUsage, warn_label_usage
from maxl.meta import FUSED_ENGINES, fused_step
from maxl.core.hierarchy import Hierarchy
from maxl.core.losses import LOSSES, classification_loss
from maxl.meta import MetaConfig, meta_gradient
from maxl.train.tensorboard_log import TensorBoardLog

__all__ = ["TrainConfig", "Trainer", "METHODS", "FIXED_LABEL_METHODS", "SCHEDULES", "NonFiniteLossError",
           "NonFiniteGradientError", "CheckpointError"]

METHODS = ("single", "human", "random", "kmeans", "maxl")
FIXED_LABEL_METHODS = ("human", "random", "kmeans")
SCHEDULES = ("alternate", "per-step")


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or Inf; the message names the loss, the epoch and the step."""


class NonFiniteGradientError(FloatingPointError):
    """A gradient (or, at the end of an epoch, a parameter) became NaN or Inf; the message
    names the parameter, the network, the epoch and the step."""


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded: corrupt, unsafe, or from a run with other settings."""


@dataclass
class TrainConfig:
    """Optimisation settings; the defaults are the paper's CIFAR-100 settings.

    Attributes:
        method: one of :data:`METHODS`.
        epochs: number of epochs (200 in the paper).
        batch_size: images per batch (100).
        lr: SGD learning rate of the multi-task network (0.01).
        momentum, weight_decay: of the multi-task SGD (0 and 0 in the reference code).
        gen_lr: SGD learning rate of the generator (1e-3).
        gen_weight_decay: weight decay of the generator (5e-4).
        lr_step, lr_gamma: both learning rates are multiplied by ``lr_gamma`` every
            ``lr_step`` epochs (50 and 0.5).
        loss: ``"focal"`` (the reference code, γ = 2) or ``"ce"``, for both heads.
        focal_gamma: γ of the focal loss.
        schedule: one of :data:`SCHEDULES` (``maxl`` only).
        gen_every: generator update every k multi-task steps (``per-step`` only).
        fused: ``per-step`` only: compute a generator step's multi-task update and look-ahead
            from one shared forward/backward (:func:`maxl.meta.fused_step`); the
            ``higher`` engine always takes the two separately.
        seed: seeds python, numpy, torch and the data order.
        device: ``"cpu"``, ``"cuda"``, ... or ``"auto"`` (CUDA if available).
        progress: show a tqdm progress bar.
        meta: settings of the meta step; ``meta.inner_lr`` None means ``lr``.
        deterministic: use only deterministic kernels (see :mod:`maxl.train.determinism`).
        tensorboard: also write the metrics as TensorBoard events (needs ``tensorboard``).
    """

    method: str = "maxl"
    epochs: int = 200
    batch_size: int = 100
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    gen_lr: float = 1e-3
    gen_weight_decay: float = 5e-4
    lr_step: int = 50
    lr_gamma: float = 0.5
    loss: str = "focal"
    focal_gamma: float = 2.0
    schedule: str = "alternate"
    gen_every: int = 1
    fused: bool = True
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    meta: MetaConfig = field(default_factory=MetaConfig)
    deterministic: bool = False
    tensorboard: bool = False

    def __post_init__(self):
        if isinstance(self.meta, dict):
            self.meta = MetaConfig(**self.meta)
        checks = [
            (self.method in METHODS, f"unknown method {self.method!r}; expected one of {METHODS}"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}"),
            (self.loss in LOSSES, f"unknown loss {self.loss!r}; expected one of {LOSSES}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be >= 2 (BatchNorm), got {self.batch_size}"),
            (self.lr > 0 and self.gen_lr > 0, f"learning rates must be > 0, got {self.lr}, {self.gen_lr}"),
            (self.gen_every >= 1, f"gen_every must be >= 1, got {self.gen_every}"),
            (self.lr_step >= 1, f"lr_step must be >= 1, got {self.lr_step}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and distributed.is_distributed():
        device = torch.device("cuda", distributed.local_rank())  # one GPU per process under torchrun
    return device


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``:
    a crash mid-write never leaves a truncated checkpoint behind."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Trainer:
    """Train a multi-task network (and a label-generation network for ``maxl``).

    Args:
        net: the multi-task network, ``net(x) -> (primary [B, P], aux [B, K] or None)``.
        train_set, test_set: data sets yielding ``(image [C, H, W], primary label, index)``.
        config: :class:`TrainConfig`.
        out_dir: run folder (created); None writes nothing.
        generator: the label-generation network (``maxl`` only).
        aux_labels: int64 ``[N_train]`` fixed auxiliary labels indexed by the training
            sample's index (``human``, ``random``, ``kmeans``), each inside its sample's ψ block.
        learner: an :class:`auxtasks.AuxiliaryLearner` on ``net``'s backbone and heads (see
            :func:`maxl.train.aux_learner.build_learner`): the multi-task step then trains every
            task of the learner with its weighting, and the generator's look-ahead includes them.
        psi: the hierarchy ψ of ``aux_labels``; if given, each label is checked to lie in its
            sample's block (needs the training set's ``labels`` tensor).

    Inside a ``torch.distributed`` process group, ``config.batch_size`` is the global batch:
    each of the N processes takes ``batch_size / N`` images of it.

    Raises:
        ValueError: the networks, images or labels do not fit the method or each other (the
            message names the bad value and what was expected).
        ImportError: ``config.tensorboard`` without the ``tensorboard`` package.
    """

    def __init__(self, net: nn.Module, train_set: Dataset, test_set: Dataset, config: TrainConfig,
                 out_dir: str | os.PathLike | None = None, generator: nn.Module | None = None,
                 aux_labels: Tensor | None = None, learner: nn.Module | None = None,
                 psi: Hierarchy | list[int] | None = None):
        self.config = cfg = config
        if cfg.deterministic:
            enable_determinism()
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0  # only rank 0 writes files and prints
        if cfg.batch_size % self.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} (the global batch) is not divisible by the "
                             f"{self.world_size} processes")
        if cfg.method == "maxl" and generator is None:
            raise ValueError("method 'maxl' needs a label-generation network (generator=)")
        if cfg.method in FIXED_LABEL_METHODS and aux_labels is None:
            raise ValueError(f"method {cfg.method!r} needs fixed auxiliary labels (aux_labels=)")
        if cfg.method != "single" and getattr(net, "aux_head", None) is None:
            raise ValueError(f"method {cfg.method!r} needs a multi-task network with an auxiliary head")
        self.device = resolve_device(cfg.device)
        self.net = net.to(self.device)
        self.generator = generator.to(self.device) if generator is not None else None
        if aux_labels is not None:
            _check_aux_labels(aux_labels, train_set, getattr(net, "num_aux", None), psi)
        self.aux_labels = aux_labels.to(self.device) if aux_labels is not None else None
        self.learner = learner.to(self.device) if learner is not None else None
        # per-task losses and weights of the learner, averaged over the epoch like the losses above
        self._learner_keys = () if learner is None else (
            *(f"loss_{n}" for n in learner.task_names[1:]), *(f"weight_{n}" for n in learner.task_names))
        self.train_set, self.test_set = train_set, test_set
        self._check_data()
        self.loss_fn = classification_loss(cfg.loss, cfg.focal_gamma)
        if cfg.meta.inner_lr is None:
            cfg.meta.inner_lr = cfg.lr
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None and self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.tensorboard:
            TensorBoardLog.check_available()  # fail now, not after the first epoch
        self._tensorboard: TensorBoardLog | None = None  # opened at the first record
        # the network that takes the multi-task steps: DDP all-reduces its gradients in backward;
        # the meta step uses self.net itself (functional_call, no all-reduce in the look-ahead)
        self.train_net = self.net
        if self.world_size > 1:
            self.train_net = DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.generator is not None:  # same start on every process, whatever the seeds
                distributed.broadcast_([t.data for t in self.generator.state_dict().values()])
        self._meta_steps = 0
        self._label_warnings_given: set[str] = set()  # kinds of GeneratorLabelWarning already shown
        if self.learner is not None and self.world_size > 1:
            raise ValueError("auxiliary tasks (--aux/--weighting) are not supported with torchrun yet: "
                             "run them in a single process")

        params = self.learner.network_parameters() if self.learner is not None else self.net.parameters()
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.lr_step, cfg.lr_gamma)
        self.gen_optimizer = self.gen_scheduler = None
        if self.generator is not None:
            self.gen_optimizer = torch.optim.SGD(self.generator.parameters(), lr=cfg.gen_lr,
                                                 weight_decay=cfg.gen_weight_decay)
            self.gen_scheduler = torch.optim.lr_scheduler.StepLR(self.gen_optimizer, cfg.lr_step, cfg.lr_gamma)
        self.epoch = 0  # epochs completed
        self.step = 0  # multi-task steps completed
        self.history: list[dict] = []

    # ----------------------------------------------------------------- data
    def _loader(self, dataset: Dataset, train: bool, pass_index: int = 0) -> DataLoader:
        """Batches of this process. Training: the global order is a permutation drawn from
        (seed, pass_index) alone, so it is the same for any number of processes and after a
        resume; process r takes global positions r, r + N, ... (DistributedSampler), so global
        batch k is the same images as batch k of a one-process run. Test: process r takes
        images r, r + N, ... in order."""
        if not train:
            if self.world_size > 1:
                dataset = Subset(dataset, range(self.rank, len(dataset), self.world_size))
            return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=False, num_workers=0)
        sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                     seed=self.config.seed, drop_last=True)
        sampler.set_epoch(pass_index)
        return DataLoader(dataset, batch_size=self.config.batch_size // self.world_size, sampler=sampler,
                          drop_last=True, num_workers=0)

    def _check_data(self) -> None:
        """Fail at start-up, not mid-epoch, on images or labels that do not fit the networks."""
        num_primary = getattr(self.net, "num_primary", None)
        for split, dataset in (("training", self.train_set), ("test", self.test_set)):
            if len(dataset) == 0:
                raise ValueError(f"the {split} set is empty")
            labels = getattr(dataset, "labels", None)
            if num_primary is not None and isinstance(labels, Tensor) and len(labels):
                bad = ((labels < 0) | (labels >= num_primary)).nonzero().flatten()
                if len(bad):
                    raise ValueError(
                        f"{split} sample {int(bad[0])} has primary label {int(labels[bad[0]])}, but the network "
                        f"has {num_primary} primary classes (labels 0..{num_primary - 1}); {len(bad)} of "
                        f"{len(labels)} labels are out of range"
                    )
            with torch.random.fork_rng(devices=[]):  # an augmenting transform draws random numbers
                image = dataset[0][0]
            if not isinstance(image, Tensor) or image.ndim != 3 or not image.dtype.is_floating_point:
                raise ValueError(
                    f"{split} sample 0 must be a float image [C, H, W], got "
                    f"{getattr(image, 'dtype', type(image).__name__)} {tuple(getattr(image, 'shape', ()))}"
                )
            for name, module in (("multi-task network", self.net), ("label-generation network", self.generator)):
                if module is None:
                    continue
                was_training = module.training
                module.eval()  # no BatchNorm statistics are touched
                x = image[None].to(self.device)  # [1, C, H, W]
                try:
                    with torch.no_grad():
                        if module is self.net:
                            module(x)
                        else:
                            module(x, torch.zeros(1, dtype=torch.long, device=x.device))
                except (ValueError, RuntimeError) as err:
                    raise ValueError(
                        f"the {name} cannot take the {split} images, of shape {list(image.shape)} [C, H, W]: {err}"
                    ) from err
                finally:
                    module.train(was_training)

    def _check_batch(self, y: Tensor) -> None:
        num_primary = getattr(self.net, "num_primary", None)
        if num_primary is not None and len(y) and (y.min() < 0 or y.max() >= num_primary):
            bad = y[(y < 0) | (y >= num_primary)][0].item()
            raise ValueError(f"primary label {bad} in a training batch is out of range: the network has "
                             f"{num_primary} primary classes (labels 0..{num_primary - 1})")

    def _to_device(self, batch):
        x, y, idx = batch
        self._check_batch(torch.as_tensor(y))  # on the host: no device synchronisation
        return x.to(self.device), torch.as_tensor(y).to(self.device), torch.as_tensor(idx).to(self.device)

    # ----------------------------------------------------------------- steps
    def _check_finite(self, **losses: Tensor) -> None:
        where = ""
        if self.world_size > 1:  # a NaN/Inf on any process reaches the mean: every process stops here
            values = torch.stack([v.detach().float() for v in losses.values()])
            distributed.all_reduce_mean_([values])
            losses = dict(zip(losses, values))
            where = f" on at least one of the {self.world_size} processes"
        for name, value in losses.items():
            if not torch.isfinite(value):
                raise NonFiniteLossError(
                    f"{name} became {value.item()} at epoch {self.epoch + 1}, step {self.step + 1}{where}; "
                    "try a smaller learning rate"
                )

    def _check_finite_grads(self, named_grads, network: str) -> None:
        named_grads = [(n, g) for n, g in named_grads if g is not None]
        if not named_grads:
            return
        # one reduction per tensor, one host sync; the per-tensor search runs only on failure
        if torch.isfinite(torch.stack([torch.linalg.vector_norm(g.detach()) for _, g in named_grads]).sum()):
            return
        for name, g in named_grads:
            if not torch.isfinite(g).all():
                raise NonFiniteGradientError(
                    f"the gradient of {name} of the {network} became non-finite "
                    f"({int((~torch.isfinite(g)).sum())} of {g.numel()} entries NaN/Inf) at epoch "
                    f"{self.epoch + 1}, step {self.step + 1}, although the losses were finite; "
                    "try a smaller learning rate"
                )

    def _check_finite_parameters(self) -> None:
        for network, module in (("multi-task network", self.net), ("label-generation network", self.generator)):
            for name, p in (module.named_parameters() if module is not None else ()):
                if not torch.isfinite(p).all():
                    raise NonFiniteGradientError(
                        f"parameter {name} of the {network} became non-finite in epoch {self.epoch + 1}; "
                        "the checkpoint of the previous epoch is kept"
                    )

    def _aux_targets(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor | None:
        """Targets of the auxiliary head: float ``[B, K]`` rows, or None for ``single``."""
        if self.learner is not None:
            return None  # the learner's tasks make their own targets
        if self.config.method in FIXED_LABEL_METHODS:
            return torch.nn.functional.one_hot(self.aux_labels[idx], self.net.num_aux).to(x.dtype)
        if self.config.method == "maxl":
            with torch.no_grad():
                return self.generator(x, y)
        return None

    def _multitask_step(self, x: Tensor, y: Tensor, targets: Tensor | None, idx: Tensor | None = None
                        ) -> dict[str, float]:
        if self.learner is not None:
            return self._learner_step(x, y, targets, idx)
        primary_logits, aux_logits = self.train_net(x)
        primary_loss = self.loss_fn(primary_logits, y)
        loss = primary_loss
        stats = {}
        if targets is not None:
            aux_loss = self.loss_fn(aux_logits, targets)
            loss = primary_loss + aux_loss  # equal weights, as in the reference code
            stats["aux_loss"] = aux_loss.item()
        self._check_finite(primary_loss=primary_loss, multitask_loss=loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under DDP the gradients are averaged over the processes here
        self._check_finite_grads(((n, p.grad) for n, p in self.net.named_parameters()), "multi-task network")
        self.optimizer.step()
        stats["primary_loss"] = primary_loss.item()
        stats["primary_correct"] = (primary_logits.argmax(1) == y).sum().item()
        return stats

    def _fused_step(self, x: Tensor, y: Tensor):
        """A generator update and a multi-task update from one shared forward/backward; the
        same updates as :meth:`_generator_step` then :meth:`_multitask_step` on its labels."""
        r = fused_step(self.net, self.generator, x, y, self.loss_fn, self.config.meta)
        self._check_finite(primary_loss=r.primary_loss, multitask_loss=r.primary_loss + r.aux_loss,
                           meta_outer_loss=r.meta.outer_loss, neg_entropy=r.meta.neg_entropy)
        self.gen_optimizer.zero_grad(set_to_none=True)
        for p, g in zip((p for p in self.generator.parameters() if p.requires_grad), r.meta.grads):
            p.grad = g
        self.gen_optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip((p for p in self.net.parameters() if p.requires_grad), r.net_grads):
            p.grad = g
        self.optimizer.step()
        stats = {"aux_loss": r.aux_loss.item(), "primary_loss": r.primary_loss.item(),
                 "primary_correct": (r.primary_logits.argmax(1) == y).sum().item()}
        return r.meta, stats

    def _learner_step(self, x: Tensor, y: Tensor, targets: Tensor | None, idx: Tensor | None) -> dict[str, float]:
        """The multi-task step through the auxtasks learner: all tasks, the weighting's update."""
        generated = self.learner.generated
        given = {generated.name: targets} if targets is not None and generated is not None else None
        out = self.learner(x, y, index=idx, aux_targets=given)
        self._check_finite(**{f"{name}_loss": loss for name, loss in out.losses.items()}, multitask_loss=out.loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.learner.backward(out)
        self.optimizer.step()
        stats = {f"loss_{name}": loss.item() for name, loss in out.losses.items() if name != "primary"}
        stats.update({f"weight_{name}": w for name, w in self.learner.weighting.weights().items()})
        if self.config.method in out.losses:  # the method's own auxiliary head (maxl, human, ...)
            stats["aux_loss"] = stats[f"loss_{self.config.method}"]
        stats["primary_loss"] = out.losses["primary"].item()
        stats["primary_correct"] = (out.primary_logits.argmax(1) == y).sum().item()
        return stats

    def _generator_step(self, x: Tensor, y: Tensor):
        # replica-local look-ahead on this process's share of the batch (see maxl.train.distributed);
        # the graph check for ops without double backward runs on the first meta step only
        if self.learner is not None:  # the look-ahead also takes the learner's other tasks
            result = self.learner.meta_gradient(x, y)
        else:
            result = meta_gradient(self.net, self.generator, x, y, self.loss_fn, self.config.meta,
                                   check_graph=self._meta_steps == 0)
        self._meta_steps += 1
        self._check_finite(meta_outer_loss=result.outer_loss, neg_entropy=result.neg_entropy)
        distributed.all_reduce_mean_(result.grads)  # the mean of the processes' meta-gradients
        named = [n for n, p in self.generator.named_parameters() if p.requires_grad]
        self._check_finite_grads(zip(named, result.grads), "label-generation network")
        self.gen_optimizer.zero_grad(set_to_none=True)
        for p, g in zip((p for p in self.generator.parameters() if p.requires_grad), result.grads):
            p.grad = g
        self.gen_optimizer.step()
        return result

    # ----------------------------------------------------------------- epochs
    def _bar(self, loader, desc):
        # disable=None: tqdm switches itself off when stderr is not a terminal (a log file, CI)
        return tqdm(loader, desc=desc, leave=False, disable=None if self.config.progress and self.is_main else True,
                    dynamic_ncols=True)

    def train_epoch(self) -> dict[str, float]:
        """One epoch: the multi-task pass (and, for ``maxl``, the generator updates)."""
        cfg = self.config
        self.train_net.train()
        if self.generator is not None:
            self.generator.train()
        if self.learner is not None:
            self.learner.train()
        sums: dict[str, float] = {}
        n_images = n_steps = n_meta = 0
        per_step = cfg.method == "maxl" and cfg.schedule == "per-step"
        # the fused step knows only the method's own auxiliary head, not the learner's other tasks
        # and all-reduces nothing: single-process runs only
        fused = (per_step and cfg.fused and self.learner is None and self.world_size == 1
                 and (cfg.meta.order == "first" or cfg.meta.engine in FUSED_ENGINES))
        epoch_tag = f"epoch {self.epoch + 1}/{cfg.epochs}"
        usage = self._label_usage()
        for batch in (bar := self._bar(self._loader(self.train_set, True, 2 * self.epoch), f"{epoch_tag} train")):
            x, y, idx = self._to_device(batch)
            fused_stats = None
            if per_step and self.step % cfg.gen_every == 0:
                if fused:  # θ2 and θ1 updates from one shared forward/backward
                    result, fused_stats = self._fused_step(x, y)
                else:
                    result = self._generator_step(x, y)  # θ2 update from the current θ1, θ2
                targets = result.soft_labels  # labels of the generator before its update
                sums["meta_outer_loss"] = sums.get("meta_outer_loss", 0.0) + result.outer_loss.item()
                sums["neg_entropy"] = sums.get("neg_entropy", 0.0) + result.neg_entropy.item()
                n_meta += 1
            else:
                targets = self._aux_targets(x, y, idx)
            if usage is not None and targets is not None:
                usage.update(targets, y)  # the labels the multi-task network learns from
            stats = fused_stats or self._multitask_step(x, y, targets, idx)
            for k in ("primary_loss", "aux_loss", *self._learner_keys):
                if k in stats:
                    sums[k] = sums.get(k, 0.0) + stats[k]
            sums["primary_correct"] = sums.get("primary_correct", 0.0) + stats["primary_correct"]
            n_images += len(y)
            n_steps += 1
            self.step += 1
            bar.set_postfix(loss=f"{stats['primary_loss']:.3f}")
        record = {"train_acc": sums.pop("primary_correct") / max(n_images, 1)}
        for k in ("primary_loss", "aux_loss", *self._learner_keys):
            if k in sums:
                record[f"train_{k}"] = sums.pop(k) / max(n_steps, 1)

        if cfg.method == "maxl" and cfg.schedule == "alternate":
            # second pass over the reshuffled training set: θ2 updates, θ1 frozen
            generator_pass = self._loader(self.train_set, True, 2 * self.epoch + 1)
            for batch in (bar := self._bar(generator_pass, f"{epoch_tag} generator")):
                x, y, _ = self._to_device(batch)
                result = self._generator_step(x, y)
                sums["meta_outer_loss"] = sums.get("meta_outer_loss", 0.0) + result.outer_loss.item()
                sums["neg_entropy"] = sums.get("neg_entropy", 0.0) + result.neg_entropy.item()
                n_meta += 1
                bar.set_postfix(outer=f"{result.outer_loss.item():.3f}")
        for k in list(sums):
            record[k] = sums[k] / max(n_meta, 1)
        if self.learner is not None:
            self.learner.end_epoch()  # loss-history weightings (DWA) roll over
        record = distributed.all_reduce_values(record, self.device)  # equal shares: the global means
        if usage is not None:  # label usage of this process's share (rank 0's is the one logged)
            record.update(usage.summary())
        return record

    def _label_usage(self) -> LabelUsage | None:
        """Label-usage statistics of the generator (``maxl`` with a ψ-aware generator), see
        :mod:`maxl.train.diagnostics`."""
        hierarchy = getattr(self.generator, "hierarchy", None)
        return LabelUsage(hierarchy) if self.config.method == "maxl" and hierarchy is not None else None

    @torch.no_grad()
    def evaluate(self, dataset: Dataset | None = None) -> dict[str, float]:
        """Primary-task loss and accuracy on ``dataset`` (default: the test set), eval mode."""
        self.net.eval()
        correct = total = 0
        loss_sum = 0.0
        for batch in self._loader(dataset if dataset is not None else self.test_set, False):
            x, y, _ = self._to_device(batch)
            logits, _ = self.net(x)
            loss_sum += self.loss_fn(logits, y).item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
        if self.world_size > 1:  # sums over the processes' disjoint shares of the test set
            sums = distributed.all_reduce_values({"l": loss_sum, "c": correct, "t": total}, self.device, mean=False)
            loss_sum, correct, total = sums["l"], round(sums["c"]), round(sums["t"])
        return {"test_loss": loss_sum / max(total, 1), "test_acc": correct / max(total, 1)}

    def fit(self) -> dict:
        """Train for the remaining epochs; returns the summary (also ``summary.json``)."""
        cfg = self.config
        start_time = time.time()
        for _ in range(self.epoch, cfg.epochs):
            t0 = time.time()
            lrs = {"lr": self.optimizer.param_groups[0]["lr"]}
            if self.gen_optimizer is not None:
                lrs["gen_lr"] = self.gen_optimizer.param_groups[0]["lr"]
            record = {"epoch": self.epoch + 1, **lrs, **self.train_epoch()}
            record.update(self.evaluate())
            self._check_finite_parameters()  # never checkpoint a broken network
            record["epoch_time_s"] = time.time() - t0
            warn_label_usage(record, getattr(self.generator, "hierarchy", None),  # collapsed or uniform labels
                             already_warned=self._label_warnings_given,
                             first_record=self.history[0] if self.history else None)
            self.scheduler.step()
            if self.gen_scheduler is not None:
                self.gen_scheduler.step()
            self.epoch += 1
            self.history.append(record)
            self._log(record)
        summary = self.summary(time.time() - start_time)
        if self.out_dir is not None and self.is_main:
            atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        return summary

    def summary(self, wall_time_s: float) -> dict:
        accs = [r["test_acc"] for r in self.history]
        last = accs[-5:]
        return {
            "method": self.config.method,
            "epochs": self.epoch,
            "final_test_acc": accs[-1] if accs else math.nan,
            "best_test_acc": max(accs) if accs else math.nan,
            "best_epoch": 1 + int(np.argmax(accs)) if accs else None,
            "last5_mean_test_acc": float(np.mean(last)) if last else math.nan,
            "wall_time_s": wall_time_s,
            "mean_epoch_time_s": float(np.mean([r["epoch_time_s"] for r in self.history])) if accs else math.nan,
        }

    def _log(self, record: dict) -> None:
        msg = f"epoch {record['epoch']:>3}  train acc {record['train_acc']:.4f}  test acc {record['test_acc']:.4f}"
        if "neg_entropy" in record:
            msg += f"  H {record['neg_entropy']:.3f}"
        if "label_used_fraction" in record:
            msg += f"  labels used {record['label_used_fraction']:.0%} sharp {record['label_sharpness']:.2f}"
        msg += f"  ({record['epoch_time_s']:.1f}s)"
        if self.config.progress and self.is_main:
            tqdm.write(msg)
        if self.out_dir is None:
            return
        if self.is_main:
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.config.tensorboard:
                if self._tensorboard is None:
                    self._tensorboard = TensorBoardLog(self.out_dir / "tensorboard", first_epoch=record["epoch"])
                self._tensorboard.log(record)
        # after the metrics line: a crash in between leaves one record too many, which
        # load_checkpoint removes; every process takes part (the RNG states are gathered)
        self.save_checkpoint(self.out_dir / "checkpoint.pt")

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """The full training state (what :meth:`save_checkpoint` writes). Under torchrun every
        process must call it: the processes' torch RNG states are gathered."""
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "config": asdict(self.config),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state()[1].astype(np.int64).tolist(),
                "numpy_pos": int(np.random.get_state()[2]),
                "python": repr(random.getstate()),
            },
        }
        if self.world_size > 1:  # each process draws its own augmentations: keep every stream
            gathered = distributed.all_gather(torch.get_rng_state().to(self.device))
            state["rng"]["torch_per_rank"] = [t.cpu() for t in gathered]
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.generator is not None:
            state["generator"] = self.generator.state_dict()
            state["gen_optimizer"] = self.gen_optimizer.state_dict()
            state["gen_scheduler"] = self.gen_scheduler.state_dict()
        if self.learner is not None:  # what the learner adds to net and generator: new heads, weighting state
            held = {t.data_ptr() for m in (self.net, self.generator) if m is not None for t in m.state_dict().values()}
            state["learner"] = {k: v for k, v in self.learner.state_dict().items() if v.data_ptr() not in held}
        return state

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write the full training state to ``path`` atomically (rank 0; under torchrun every
        process must call it, as the RNG states are gathered)."""
        state = self.state_dict()
        if self.is_main:
            atomic_torch_save(state, Path(path))

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore the state written by :meth:`save_checkpoint`, so that :meth:`fit` continues
        to exactly the numbers of an uninterrupted run.

        Loading uses ``torch.load(weights_only=True)``: only tensors, numbers, strings and
        containers of them are read, so a checkpoint cannot run code. ``metrics.jsonl`` of
        the run folder is rewritten from the checkpoint's history (a crash between the
        metrics line and the checkpoint of an epoch would otherwise leave that epoch twice).

        Raises:
            FileNotFoundError: no file at ``path``.
            CheckpointError: the file is truncated or corrupt, holds pickled objects other
                than the above (refused), is not a maxl checkpoint, or was written with other
                settings than this trainer's (each differing setting is named; ``epochs``,
                ``device``, ``progress`` and ``tensorboard`` may differ).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint file at {path}")
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive, its index at the end
            raise CheckpointError(f"cannot read the checkpoint {path}: it is not a torch.save archive (truncated "
                                  "or corrupt)")
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except pickle.UnpicklingError as err:
            reason = re.search(r"WeightsUnpickler error: *([^.\n]+)", str(err))  # "Unsupported global: ..."
            raise CheckpointError(
                f"refused to load {path}: it holds pickled objects that loading would have to import or "
                "call, and weights_only loading allows only tensors, numbers, strings and containers of "
                "them (a checkpoint written by maxl holds nothing else); "
                f"{reason.group(1).strip() if reason else str(err).splitlines()[0]}"
            ) from err
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read the checkpoint {path}: the file is truncated or corrupt ({err})") from err
        required = ("net", "optimizer", "scheduler", "epoch", "step", "history", "rng", "config")
        missing = [k for k in required if k not in state] if isinstance(state, dict) else list(required)
        if self.generator is not None and isinstance(state, dict) and "generator" not in state:
            missing.append("generator")
        if missing:
            raise CheckpointError(f"{path} is not a maxl checkpoint of this method: it lacks {', '.join(missing)}")
        differences = _config_differences(state["config"], asdict(self.config))
        if differences:
            raise CheckpointError(f"{path} was written with other settings than this trainer's: "
                                  f"{'; '.join(differences)}")
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.generator is not None:
            self.generator.load_state_dict(state["generator"])
            self.gen_optimizer.load_state_dict(state["gen_optimizer"])
            self.gen_scheduler.load_state_dict(state["gen_scheduler"])
        if self.learner is not None:
            unexpected = self.learner.load_state_dict(state["learner"], strict=False).unexpected_keys
            if unexpected:
                raise ValueError(f"checkpoint {path} holds learner entries this learner lacks: {unexpected}")
        self.epoch, self.step, self.history = state["epoch"], state["step"], list(state["history"])
        rng = state["rng"]
        per_rank = rng.get("torch_per_rank")
        same_world = per_rank is not None and len(per_rank) == self.world_size
        torch.set_rng_state((per_rank[self.rank] if same_world else rng["torch"]).cpu())
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
        np.random.set_state(("MT19937", np.array(rng["numpy"], dtype=np.uint32), rng["numpy_pos"], 0, 0.0))
        random.setstate(ast.literal_eval(rng["python"]))
        if self.out_dir is not None and self.is_main:
            atomic_write_text(self.out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))


# settings that may change when a run continues from a checkpoint: they do not change its numbers
# (epochs: a longer run repeats the shorter one's epochs exactly, as StepLR does not depend on it)
RESUMABLE_CHANGES = ("epochs", "device", "progress", "tensorboard")


def _config_differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """``"name: checkpoint X, now Y"`` for each setting present in both that differs."""
    out = []
    for key in sorted(set(saved) & set(now)):
        if key in RESUMABLE_CHANGES and not prefix:
            continue
        a, b = saved[key], now[key]
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return out


def _check_aux_labels(aux: Tensor, train_set: Dataset, num_aux: int | None,
                      psi: Hierarchy | list[int] | None) -> None:
    """Fixed auxiliary labels: one integer per training image, in range, inside its ψ block."""
    if aux.dtype.is_floating_point or aux.dtype == torch.bool or aux.ndim != 1 or len(aux) != len(train_set):
        raise ValueError(f"aux_labels must be integers [N_train] = [{len(train_set)}], one per training image; "
                         f"got {aux.dtype} {list(aux.shape)}")
    if num_aux is not None and len(aux) and (aux.min() < 0 or aux.max() >= num_aux):
        bad = aux[(aux < 0) | (aux >= num_aux)][0].item()
        raise ValueError(f"auxiliary label {bad} is out of range: the auxiliary head has {num_aux} classes "
                         f"(labels 0..{num_aux - 1})")
    labels = getattr(train_set, "labels", None)
    if psi is not None and isinstance(labels, Tensor):
        hierarchy = psi if isinstance(psi, Hierarchy) else Hierarchy(psi)
        hierarchy.check_aux_labels(aux.cpu(), labels.cpu())
