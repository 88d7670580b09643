"""The optimisation settings of a run (:class:`TrainConfig`) and the names they take.

The defaults are the paper's CIFAR-100 settings (Liu, Davison, Johns, NeurIPS 2019,
arXiv:1901.08933, Sec. 4 and its reference code).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from maxl.core.fields import check_field_types, check_keys, refuse_moved_settings, setting
from maxl.core.losses import LOSSES
from maxl.core.precision import check_precision
from maxl.meta import MetaConfig

__all__ = [
    "TrainConfig",
    "GeneratorConfig",
    "GENERATORS",
    "MOVED_TO_GENERATOR",
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
#: The label-generation networks of ``GeneratorConfig.network``.
GENERATORS = ("own", "features", "features-running")

#: The settings that left ``model`` and ``train`` for :class:`GeneratorConfig` (issue 24):
#: ``{old dotted path: its name in GeneratorConfig}``.
MOVED_TO_GENERATOR = {
    "model.generator": "network",
    "model.image_weight_range": "image_weight_range",
    "model.gumbel_tau": "gumbel_tau",
    "train.gumbel_tau_end": "gumbel_tau_end",
    "train.gen_optimizer": "optimizer",
    "train.gen_lr": "lr",
    "train.gen_weight_decay": "weight_decay",
    "train.schedule": "schedule",
    "train.gen_every": "every",
    "train.meta_batch": "meta_batch",
    "train.fused": "fused",
}

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
        lr_step, lr_gamma: both learning rates (this one and the generator's,
            :class:`GeneratorConfig`) are multiplied by ``lr_gamma`` every ``lr_step`` epochs (50
            and 0.5), with ``lr_schedule="step"``.
        lr_schedule: ``"step"`` (the above) or ``"onecycle"``: the multi-task lr rises from
            lr/25 to ``lr`` over the first ``warmup`` share of the steps and anneals to ~0
            by the last step, stepped every iteration (Smith & Topin 2019,
            ``torch.optim.lr_scheduler.OneCycleLR``); the generator's lr then stays constant.
        warmup: the warm-up share of the one-cycle schedule (0.15).
        loss: ``"focal"`` (the reference code, γ = 2) or ``"ce"``, for both heads.
        focal_gamma: γ of the focal loss.
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

    Raises:
        TypeError: a setting of the generator (:data:`MOVED_TO_GENERATOR`, e.g. ``gen_lr``), which
            moved to :class:`GeneratorConfig`; the message says where.
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
    lr_step: int = setting(50, help="multiply both learning rates by --lr-gamma every N epochs")
    lr_gamma: float = setting(0.5, help="learning-rate decay factor")
    lr_schedule: str = setting(
        "step",
        choices=LR_SCHEDULES,
        help="step: x --lr-gamma every --lr-step epochs; onecycle: warm-up to --lr over "
        "--warmup of the steps, then cosine annealing, per step",
    )
    warmup: float = setting(0.15, help="warm-up share of the one-cycle schedule")
    loss: str = setting("focal", choices=LOSSES, help="loss of both heads (focal: gamma 2, the reference)")
    focal_gamma: float = setting(2.0, help="focusing parameter of the focal loss")
    seed: int = setting(0, help="random seed")
    device: str = setting("auto", help="cpu, cuda, cuda:1, ... or auto")
    progress: bool = setting(True, help="no progress bars or per-epoch lines")
    meta: MetaConfig = field(default_factory=lambda: MetaConfig(inner_lr=None))
    deterministic: bool = setting(
        False, help="deterministic kernels only (torch.use_deterministic_algorithms): bit-identical reruns on a GPU too"
    )
    tensorboard: bool = setting(False, help="also write the metrics as TensorBoard events to OUT/tensorboard")
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
            (self.loss in LOSSES, f"unknown loss {self.loss!r}; expected one of {LOSSES}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be >= 2 (BatchNorm), got {self.batch_size}"),
            (self.lr > 0, f"lr (learning rate) must be > 0, got {self.lr}"),
            (self.momentum >= 0, f"momentum must be >= 0, got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.lr_gamma > 0, f"lr_gamma (learning-rate decay factor) must be > 0, got {self.lr_gamma}"),
            (self.focal_gamma >= 0, f"focal_gamma must be >= 0, got {self.focal_gamma}"),
            (0 <= self.seed < 2**32, f"seed must be in [0, 2**32 - 1] (numpy's range), got {self.seed}"),
            (
                _is_device(self.device),
                f"device {self.device!r} is not a device: expected 'auto', 'cpu', 'cuda', 'cuda:1', ...",
            ),
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
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_precision(self.precision)


refuse_moved_settings(
    TrainConfig,
    {
        old.split(".", 1)[1]: f"GeneratorConfig({new}=...) (maxl.train.GeneratorConfig, section [generator] of a run's "
        "configuration, passed to Trainer as gen_config=; the flag is unchanged)"
        for old, new in MOVED_TO_GENERATOR.items()
        if old.startswith("train.")
    },
)


@dataclass
class GeneratorConfig:
    """Settings of the label-generation network (the section ``generator`` of a run): its network,
    its optimiser and when it takes its steps. Used by runs with a generator (``maxl``) only.

    Attributes:
        network: ``"own"`` (its own backbone, the paper) or ``"features"`` (a head on the
            multi-task network's detached features, :class:`maxl.nn.FeatureLabelGenerator`), or
            ``"features-running"`` (those features with the BatchNorm running statistics).
        image_weight_range: r; with r > 0 the generator also learns each image's auxiliary-loss
            weight in [2^−r, 2^r] (WAMAL; 0: MAXL's equal weights).
        gumbel_tau: τ; with τ > 0 the auxiliary head learns from hard one-hot samples of the
            generated labels, passed straight through a Gumbel-softmax of temperature τ (Jang, Gu,
            Poole, ICLR 2017; 0: the paper's soft labels).
        gumbel_tau_end: with τ0 = ``gumbel_tau`` > 0, the temperature of the last epoch: τ falls
            linearly from τ0 in the first epoch to this in the last
            (:func:`maxl.train.schedules.gumbel_temperature`); None keeps τ0.
        optimizer: ``"sgd"`` (the paper) or ``"adam"`` (a scale-free update; Kingma & Ba, ICLR
            2015), with ``lr`` and ``weight_decay``; its lr follows ``TrainConfig.lr_step`` /
            ``lr_gamma`` (and stays constant under a one-cycle schedule).
        lr: learning rate of the generator (1e-3 in the paper).
        weight_decay: weight decay of the generator (5e-4 in the paper).
        schedule: one of :data:`SCHEDULES`: ``"alternate"`` (a multi-task pass, then a generator
            pass per epoch: the reference code) or ``"per-step"``.
        every: a generator update every k multi-task steps (``per-step`` only).
        meta_batch: the batch of the outer loss L_pri(θ1⁺): ``"same"`` as the look-ahead's (the
            paper) or ``"other"``, a batch of an independent shuffle of the training images
            (the look-ahead learns on one batch and is judged on another, as DARTS and AuxiLearn
            judge on held-out data).
        fused: ``per-step`` only: compute a generator step's multi-task update and look-ahead
            from one shared forward/backward where the engine and the learner allow it
            (:meth:`auxtasks.AuxiliaryLearner.can_fuse`).

    Raises:
        ValueError: a value of the wrong type, an unknown name or an out-of-range number (the
            message names the setting), or ``gumbel_tau_end`` without ``gumbel_tau``.

    References:
        Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
        NeurIPS 2019, arXiv:1901.08933, Sec. 4 (SGD, lr 1e-3, weight decay 5e-4; the schedule).
    """

    network: str = setting(
        "own",
        flag="--generator",
        choices=GENERATORS,
        help="label-generation network: its own backbone (the paper) or a head on the "
        "multi-task network's detached features (features-running: computed with its "
        "BatchNorm running statistics, so that an image's label does not depend on its "
        "batch)",
    )
    image_weight_range: float = setting(
        0.0,
        help="R > 0: the generator also learns each image's auxiliary-loss weight in"
        " [2^-R, 2^R] by the meta-gradient (WAMAL); 0: equal weights (MAXL)",
    )
    gumbel_tau: float = setting(
        0.0,
        help="T > 0: the auxiliary head learns from hard one-hot samples of the generated "
        "labels, passed straight through a Gumbel-softmax of temperature T (Jang et al."
        " 2017); the label statistics keep the distribution; 0: soft labels (the paper)",
    )
    gumbel_tau_end: float | None = setting(
        None, help="with --gumbel-tau: the temperature of the last epoch, reached linearly from --gumbel-tau"
    )
    optimizer: str = setting("sgd", flag="--gen-optimizer", choices=GEN_OPTIMIZERS, help="optimiser of the generator")
    lr: float = setting(1e-3, flag="--gen-lr", help="SGD learning rate of the label-generation network")
    weight_decay: float = setting(5e-4, flag="--gen-weight-decay", help="weight decay of the generator")
    schedule: str = setting(
        "alternate",
        choices=SCHEDULES,
        help="alternate: a multi-task pass then a generator pass per epoch (reference); "
        "per-step: generator update every --gen-every steps",
    )
    every: int = setting(1, flag="--gen-every", help="generator update every k steps (per-step schedule)")
    meta_batch: str = setting(
        "same",
        choices=("same", "other"),
        help="outer loss on the look-ahead's batch (the paper) or on another batch of the training images",
    )
    fused: bool = setting(
        True,
        help="per-step schedule: take the multi-task update and the look-ahead from separate "
        "forward/backward passes (default: one shared pass where it applies, same gradients)",
    )

    def __post_init__(self):
        check_field_types(self, "generator")
        checks = [
            (self.network in GENERATORS, f"unknown generator network {self.network!r}; expected one of {GENERATORS}"),
            (
                self.image_weight_range >= 0,
                f"image_weight_range must be >= 0 (0: no per-image weights), got {self.image_weight_range}",
            ),
            (self.gumbel_tau >= 0, f"gumbel_tau must be >= 0 (0: soft labels), got {self.gumbel_tau}"),
            (
                self.gumbel_tau_end is None or self.gumbel_tau_end > 0,
                f"gumbel_tau_end must be > 0, got {self.gumbel_tau_end}",
            ),
            (
                self.gumbel_tau_end is None or self.gumbel_tau > 0,
                f"gumbel_tau_end needs a start temperature: --gumbel-tau-end {self.gumbel_tau_end} "
                "without --gumbel-tau (generator.gumbel_tau > 0)",
            ),
            (
                self.optimizer in GEN_OPTIMIZERS,
                f"unknown generator optimizer {self.optimizer!r}; expected one of {GEN_OPTIMIZERS}",
            ),
            (self.lr > 0, f"lr (the generator's learning rate, --gen-lr) must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay (--gen-weight-decay) must be >= 0, got {self.weight_decay}"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}"),
            (self.every >= 1, f"every (--gen-every) must be >= 1, got {self.every}"),
            (self.meta_batch in ("same", "other"), f"meta_batch must be 'same' or 'other', got {self.meta_batch!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def _is_device(name: str) -> bool:
    """Whether ``name`` is ``"auto"`` or a device string torch can parse (it need not be present)."""
    if name == "auto":
        return True
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True
