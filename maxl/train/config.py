"""The optimisation settings of a run (:class:`TrainConfig`) and the names they take.

The defaults are the paper's CIFAR-100 settings (Liu, Davison, Johns, NeurIPS 2019,
arXiv:1901.08933, Sec. 4 and its reference code).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from maxl.core.fields import check_field_types, check_keys, setting
from maxl.core.losses import LOSSES
from maxl.core.precision import check_precision
from maxl.meta import MetaConfig

__all__ = [
    "TrainConfig",
    "METHODS",
    "FIXED_LABEL_METHODS",
    "SCHEDULES",
    "LR_SCHEDULES",
    "GEN_OPTIMIZERS",
    "RESUMABLE_CHANGES",
]

METHODS = ("single", "human", "random", "kmeans", "maxl")
FIXED_LABEL_METHODS = ("human", "random", "kmeans")
SCHEDULES = ("alternate", "per-step")
LR_SCHEDULES = ("step", "onecycle")
GEN_OPTIMIZERS = ("sgd", "adam")

#: Settings (dotted paths in a run's configuration) that may change when a run continues from
#: its checkpoint: they change where or how long it runs, not what it computes (a longer run
#: repeats a shorter one's epochs exactly, as the step schedule does not depend on the length;
#: another device or thread count changes only the float rounding, and so do the memory layout and
#: compiling). The one list, used by the trainer's checkpoint check and by ``maxl train --resume``.
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.device",
    "train.channels_last",
    "train.compile",
    "train.progress",
    "train.tensorboard",
    "train.checkpoint_every",
    "data.data_root",
    "data.download",
    "threads",
    "out",
)


@dataclass
class TrainConfig:
    """Optimisation settings; the defaults are the paper's CIFAR-100 settings.

    Attributes:
        method: one of :data:`METHODS` (recorded; the trainer itself only sees the learner
            that the builder made for it).
        epochs: number of epochs (200 in the paper).
        batch_size: images per batch (100).
        lr: SGD learning rate of the multi-task network (0.01).
        momentum, weight_decay: of the multi-task SGD (0 and 0 in the reference code).
        gen_lr: SGD learning rate of the generator (1e-3).
        gen_weight_decay: weight decay of the generator (5e-4).
        lr_step, lr_gamma: both learning rates are multiplied by ``lr_gamma`` every
            ``lr_step`` epochs (50 and 0.5), with ``lr_schedule="step"``.
        lr_schedule: ``"step"`` (the above) or ``"onecycle"``: the multi-task lr rises from
            lr/25 to ``lr`` over the first ``warmup`` share of the steps and anneals to ~0
            by the last step, stepped every iteration (Smith & Topin 2019,
            ``torch.optim.lr_scheduler.OneCycleLR``); the generator's lr then stays constant.
        warmup: the warm-up share of the one-cycle schedule (0.15).
        meta_batch: the batch of the outer loss L_pri(θ1⁺): ``"same"`` as the look-ahead's (the
            paper) or ``"other"``, a batch of an independent shuffle of the training images
            (the look-ahead learns on one batch and is judged on another, as DARTS and AuxiLearn
            judge on held-out data).
        gen_optimizer: ``"sgd"`` (the paper) or ``"adam"`` (a scale-free update; Kingma & Ba,
            ICLR 2015) for the generator, with ``gen_lr`` and ``gen_weight_decay``.
        loss: ``"focal"`` (the reference code, γ = 2) or ``"ce"``, for both heads.
        focal_gamma: γ of the focal loss.
        schedule: one of :data:`SCHEDULES` (runs with a label-generation network only).
        gen_every: generator update every k multi-task steps (``per-step`` only).
        fused: ``per-step`` only: compute a generator step's multi-task update and look-ahead
            from one shared forward/backward where the engine and the learner allow it
            (:meth:`auxtasks.AuxiliaryLearner.can_fuse`).
        seed: seeds python, numpy, torch and the data order.
        device: ``"cpu"``, ``"cuda"``, ... or ``"auto"`` (CUDA if available).
        progress: show a tqdm progress bar.
        meta: settings of the meta step; ``meta.inner_lr`` None (the default) means the
            multi-task network's current learning rate at each meta step.
        deterministic: use only deterministic kernels (see :mod:`maxl.train.determinism`).
        tensorboard: also write the metrics as TensorBoard events (needs ``tensorboard``).
        checkpoint_every: also write ``checkpoint.pt`` after every this many steps of an epoch
            (counting a generator pass's steps too; 0: only at the end of each epoch), so that a
            killed run of long epochs loses at most that many steps. A resumed run continues
            inside the epoch to exactly the numbers of an uninterrupted one.
        precision: ``"fp32"`` or ``"bf16"`` (:mod:`maxl.core.precision`): bfloat16 autocast
            for the steps, the look-ahead and the meta-gradient; float32 parameters,
            gradients, optimisers and evaluation.
        channels_last: the networks' 4-D weights and the image batches in channels-last
            (NHWC) memory format; the same numbers up to float rounding.
        compile: ``torch.compile`` the backbones of the networks in place (``Module.compile``:
            the state-dict keys stay), unless the meta-gradient engine needs a double backward,
            which ``torch.compile`` does not support: then eager, with a :class:`CompileFallbackWarning`.
        gumbel_tau_end: with hard Gumbel labels (``ModelConfig.gumbel_tau`` τ0 > 0), the
            temperature of the last epoch: τ falls linearly from τ0 in the first epoch to this in
            the last (:func:`maxl.train.schedules.gumbel_temperature`); None keeps τ0.

    Raises:
        ValueError: a value of the wrong type, an unknown name or an out-of-range number (the
            message names the setting), or unknown settings in a ``meta`` table.
    """

    method: str = setting(
        "maxl",
        choices=METHODS,
        nargs="+",
        help="one or more methods; several are run one after another into OUT/METHOD",
    )
    epochs: int = setting(200, help="training epochs")
    batch_size: int = setting(100, help="images per batch (under torchrun: the global batch, split over the processes)")
    lr: float = setting(0.01, help="SGD learning rate of the multi-task network")
    momentum: float = setting(0.0, help="SGD momentum of the multi-task network")
    weight_decay: float = setting(0.0, help="weight decay of the multi-task network")
    gen_lr: float = setting(1e-3, help="SGD learning rate of the label-generation network")
    gen_weight_decay: float = setting(5e-4, help="weight decay of the generator")
    lr_step: int = setting(50, help="multiply both learning rates by --lr-gamma every N epochs")
    lr_gamma: float = setting(0.5, help="learning-rate decay factor")
    lr_schedule: str = setting(
        "step",
        choices=LR_SCHEDULES,
        help="step: x --lr-gamma every --lr-step epochs; onecycle: warm-up to --lr over "
        "--warmup of the steps, then cosine annealing, per step",
    )
    warmup: float = setting(0.15, help="warm-up share of the one-cycle schedule")
    gen_optimizer: str = setting("sgd", choices=GEN_OPTIMIZERS, help="optimiser of the generator")
    meta_batch: str = setting(
        "same",
        choices=("same", "other"),
        help="outer loss on the look-ahead's batch (the paper) or on another batch of the training images",
    )
    loss: str = setting("focal", choices=LOSSES, help="loss of both heads (focal: gamma 2, the reference)")
    focal_gamma: float = setting(2.0, help="focusing parameter of the focal loss")
    schedule: str = setting(
        "alternate",
        choices=SCHEDULES,
        help="alternate: a multi-task pass then a generator pass per epoch (reference); "
        "per-step: generator update every --gen-every steps",
    )
    gen_every: int = setting(1, help="generator update every k steps (per-step schedule)")
    fused: bool = setting(
        True,
        help="per-step schedule: take the multi-task update and the look-ahead from separate "
        "forward/backward passes (default: one shared pass where it applies, same gradients)",
    )
    seed: int = setting(0, help="random seed")
    device: str = setting("auto", help="cpu, cuda, cuda:1, ... or auto")
    progress: bool = setting(True, help="no progress bars or per-epoch lines")
    meta: MetaConfig = field(default_factory=lambda: MetaConfig(inner_lr=None))
    deterministic: bool = setting(
        False, help="deterministic kernels only (torch.use_deterministic_algorithms): bit-identical reruns on a GPU too"
    )
    tensorboard: bool = setting(False, help="also write the metrics as TensorBoard events to OUT/tensorboard")
    gumbel_tau_end: float | None = setting(
        None, help="with --gumbel-tau: the temperature of the last epoch, reached linearly from --gumbel-tau"
    )
    precision: str = setting(
        "fp32",
        help="fp32, or bf16: the steps, the look-ahead and the meta-gradient under bfloat16 autocast, "
        "with the masked softmax, the losses and the entropy terms in float32 (fp16 is refused: it would "
        "need loss scaling through the meta-gradient's double backward)",
    )
    channels_last: bool = setting(
        False, help="channels-last memory format for the networks and the images (NHWC: faster convolutions on GPUs)"
    )
    compile: bool = setting(
        False,
        help="torch.compile the backbones (Module.compile); with a meta-gradient engine that needs a double "
        "backward (func, higher, implicit), which torch.compile does not support, it trains eager and says so",
    )
    checkpoint_every: int = setting(
        0,
        metavar="N",
        help="also write checkpoint.pt every N steps of an epoch (0: at epoch ends "
        "only); SIGTERM / SIGINT / SIGUSR1 always write one after the step under "
        "way",
    )

    def __post_init__(self):
        if isinstance(self.meta, dict):
            self.meta = MetaConfig(**check_keys(self.meta, MetaConfig, "train.meta"))
        check_field_types(self, "train")
        checks = [
            (self.method in METHODS, f"unknown method {self.method!r}; expected one of {METHODS}"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}"),
            (self.loss in LOSSES, f"unknown loss {self.loss!r}; expected one of {LOSSES}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be >= 2 (BatchNorm), got {self.batch_size}"),
            (self.lr > 0, f"lr (learning rate) must be > 0, got {self.lr}"),
            (self.gen_lr > 0, f"gen_lr (the generator's learning rate) must be > 0, got {self.gen_lr}"),
            (self.momentum >= 0, f"momentum must be >= 0, got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.gen_weight_decay >= 0, f"gen_weight_decay must be >= 0, got {self.gen_weight_decay}"),
            (self.lr_gamma > 0, f"lr_gamma (learning-rate decay factor) must be > 0, got {self.lr_gamma}"),
            (self.focal_gamma >= 0, f"focal_gamma must be >= 0, got {self.focal_gamma}"),
            (0 <= self.seed < 2**32, f"seed must be in [0, 2**32 - 1] (numpy's range), got {self.seed}"),
            (
                _is_device(self.device),
                f"device {self.device!r} is not a device: expected 'auto', 'cpu', 'cuda', 'cuda:1', ...",
            ),
            (self.gen_every >= 1, f"gen_every must be >= 1, got {self.gen_every}"),
            (
                self.checkpoint_every >= 0,
                f"checkpoint_every must be >= 0 (0: at epoch ends only), got {self.checkpoint_every}",
            ),
            (self.lr_step >= 1, f"lr_step must be >= 1, got {self.lr_step}"),
            (
                self.lr_schedule in LR_SCHEDULES,
                f"unknown lr_schedule {self.lr_schedule!r}; expected one of {LR_SCHEDULES}",
            ),
            (0 < self.warmup < 1, f"warmup must be a share in (0, 1), got {self.warmup}"),
            (self.meta_batch in ("same", "other"), f"meta_batch must be 'same' or 'other', got {self.meta_batch!r}"),
            (
                self.gumbel_tau_end is None or self.gumbel_tau_end > 0,
                f"gumbel_tau_end must be > 0, got {self.gumbel_tau_end}",
            ),
            (
                self.gen_optimizer in GEN_OPTIMIZERS,
                f"unknown gen_optimizer {self.gen_optimizer!r}; expected one of {GEN_OPTIMIZERS}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_precision(self.precision)


def _is_device(name: str) -> bool:
    """Whether ``name`` is ``"auto"`` or a device string torch can parse (it need not be present)."""
    if name == "auto":
        return True
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True
