"""A run's configuration (:class:`RunConfig`) and the one builder, :func:`build`, that turns
it into a :class:`~maxl.train.Trainer`.

The command line only parses argv into a :class:`RunConfig`; experiment grids make them
directly; both call :func:`build`. A run folder's ``config.json`` holds the resolved
configuration (every default filled in), so that ``maxl train --config RUN/config.json``
re-runs it and ``maxl train --resume RUN`` continues it.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import platform
import sys
import time
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

import torch

from auxtasks import COLOURISATION_MODES, ROTATION_MODES, WEIGHTINGS
from maxl.baselines.autoencoder import AutoencoderConfig
from maxl.baselines.labels import fixed_aux_labels
from maxl.core.fields import check_field_types, check_keys, refuse_moved_settings, setting
from maxl.core.hierarchy import Hierarchy, validate_psi
from maxl.core.losses import classification_loss
from maxl.data.datasets import DATASETS, load_dataset
from maxl.data.registry import dataset_spec, hierarchy_help
from maxl.meta.config import MetaConfig
from maxl.meta.objective import ObjectiveConfig
from maxl.meta.task_weights import TASK_WEIGHT_ENGINES
from maxl.nn.architectures import ARCHITECTURES, PENALTIES, build_network, search_masks
from maxl.nn.architectures.sparse import round_rate
from maxl.nn.backbones import BACKBONES, build_backbone
from maxl.nn.networks import FeatureLabelGenerator, LabelGenerator, MultiTaskNetwork
from maxl.train import distributed
from maxl.train.aux_learner import TASK_NAMES, build_learner, dataset_normalisation, normalised_images
from maxl.train.checkpoint import atomic_write_text
from maxl.train.config import FIXED_LABEL_METHODS, GENERATORS, MOVED_TO_GENERATOR, GeneratorConfig, TrainConfig
from maxl.train.migrate import migrate
from maxl.train.presets import PRESET_CHOICES
from maxl.train.trainer import Trainer, resolve_device, seed_everything

__all__ = [
    "DataConfig",
    "ModelConfig",
    "AuxConfig",
    "BaselineConfig",
    "RunConfig",
    "build",
    "parse_psi",
    "psi_values",
    "load_data",
    "load_training_data",
    "hold_out_for_weights",
    "outer_loss_on_training_images",
    "training_images_for_weights",
    "hold_out_for_architecture",
    "architecture_split",
    "make_generator",
    "make_network",
    "GENERATORS",
    "DEFAULT_AUX_PER_CLASS",
]

#: The data paths of ``DataConfig.loader``.
LOADERS = ("batch", "per-image")

#: Auxiliary classes per primary class when the data set has no human hierarchy.
DEFAULT_AUX_PER_CLASS = 5


@dataclass
class DataConfig:
    """Which images: ``dataset`` (one of :data:`maxl.data.DATASETS`), where its files lie,
    its class hierarchy (see :func:`maxl.data.load_dataset`), class-stratified subsets, a
    validation set held out from the training images (``val_subset``), whether RGB training
    images are randomly cropped (``padding_mode`` of the crop) and flipped, ``normalisation``
    ``[mean, std]`` instead of the data set's own, and ``resize`` (square images of that many
    pixels, resized once at load; None: as stored). ``hierarchy`` may name a hierarchy file
    (``.json`` / ``.toml``, :mod:`maxl.data.user_hierarchy`). ``loader`` picks the data path:
    ``"batch"`` crops, flips and normalises whole batches on the training device with draws from
    the seed, the pass and each image's index (:mod:`maxl.data.augment`); ``"per-image"``
    applies torchvision's transforms image by image in the ``DataLoader``."""

    dataset: str = setting(
        "digits", choices=DATASETS, help="data set; 'digits' is scikit-learn's embedded 8x8 digits (no download)"
    )
    data_root: str | None = setting(
        None, help="folder holding the data set files (MNIST/raw, cifar-10-batches-py, ImageFolder root)"
    )
    hierarchy: str | None = setting(None, help=hierarchy_help)  # the registry's data sets and their hierarchies
    download: bool = setting(False, help="let torchvision download MNIST/CIFAR (needs network)")
    train_subset: int | None = setting(None, help="class-stratified subset of training images")
    test_subset: int | None = setting(None, help="class-stratified subset of test images")
    val_subset: int | None = setting(
        None,
        help="hold out this many training images (class-stratified) as a validation "
        "set, evaluated every epoch (val_acc) and never trained on",
    )
    augment: bool = setting(True, help="turn off the random crop + flip of RGB images")
    padding_mode: str = setting("constant", choices=("constant", "reflect"), help="padding of the random crop")
    normalisation: list[float] | None = setting(
        None,
        metavar=("MEAN", "STD"),
        nargs=2,
        help="normalise every channel as (x - MEAN) / STD instead of the data set's own statistics",
    )
    resize: int | None = setting(
        None, metavar="PIXELS", help="resize the images to PIXELS x PIXELS once at load (e.g. stl10's 96 to 32)"
    )
    loader: str = setting(
        "batch",
        choices=LOADERS,
        help="batch: crop, flip and normalise whole batches on the training device, each image's draws from "
        "the seed, the pass and its index (maxl.data.augment); per-image: torchvision's transforms image by "
        "image in the DataLoader, drawing from torch's generator (runs made before this setting)",
    )

    def __post_init__(self):
        check_field_types(self, "data")
        if self.loader not in LOADERS:
            raise ValueError(f"loader must be one of {LOADERS}, got {self.loader!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {DATASETS}")
        if self.normalisation is not None and (len(self.normalisation) != 2 or self.normalisation[1] <= 0):
            raise ValueError(f"normalisation must be [mean, std] with std > 0, got {self.normalisation}")
        for name in ("train_subset", "test_subset", "val_subset"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(
                    f"{name} must be >= 1 images (leave it out for all of them), got {getattr(self, name)}"
                )
        if self.resize is not None and self.resize < 1:
            raise ValueError(f"resize must be >= 1 pixel, got {self.resize}")
        if self.padding_mode not in ("constant", "reflect"):
            raise ValueError(f"padding_mode must be 'constant' or 'reflect', got {self.padding_mode!r}")


@dataclass
class ModelConfig:
    """The networks: ``backbone`` (a key of :data:`maxl.nn.BACKBONES`; None: the data set's
    default), the heads' hidden width (0: linear heads), the hierarchy ψ (``"5"``, ``5``, ``"6,4"``,
    a list, or None for the data set's human ψ; every entry >= 1), BatchNorm in the backbones
    (of the generator too), and the multi-task architecture ``arch``
    (:data:`maxl.nn.architectures.ARCHITECTURES`) with the soft-sharing penalty and its weight. The
    label-generation network's own settings are :class:`~maxl.train.config.GeneratorConfig`'s
    (``model.generator``, ``image_weight_range``, ``gumbel_tau`` moved there: ``ModelConfig(generator=...)``
    raises a ``TypeError`` that says so)."""

    backbone: str | None = setting(
        None,
        choices=lambda: sorted(BACKBONES),
        help="backbone of both networks (default: the data set's own, e.g. tiny-cnn for "
        "digits, small-cnn for mnist, vgg16 for RGB data; maxl.data.registry)",
    )
    hidden: int = setting(512, help="hidden width of the heads")
    psi: str | int | list[int] | None = setting(
        None,
        help="hierarchy psi: auxiliary classes per primary class, an int or "
        "a list like 6,4 (default: the human hierarchy if any, else 5 "
        "per class)",
    )
    batchnorm: bool = setting(
        True,
        help="backbones without BatchNorm: then a torchrun run over N processes computes the "
        "multi-task step of one process with the same global batch",
    )
    arch: str = setting(
        "hard",
        choices=ARCHITECTURES,
        help="multi-task architecture: hard sharing (MAXL's), soft sharing, cross-stitch, NDDR or "
        "MTAN (maxl.nn.architectures); the generator keeps its own backbone",
    )
    soft_penalty: str = setting(
        "l2",
        choices=PENALTIES,
        help="--arch soft: squared-L2 tie (Duong et al. 2015) or tensor trace norm (Yang & "
        "Hospedales 2017) of corresponding kernels",
    )
    soft_weight: float = setting(0.01, help="--arch soft: weight of the penalty")
    adashare_warmup: int = setting(
        2, help="--arch adashare: epochs with every residual block selected before the policy search"
    )
    adashare_sparsity: float = setting(
        0.05, help="--arch adashare: weight of the sparsity loss (sum of log select-probabilities; towards skipping)"
    )
    adashare_sharing: float = setting(
        0.05,
        help="--arch adashare: weight of the sharing loss (task pairs' select-probabilities closer in lower blocks)",
    )
    adashare_tau: float = setting(5.0, help="--arch adashare: Gumbel-softmax temperature of the first search epoch")
    adashare_tau_decay: float = setting(0.965, help="--arch adashare: temperature factor per search epoch")
    adashare_curriculum: int = setting(
        1, help="--arch adashare: search epochs per further block (from the last) handed to the policy"
    )
    adashare_policy_split: int | None = setting(
        None,
        help="--arch adashare: training images held out (class-stratified) for the policy updates, which "
        "alternate with the weight updates on the rest (the paper's scheme; default: a tenth, at least a batch); "
        "0: the joint scheme (policy logits trained with the weights, on the same batches)",
    )
    adashare_samples: int = setting(
        0,
        help="--arch adashare: after the search, draw this many architectures from the policy and keep the one "
        "of best validation accuracy (needs --val-subset; the choice in summary.json: adashare_samples)",
    )
    adashare_policy_lr: float = setting(
        0.01, help="--arch adashare: learning rate of the policy logits' Adam optimiser (the reference's 0.01)"
    )
    sparse_rounds: int = setting(
        5, help="--arch sparse: iterative magnitude pruning rounds per task (0: every mask full, hard sharing)"
    )
    sparse_density: float = setting(
        0.5, help="--arch sparse: fraction of each weight tensor a task keeps after the last round"
    )
    sparse_steps: int = setting(50, help="--arch sparse: SGD steps of a task's subnetwork per pruning round")
    sparse_warmup: int = setting(
        100, help="--arch sparse: SGD steps of the multi-task warm-up (the weights every round rewinds to)"
    )
    mtlnas_depth: int | None = setting(
        None, help="--arch mtl-nas: depth limit D of the fusion edges, from layers i-D..i (default: every j <= i)"
    )
    mtlnas_tau: float = setting(1.0, help="--arch mtl-nas: RelaxedBernoulli temperature of the gates at epoch 0")
    mtlnas_tau_decay: float = setting(0.9, help="--arch mtl-nas: temperature factor per epoch (towards 0)")
    mtlnas_init: float = setting(
        0.1,
        help="--arch mtl-nas: initial weight beta of the fusion's 1x1 convolution on the gated sources (shared "
        "among them; 1 - beta on the own feature; NDDR-CNN's 0.9/0.1); 0: independent towers at initialisation, "
        "but the gates get no gradient there",
    )
    mtlnas_arch_split: int | None = setting(
        None,
        help="--arch mtl-nas: training images held out (class-stratified) for the gate updates, which alternate "
        "with the weight updates on the rest (the paper's scheme; default: half); 0: the joint scheme",
    )
    mtlnas_arch_lr: float = setting(
        3e-3, help="--arch mtl-nas: learning rate of the gate logits' Adam optimiser (the reference's 3e-3)"
    )
    mtlnas_entropy: float = setting(0.01, help="--arch mtl-nas: weight of the gates' minimum-entropy regulariser")
    mtlnas_edges: str | None = setting(
        None,
        help="--arch mtl-nas: the kept edges, one 0/1 per edge of the search space (comma-separated): the "
        "derived architecture, trained from scratch without a search",
    )
    adashare_policy: str | None = setting(
        None,
        help="--arch adashare: a fixed 0/1 policy, one row per task (primary first) of one entry per residual "
        "block, like 1,1,0;1,0,1: the derived architecture, trained from scratch without a search",
    )

    def __post_init__(self):
        check_field_types(self, "model")
        if self.psi is not None:
            psi_values(self.psi)  # its entries; their number is checked against the data set by parse_psi
        if self.backbone is not None and self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; expected one of {sorted(BACKBONES)}")
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0 (0: linear heads), got {self.hidden}")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; expected one of {ARCHITECTURES}")
        if self.adashare_warmup < 0 or self.adashare_curriculum < 1:
            raise ValueError(
                f"adashare_warmup must be >= 0 and adashare_curriculum >= 1, got {self.adashare_warmup}, "
                f"{self.adashare_curriculum}"
            )
        if self.adashare_policy_split is not None and self.adashare_policy_split < 0:
            raise ValueError(
                f"adashare_policy_split must be >= 0 images (0: the joint scheme; leave it out for a tenth), got "
                f"{self.adashare_policy_split}"
            )
        if self.adashare_samples < 0:
            raise ValueError(f"adashare_samples must be >= 0, got {self.adashare_samples}")
        if not self.adashare_policy_lr > 0:
            raise ValueError(f"adashare_policy_lr must be > 0, got {self.adashare_policy_lr}")
        if min(self.adashare_sparsity, self.adashare_sharing) < 0:
            raise ValueError(
                f"adashare_sparsity and adashare_sharing must be >= 0, got {self.adashare_sparsity}, "
                f"{self.adashare_sharing}"
            )
        if min(self.sparse_rounds, self.sparse_steps, self.sparse_warmup) < 0 or not 0 < self.sparse_density <= 1:
            raise ValueError(
                f"sparse_rounds, sparse_steps and sparse_warmup must be >= 0 and sparse_density in (0, 1], got "
                f"{self.sparse_rounds}, {self.sparse_steps}, {self.sparse_warmup}, {self.sparse_density}"
            )
        if self.mtlnas_tau <= 0 or not 0 < self.mtlnas_tau_decay <= 1 or self.mtlnas_entropy < 0:
            raise ValueError(
                f"mtlnas_tau must be > 0, mtlnas_tau_decay in (0, 1] and mtlnas_entropy >= 0, got "
                f"{self.mtlnas_tau}, {self.mtlnas_tau_decay}, {self.mtlnas_entropy}"
            )
        if self.mtlnas_arch_split is not None and self.mtlnas_arch_split < 0:
            raise ValueError(
                f"mtlnas_arch_split must be >= 0 images (0: the joint scheme; leave it out for half), got "
                f"{self.mtlnas_arch_split}"
            )
        if not self.mtlnas_arch_lr > 0:
            raise ValueError(f"mtlnas_arch_lr must be > 0, got {self.mtlnas_arch_lr}")
        if not 0 <= self.mtlnas_init < 1:
            raise ValueError(f"mtlnas_init must be in [0, 1), got {self.mtlnas_init}")
        if self.mtlnas_depth is not None and self.mtlnas_depth < 0:
            raise ValueError(f"mtlnas_depth must be >= 0 (or left out: no limit), got {self.mtlnas_depth}")
        if self.adashare_tau <= 0 or not 0 < self.adashare_tau_decay <= 1:
            raise ValueError(
                f"adashare_tau must be > 0 and adashare_tau_decay in (0, 1], got {self.adashare_tau}, "
                f"{self.adashare_tau_decay}"
            )
        if self.soft_penalty not in PENALTIES or self.soft_weight < 0:
            raise ValueError(
                f"soft_penalty must be one of {PENALTIES} and soft_weight >= 0, got "
                f"{self.soft_penalty!r}, {self.soft_weight}"
            )


refuse_moved_settings(
    ModelConfig,
    {
        old.split(".", 1)[1]: f"GeneratorConfig({new}=...) (maxl.train.GeneratorConfig, section [generator] of a "
        "run's configuration; the flag is unchanged)"
        for old, new in MOVED_TO_GENERATOR.items()
        if old.startswith("model.")
    },
)


@dataclass
class AuxConfig:
    """Auxiliary tasks beside the method's own (:data:`maxl.train.aux_learner.TASK_NAMES`), the
    loss weighting (a key of :data:`auxtasks.WEIGHTINGS`), fixed weights by task name (with
    ``weighting="equal"`` only), and the tasks' modes."""

    tasks: list[str] = setting(
        default_factory=list,
        flag="--aux",
        choices=TASK_NAMES,
        help="add an auxiliary task (repeat for several): rotation (Gidaris et al. 2018), "
        "colourisation (Zhang et al. 2016, RGB data only)",
    )
    weighting: str = setting(
        "equal", choices=lambda: sorted(WEIGHTINGS), help="loss weighting of the primary and auxiliary tasks"
    )
    weighting_options: dict[str, str | float] = setting(
        default_factory=dict,
        flag="--weighting-option",
        metavar="KEY=VALUE",
        help="a hyperparameter of the weighting, e.g. c=0.4 for cagrad (repeat for several; each "
        "weighting's OPTIONS list those it takes)",
    )
    weights: dict[str, float] = setting(
        default_factory=dict,
        flag="--aux-weight",
        metavar="TASK=W",
        help="fixed weight of a task's loss, e.g. rotation=0.5 (the method's own "
        "task is named after the method: maxl, human; the primary task "
        "'primary'); unnamed tasks keep 1",
    )
    rotation_mode: str = setting(
        "all",
        choices=ROTATION_MODES,
        help="all four rotations of every image (the paper) or one random rotation per image",
    )
    colourisation_mode: str = setting(
        "regression",
        choices=COLOURISATION_MODES,
        help="ab regression, or the paper's classification over ab bins with class rebalancing",
    )
    weight_lr: float = setting(
        3e-4, help="meta-learned weightings (auto-lambda): learning rate of the task weights (Adam)"
    )
    weight_init: float = setting(0.1, help="auto-lambda: initial weight of every task (Auto-Lambda's 0.1)")
    weight_engine: str = setting(
        "jvp",
        choices=TASK_WEIGHT_ENGINES,
        help="auto-lambda: meta-gradient of the weights: jvp or func (exact), fd (Auto-Lambda's "
        "finite-difference Hessian-vector product)",
    )
    weight_fused: bool = setting(
        True,
        flag="--weight-unfused",
        help="auto-lambda, ol-aux: take the weight step from the training step's own forward and per-task "
        "backward passes (exact: Auto-λ's jvp/func engines' update, OL-AUX's alignments, at a fraction of "
        "the cost; default); --weight-unfused runs a separate look-ahead / forward (the fd engine always does)",
    )
    weight_split: int | None = setting(
        None,
        metavar="IMAGES",
        help="meta-learned weightings: hold out this many training images (class-stratified) for the "
        "weights' outer loss, never trained on; 0 holds none out: the outer loss takes batches of the "
        "training images themselves, not augmented, from a shuffle of their own each epoch, as "
        "Auto-Lambda's reference implementation does (default: a tenth of the training images)",
    )
    weight_every: int = setting(1, help="meta-learned weightings: a weight step every this many network steps")
    weight_neumann_terms: int = setting(
        3, help="auxilearn: Neumann terms of the inverse Hessian after the first (implicit differentiation)"
    )
    weight_horizon: int = setting(
        5, help="ol-aux: N, the weight steps whose gradient alignments make one update of the weights"
    )

    def __post_init__(self):
        from auxtasks import COLOURISATION_MODES, ROTATION_MODES, WEIGHTINGS

        check_field_types(self, "aux")
        self.tasks = list(self.tasks)
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if unknown:
            raise ValueError(f"unknown auxiliary tasks {unknown}; expected some of {TASK_NAMES}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; expected one of {sorted(WEIGHTINGS)}")
        from auxtasks.weighting import weighting_options

        try:  # the names the weighting takes and the values' types; their ranges are checked when it is made
            weighting_options(WEIGHTINGS[self.weighting], self.weighting_options)
        except ValueError as e:
            raise ValueError(f"aux.weighting_options (--weighting-option): {e}") from None
        if self.weights and self.weighting != "equal":
            raise ValueError(
                f"fixed weights {self.weights} set the weighting and cannot be combined with "
                f"--weighting {self.weighting}"
            )
        if not self.weight_lr > 0 or self.weight_lr == float("inf"):
            raise ValueError(
                f"weight_lr must be > 0 and finite (the task weights' learning rate), got {self.weight_lr}"
            )
        if not self.weight_init >= 0:
            raise ValueError(f"weight_init must be >= 0, got {self.weight_init}")
        if self.weight_engine not in TASK_WEIGHT_ENGINES:
            raise ValueError(f"unknown weight_engine {self.weight_engine!r}; expected one of {TASK_WEIGHT_ENGINES}")
        if self.weight_split is not None and self.weight_split < 0:
            raise ValueError(
                f"weight_split must be >= 0 images (0: none held out, the outer loss on the training images; "
                f"leave it out for a tenth), got {self.weight_split}"
            )
        if self.weight_neumann_terms < 0:
            raise ValueError(f"weight_neumann_terms must be >= 0, got {self.weight_neumann_terms}")
        if self.weight_horizon < 1:
            raise ValueError(f"weight_horizon must be >= 1 steps, got {self.weight_horizon}")
        if self.weight_every < 1:
            raise ValueError(f"weight_every must be >= 1 steps, got {self.weight_every}")
        if self.rotation_mode not in ROTATION_MODES or self.colourisation_mode not in COLOURISATION_MODES:
            raise ValueError(
                f"rotation_mode must be one of {ROTATION_MODES} and colourisation_mode one of "
                f"{COLOURISATION_MODES}, got {self.rotation_mode!r}, {self.colourisation_mode!r}"
            )


@dataclass
class BaselineConfig:
    """The k-means baseline's autoencoder: training epochs and latent size."""

    ae_epochs: int = setting(10, help="kmeans: epochs of the autoencoder whose latent codes are clustered")
    ae_latent: int = setting(32, help="kmeans: size of the autoencoder's latent code")

    def __post_init__(self):
        check_field_types(self, "baselines")
        if self.ae_epochs < 0 or self.ae_latent < 1:
            raise ValueError(f"ae_epochs must be >= 0 and ae_latent >= 1, got {self.ae_epochs}, {self.ae_latent}")


#: Entries of config.json's sections that describe the data rather than configure the run.
DERIVED = {"data": ("name", "num_train", "num_test", "num_val"), "model": ("num_primary",)}
#: Top-level entries of config.json that record what happened (the labels made, the environment and
#: start, the resumes, the seconds of searches made before the first epoch), no settings.
RECORD_ONLY = frozenset({"labels", "env", "resumed", "setup_seconds"})


def sections_of(cls: type) -> dict[str, type]:
    """The sections of a run configuration class: its fields whose type is a settings dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if is_dataclass(hints[f.name])}


@dataclass
class RunConfig:
    """Everything that defines a run, in sections; ``out`` is the run folder and ``threads``
    torch's CPU threads (None: torch's choice).

    ``RunConfig.from_dict`` reads what :meth:`to_dict` (or a run's ``config.json``, or a TOML
    file with the same sections) holds; missing entries keep their defaults.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    meta: MetaConfig = field(default_factory=lambda: MetaConfig(inner_lr=None))
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    aux: AuxConfig = field(default_factory=AuxConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    out: str = setting("runs/maxl", help="run folder (with several methods: OUT/METHOD)")
    threads: int | None = setting(
        None, help="CPU threads of torch (default: torch's choice; 1 is fastest on a shared CPU)"
    )
    preset: str | None = setting(
        None,
        choices=PRESET_CHOICES,
        help="settings to start from before --config and the flags: auto (default) the data"
        " set's preset, paper the paper's CIFAR-100 settings, or another data set's "
        "preset (maxl.train.presets; written resolved into config.json)",
    )

    def __post_init__(self):
        check_field_types(self, "")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (leave it out for torch's choice), got {self.threads}")
        if self.preset is not None and self.preset not in PRESET_CHOICES:
            raise ValueError(f"unknown preset {self.preset!r}; expected one of {PRESET_CHOICES}")
        if WEIGHTINGS[self.aux.weighting].meta_learned and not self.aux.tasks and self.train.method == "single":
            raise ValueError(
                f"--weighting {self.aux.weighting} learns the weights of auxiliary tasks, and this run has none: "
                "add --aux rotation / colourisation, or a method with its own auxiliary task (maxl, human, ...)"
            )

    def inert_settings(self) -> dict[str, str]:
        """The settings that have no effect with the others, each with the reason (the one list of
        these rules; ``maxl train`` refuses such a setting given as a flag).

        Returns:
            ``{dotted path: why it has no effect}``.
        """
        t, m, g, meta, a = self.train, self.model, self.generator, self.meta, self.aux
        rules = {
            "generator.every": (
                g.schedule != "per-step",
                "the generator takes a step every k steps only with "
                "--schedule per-step (the alternate schedule updates it in a pass of its own)",
            ),
            "generator.fused": (
                g.schedule != "per-step",
                "the multi-task update and the look-ahead share a forward/backward only with --schedule per-step",
            ),
            "meta.neumann_terms": (
                meta.order != "implicit",
                "the Neumann series is the inverse Hessian of --meta-order implicit",
            ),
            "meta.fd_epsilon": (
                meta.order != "first",
                "the finite-difference step is that of --meta-order first",
            ),
            "meta.engine": (
                meta.order != "second",
                "an engine computes the exact look-ahead of --meta-order second",
            ),
            "model.soft_penalty": (m.arch != "soft", "the penalty ties the towers of --arch soft"),
            "model.soft_weight": (m.arch != "soft", "the penalty ties the towers of --arch soft"),
            **{
                f"model.adashare_{k}": (m.arch != "adashare", "it sets --arch adashare's policy search")
                for k in (
                    "warmup",
                    "sparsity",
                    "sharing",
                    "tau",
                    "tau_decay",
                    "curriculum",
                    "policy",
                    "policy_split",
                    "policy_lr",
                    "samples",
                )
            },
            **{
                f"model.sparse_{k}": (m.arch != "sparse", "it sets --arch sparse's mask search")
                for k in ("rounds", "density", "steps", "warmup")
            },
            **{
                f"model.mtlnas_{k}": (m.arch != "mtl-nas", "it sets --arch mtl-nas's edge search")
                for k in ("depth", "tau", "tau_decay", "entropy", "edges", "init", "arch_split", "arch_lr")
            },
            "train.warmup": (t.lr_schedule != "onecycle", "the warm-up is that of --lr-schedule onecycle"),
            "train.lr_step": (t.lr_schedule != "step", "the step schedule is --lr-schedule step's"),
            "train.lr_gamma": (t.lr_schedule != "step", "the step schedule is --lr-schedule step's"),
            "train.focal_gamma": (t.loss != "focal", "gamma is the focal loss's (--loss focal)"),
            "aux.rotation_mode": ("rotation" not in a.tasks, "it sets the rotation task (--aux rotation)"),
            "aux.colourisation_mode": (
                "colourisation" not in a.tasks,
                "it sets the colourisation task (--aux colourisation)",
            ),
            **{
                f"aux.{name}": (
                    not WEIGHTINGS[a.weighting].meta_learned,
                    "it sets a meta-learned weighting (--weighting auto-lambda)",
                )
                for name in ("weight_lr", "weight_every")
            },
            "aux.weight_split": (
                not (WEIGHTINGS[a.weighting].meta_learned and WEIGHTINGS[a.weighting].uses_held_out),
                "it holds out images for a weighting whose outer loss is on held-out images (auto-lambda, auxilearn)",
            ),
            "aux.weight_horizon": (a.weighting != "ol-aux", "it sets --weighting ol-aux"),
            "aux.weight_neumann_terms": (
                not a.weighting.startswith("auxilearn"),
                "it sets --weighting auxilearn / auxilearn-nonlinear",
            ),
            **{
                f"aux.{name}": (a.weighting != "auto-lambda", "it sets --weighting auto-lambda")
                for name in ("weight_init", "weight_engine")
            },
            "aux.weight_fused": (
                a.weighting not in ("auto-lambda", "ol-aux"),
                "it sets --weighting auto-lambda / ol-aux",
            ),
            "data.padding_mode": (
                not self.data.augment,
                "the padding is the random crop's, and --no-augment turns the crop off",
            ),
        }
        for view in ("consistency_colour", "consistency_flip", "consistency_rotation"):
            rules[f"objective.{view}"] = (
                self.objective.consistency_weight == 0,
                "the second view serves the view-consistency term, whose weight --consistency-weight is 0",
            )
        return {path: why for path, (inert, why) in rules.items() if inert}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Raises: ValueError naming an unknown section or setting, a section that is not a table,
        or a setting of the wrong type or out of range."""
        sections = sections_of(cls)
        d = migrate(d)  # settings named by their old paths (an old run's config.json) at their new ones
        if not isinstance(d, dict):
            raise ValueError(
                f"a run configuration is a table of sections {sorted(sections)}, got a value of type {type(d).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - RECORD_ONLY, key=str)
        if unknown:
            raise ValueError(f"unknown run settings {unknown}; the sections are {sorted(sections)}")
        kwargs = {k: v for k, v in d.items() if k in known and k not in sections}
        for name, kind in sections.items():
            section = d.get(name, {})
            if isinstance(section, dict):  # the entries that describe the data (config.json) are no settings
                section = {k: v for k, v in section.items() if k not in DERIVED.get(name, ())}
            kwargs[name] = kind(**{**_run_defaults(cls, name), **check_keys(section, kind, name)})
        return cls(**kwargs)


def _run_defaults(cls: type, name: str) -> dict:
    """The settings whose default in the run's section ``name`` differs from its class's own
    default (``meta.inner_lr``: None, the multi-task lr, in a run; 0.01 in ``MetaConfig()``), so
    that a section left out or given in part keeps the run's defaults."""
    f = next(f for f in fields(cls) if f.name == name)
    if f.default_factory is dataclasses.MISSING:
        return {}
    run_default, own = f.default_factory(), typing.get_type_hints(cls)[name]()
    return {k: v for k, v in asdict(run_default).items() if getattr(own, k) != v}


def load_data(d: DataConfig, seed: int, *, augment: bool | None = None):
    """The images of a run's ``data`` section (:func:`maxl.data.load_dataset` with every setting
    of ``d``): the one call that training and the analysis of a finished run
    (:func:`maxl.analysis.run.load_run`) share, so that both see the same subsets, validation
    split and normalisation.

    Args:
        d: the data section.
        seed: the run's seed (it draws the subsets and the validation split).
        augment: None: ``d.augment``; False for the analysis (no training augmentation).

    Returns:
        A :class:`maxl.data.DataBundle`.
    """
    norm = (d.normalisation[0], d.normalisation[1]) if d.normalisation else None  # [mean, std]: checked
    return load_dataset(
        d.dataset,
        d.data_root,
        hierarchy=d.hierarchy,
        train_subset=d.train_subset,
        test_subset=d.test_subset,
        augment=d.augment if augment is None else augment,
        seed=seed,
        download=d.download,
        val_subset=d.val_subset,
        padding_mode=d.padding_mode,
        normalisation=norm,
        resize=d.resize,
        batch_transforms=d.loader == "batch",
    )


def make_network(
    arch: str,
    backbone: str,
    in_channels: int,
    batchnorm: bool,
    num_primary: int,
    num_aux: int,
    hidden: int,
    soft_penalty: str = "l2",
    soft_weight: float = 0.01,
    settings: dict | None = None,
) -> MultiTaskNetwork:
    """The multi-task network of ``ModelConfig.arch`` on backbones ``backbone`` (a fresh one per
    call of the architecture, :func:`maxl.nn.architectures.build_network`); ``num_aux`` = 0 for
    single-task; ``settings`` the architecture's own (:func:`arch_settings`)."""
    return build_network(
        arch,
        lambda: build_backbone(backbone, in_channels, batchnorm),
        num_primary,
        num_aux,
        hidden,
        batchnorm=batchnorm,
        soft_penalty=soft_penalty,
        soft_weight=soft_weight,
        settings=settings,
    )


def find_sparse_masks(
    net: MultiTaskNetwork,
    train_set,
    m: ModelConfig,
    t: TrainConfig,
    aux_labels: torch.Tensor | None,
    generator: LabelGenerator | None,
    log=print,
) -> None:
    """``--arch sparse``: the masks by iterative magnitude pruning with rewinding
    (:func:`maxl.nn.architectures.search_masks`) on the training set, the multi-task SGD settings
    (lr, momentum, batch size) and loss. The auxiliary task prunes on the method's fixed labels
    (human, random, k-means) or, with MAXL, on the generator's labels at its initialisation (the
    labels it will make are not known before training); single-task prunes the primary task alone."""
    from torch.utils.data import DataLoader

    device = resolve_device(t.device)
    net.to(device)
    if generator is not None:
        generator.to(device)
    loss_fn = classification_loss(t.loss, t.focal_gamma)
    order = torch.Generator().manual_seed(t.seed)

    def batches():
        loader = DataLoader(train_set, batch_size=t.batch_size, shuffle=True, drop_last=True, generator=order)
        for x, y, idx in loader:
            x, y = x.to(device), torch.as_tensor(y).to(device)
            if aux_labels is not None:
                aux = aux_labels.to(device)[torch.as_tensor(idx).to(device)]
            elif generator is not None:
                with torch.no_grad():
                    aux = generator(x, y).detach()
            else:
                aux = y  # unused: single-task
            yield x, y, aux

    losses = [lambda out, y, a: loss_fn(out[0], y)]
    if net.num_aux:
        losses.append(lambda out, y, a: loss_fn(out[1], a))
    rate = round_rate(m.sparse_density, m.sparse_rounds) if m.sparse_rounds else 0.0
    was_training = generator.training if generator is not None else False
    if generator is not None:
        generator.eval()  # its labels without touching its BatchNorm statistics
    search_masks(
        net,
        batches,
        losses,
        rounds=m.sparse_rounds,
        rate=rate,
        steps=m.sparse_steps,
        warmup_steps=m.sparse_warmup,
        lr=t.lr,
        momentum=t.momentum,
        log=log,
    )
    if generator is not None:
        generator.train(was_training)


def arch_settings(m: ModelConfig) -> dict:
    """The keyword arguments of ``m.arch``'s trunk from its settings (empty for most)."""
    if m.arch == "adashare":
        return dict(
            warmup=m.adashare_warmup,
            sparsity_weight=m.adashare_sparsity,
            sharing_weight=m.adashare_sharing,
            tau=m.adashare_tau,
            tau_decay=m.adashare_tau_decay,
            curriculum_speed=m.adashare_curriculum,
            policy=m.adashare_policy,
            alternate=m.adashare_policy_split != 0,
            policy_lr=m.adashare_policy_lr,
            samples=m.adashare_samples,
        )
    if m.arch == "mtl-nas":
        return dict(
            depth=m.mtlnas_depth,
            tau=m.mtlnas_tau,
            tau_decay=m.mtlnas_tau_decay,
            entropy_weight=m.mtlnas_entropy,
            edges=m.mtlnas_edges,
            source_init=m.mtlnas_init,
            alternate=m.mtlnas_arch_split != 0,
            arch_lr=m.mtlnas_arch_lr,
        )
    return {}


#: The sections of :class:`RunConfig` by name.
SECTIONS = sections_of(RunConfig)


def make_generator(
    kind: str,
    net: MultiTaskNetwork,
    backbone: str,
    in_channels: int,
    batchnorm: bool,
    psi: list[int],
    hidden: int,
    weight_range: float = 0.0,
    gumbel_tau: float = 0.0,
) -> LabelGenerator:
    """The label-generation network of ``GeneratorConfig.network``: ``"own"`` builds its own
    backbone, ``"features"`` a head on ``net``'s backbone (the primary task's features where the
    architecture has one per task), ``"features-running"`` the same with the backbone's BatchNorm
    running statistics (an image's label does not depend on its batch); ``weight_range`` > 0 adds
    per-image auxiliary-loss weights, ``gumbel_tau`` > 0 hard labels (:class:`maxl.nn.LabelGenerator`)."""
    if kind.startswith("features"):  # the primary task's features where the architecture has one per task
        task_view = getattr(net.backbone, "task_view", None)
        shared = task_view(0) if task_view is not None else net.backbone
        return FeatureLabelGenerator(
            shared,
            psi,
            hidden,
            weight_range=weight_range,
            gumbel_tau=gumbel_tau,
            running_statistics=kind == "features-running",
        )
    return LabelGenerator(
        build_backbone(backbone, in_channels, batchnorm), psi, hidden, weight_range=weight_range, gumbel_tau=gumbel_tau
    )


def parse_psi(text: str | int | list[int] | None, num_primary: int, human_psi: list[int] | None) -> list[int]:
    """ψ from a setting: ``"5"`` or ``5`` (5 for every primary class), ``"6,4"`` or ``[6, 4]`` (one per
    class), or None (the data set's human hierarchy if it has one, else 5 per class).

    Raises:
        ValueError: unparsable text, an entry that is not an int >= 1 (:func:`psi_values`), or a ψ
            whose length is not the number of primary classes.
    """
    if text is None:
        return list(human_psi) if human_psi is not None else [DEFAULT_AUX_PER_CLASS] * num_primary
    values = psi_values(text)
    if len(values) == 1:
        values = values * num_primary
    psi = list(Hierarchy(values).psi)
    if len(psi) != num_primary:
        raise ValueError(
            f"--psi {text!r} has {len(psi)} entries but the data set has {num_primary} primary "
            f"classes: give one entry per primary class, or a single int"
        )
    return psi


def psi_values(text: str | int | list[int]) -> list[int]:
    """The entries of a ψ setting (``"5"``, ``5``, ``"6,4"``, ``[6, 4]``), each checked to be an int >= 1.

    Raises:
        ValueError: unparsable text, an entry that is not an integer (``[2.5]`` is refused, not
            rounded) or is < 1, or no entry at all.
    """
    if isinstance(text, (list, tuple)):
        values = list(text)
    elif isinstance(text, numbers.Integral) and not isinstance(text, bool):
        values = [text]
    else:
        try:
            values = [int(v) for v in str(text).replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise ValueError(f"--psi {text!r}: expected an int or comma-separated ints such as 6,4") from None
    return list(validate_psi(values))


def meta_weighting_options(a: AuxConfig) -> dict[str, str | float]:
    """The options of a meta-learned weighting from the ``aux`` section's ``weight_*`` settings
    (``--weighting-option`` overrides them)."""
    if a.weighting == "auto-lambda":
        return {"lr": a.weight_lr, "init": a.weight_init, "engine": a.weight_engine, "fused": a.weight_fused}
    if a.weighting == "ol-aux":
        return {"lr": a.weight_lr, "horizon": a.weight_horizon, "fused": a.weight_fused}
    if a.weighting.startswith("auxilearn"):
        return {"lr": a.weight_lr, "terms": a.weight_neumann_terms}
    return {}


def hold_out_for_weights(data, size: int | None, seed: int):
    """The training images less a class-stratified split for a meta-learned weighting's outer loss.

    Args:
        data: a :class:`maxl.data.DataBundle` whose training set holds its images (``images``,
            ``labels``: every built-in data set).
        size: images to hold out; None: a tenth of the training images (at least 1); 0: none,
            ``data`` is returned as it is (the outer loss then takes batches of the training
            images themselves: :func:`training_images_for_weights`).
        seed: the run's seed (the split is drawn from ``seed + 2``).

    Returns:
        ``data`` with the rest as its training set (and ``aux_train``), the held-out images as
        ``weight_set`` (not augmented: the test set's transform) and their positions among the
        training images as ``weight_index``.

    Raises:
        ValueError: ``size`` is not smaller than the number of training images.
    """
    if size == 0:
        return data
    data, held_set, held = _hold_out(data, size, seed + 2, "weight_split", augment=False)
    return replace(data, weight_set=held_set, weight_index=held)


def training_images_for_weights(data):
    """The outer-loss images of a meta-learned weighting that holds none out (``aux.weight_split
    = 0``): the training images and labels of ``data.train`` with the test set's transform, not
    augmented, as a held-out split would be. The trainer draws each epoch's outer batches as a pass
    over a shuffle of them of its own (``Trainer(weight_from_training=True)``), as Auto-λ's
    reference implementation takes its meta step's primary loss on a second loader over the
    training set (Liu, James, Davison, Johns, "Auto-Lambda", TMLR 2022; lorenmt/auto-lambda).

    Args:
        data: a :class:`maxl.data.DataBundle` whose training set holds its images (``images``,
            ``labels``: every built-in data set).

    Returns:
        An :class:`maxl.data.datasets.ImageTensorDataset` of the same N images, positions as in
        ``data.train``.
    """
    from maxl.data.datasets import ImageTensorDataset

    train, test = data.train, data.test
    return ImageTensorDataset(train.images, train.labels, test.transform, getattr(test, "batch_transform", None))


def hold_out_for_architecture(
    data, aux_labels: torch.Tensor | None, size: int | None, seed: int, setting_name: str = "adashare_policy_split"
):
    """The training images less a class-stratified split B for an architecture search's own
    updates (AdaShare's policy updates, MTL-NAS's gate updates), which alternate with the weight
    updates on the rest.

    Args:
        data: a :class:`maxl.data.DataBundle` whose training set holds its images.
        aux_labels: int64 ``[N_train]`` fixed auxiliary labels of the training images, or None.
        size: images of split B; None: a tenth of the training images (at least 1).
        seed: the run's seed (the split is drawn from ``seed + 3``: not the weightings' split).
        setting_name: the setting of ``size``, for the error message.

    Returns:
        ``(data with split A as its training set, split B, the auxiliary labels of split A,
        those of split B)`` (each None without ``aux_labels``); split B keeps the training
        transform (its images are training images: augmented as those are).

    Raises:
        ValueError: ``size`` is not smaller than the number of training images.
    """
    data, held_set, held = _hold_out(data, size, seed + 3, setting_name, augment=True)
    if aux_labels is None:
        return data, held_set, None, None
    rest = torch.ones(len(aux_labels), dtype=torch.bool)
    rest[held] = False
    return data, held_set, aux_labels[rest], aux_labels[held]


def architecture_split(m: ModelConfig, batch_size: int, n_train: int) -> tuple[str, int, str] | None:
    """Split B of an architecture search (:func:`hold_out_for_architecture`): ``(its setting's
    name, its size, what it updates)``, or None when the run holds none (no search, a given
    architecture, or the split set to 0). Training (:func:`build`) and the analysis
    (:func:`maxl.analysis.run.load_run`) both ask it.

    Args:
        m: the ``model`` section.
        batch_size: images per batch (split B holds at least one batch).
        n_train: the training images before split B.

    Raises:
        ValueError: a split smaller than one batch.
    """
    searched = {
        "adashare": ("adashare_policy_split", m.adashare_policy_split, 10, m.adashare_policy is None, "policy"),
        "mtl-nas": ("mtlnas_arch_split", m.mtlnas_arch_split, 2, m.mtlnas_edges is None, "architecture"),
    }
    if m.arch not in searched or not searched[m.arch][3] or searched[m.arch][1] == 0:
        return None
    name, split, share, _, what = searched[m.arch]
    if split is None:  # a tenth (adashare) or half (mtl-nas) of the training images, at least one batch
        split = max(batch_size, n_train // share)
    elif split < batch_size:
        raise ValueError(
            f"{name} must hold at least one batch (batch_size = {batch_size}) of images for the {what} "
            f"updates, got {split}"
        )
    return name, split, what


def _hold_out(data, size: int | None, seed: int, setting_name: str, augment: bool):
    """``(data less a class-stratified split of size images, the split, its indices)``."""
    from maxl.data.datasets import ImageTensorDataset, stratified_subset

    train = data.train
    n = len(train.labels)
    size = max(1, n // 10) if size is None else size
    if not 1 <= size < n:
        raise ValueError(
            f"{setting_name} must be smaller than the {n} training images (the rest train the network), got {size}"
        )
    held = stratified_subset(train.labels, size, seed)
    rest = torch.ones(n, dtype=torch.bool)
    rest[held] = False
    # the data sets' own per-image and batch transforms (the trainer's --loader batch path uses the latter)
    source = train if augment else data.test
    held_set = ImageTensorDataset(
        train.images[held], train.labels[held], source.transform, getattr(source, "batch_transform", None)
    )
    kept = ImageTensorDataset(
        train.images[rest], train.labels[rest], train.transform, getattr(train, "batch_transform", None)
    )
    aux_train = data.aux_train[rest] if data.aux_train is not None else None
    return replace(data, train=kept, aux_train=aux_train), held_set, held


def outer_loss_on_training_images(run: RunConfig) -> bool:
    """Whether the run's weighting takes its outer loss on batches of the training images
    themselves: a meta-learned weighting that learns on held-out images, with ``aux.weight_split
    = 0`` (:func:`training_images_for_weights`)."""
    chosen = WEIGHTINGS[run.aux.weighting]
    return chosen.meta_learned and chosen.uses_held_out and run.aux.weight_split == 0


def load_training_data(run: RunConfig, *, augment: bool | None = None):
    """The images a run trains on: :func:`load_data` of its ``data`` section, less the held-out
    split of a meta-learned weighting that learns on held-out images (:func:`hold_out_for_weights`;
    none with ``aux.weight_split = 0``, whose outer loss is on the training images themselves).
    Training (:func:`build`) and the analysis of a finished run (:func:`maxl.analysis.run.load_run`)
    both call it, so that both see the same training set.

    Args:
        run: the configuration (its ``data`` section, ``train.seed`` and ``aux`` weighting settings).
        augment: None: ``data.augment``; False for the analysis (no training augmentation).

    Returns:
        A :class:`maxl.data.DataBundle`; ``weight_set`` / ``weight_index`` set when a split is held out.

    Raises:
        ValueError: a ``weight_split`` not smaller than the training images.
    """
    data = load_data(run.data, run.train.seed, augment=augment)
    chosen = WEIGHTINGS[run.aux.weighting]
    if chosen.meta_learned and chosen.uses_held_out:  # before the fixed labels, which index the training images
        data = hold_out_for_weights(data, run.aux.weight_split, run.train.seed)
    return data


def build(run: RunConfig, *, resume: bool = False, log=print) -> Trainer:
    """Make the run's data, auxiliary labels, networks, learner and trainer; write (or, when
    resuming, update) ``config.json`` in ``run.out``.

    Args:
        run: the configuration.
        resume: continue the run in ``run.out`` from its ``checkpoint.pt``.
        log: where the start-up lines go (rank 0 only).

    Returns:
        The :class:`~maxl.train.Trainer`; ``trainer.fit()`` trains.

    Raises:
        ValueError: settings that do not fit each other or the data (the message names them);
            :class:`~maxl.train.CheckpointError` for a checkpoint of another configuration.
        FileNotFoundError: missing data files, or no checkpoint to resume from.
    """
    if run.threads:
        torch.set_num_threads(run.threads)
    is_main = distributed.rank() == 0
    say = log if is_main else (lambda *_: None)
    if run.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before any cuBLAS call
    d, m, t = run.data, run.model, run.train
    data = load_training_data(run)
    psi = parse_psi(m.psi, data.num_primary, data.psi)
    backbone = m.backbone or dataset_spec(d.dataset).default_backbone
    if t.method == "human" and (data.aux_train is None or data.psi != psi):
        raise ValueError(
            f"method 'human' needs a data set with a human hierarchy matching psi={psi}; {data.name} has psi={data.psi}"
        )
    run = replace(run, model=replace(m, psi=psi, backbone=backbone))
    held = len(data.weight_set) if data.weight_set is not None else 0
    say(
        f"{data.name}: {len(data.train) + held} train / {len(data.test)} test images, {data.in_channels}x"
        f"{data.image_size}x{data.image_size}, {data.num_primary} primary classes, psi={psi}, backbone {backbone}"
    )
    if held:
        say(f"[{run.aux.weighting}] {held} training images held out for the task weights' outer loss")
    weights_on_training = outer_loss_on_training_images(run)
    if weights_on_training:
        say(
            f"[{run.aux.weighting}] the task weights' outer loss on the training images (--weight-split 0: "
            "none held out; a shuffle of their own, not augmented)"
        )
    aux_labels = label_info = None
    if t.method in FIXED_LABEL_METHODS:  # made before the networks, so that their initialisation is the same
        ae = AutoencoderConfig(epochs=run.baselines.ae_epochs, latent_dim=run.baselines.ae_latent)
        aux_labels, label_info = fixed_aux_labels(t.method, data, psi, t.seed, ae, resolve_device(t.device))
        say(f"[{t.method}] auxiliary labels made in {label_info['time_s']:.1f}s")
    seed_everything(t.seed)
    if m.arch != "hard" and run.aux.tasks:
        raise ValueError(
            f"--aux {' '.join(run.aux.tasks)} needs --arch hard: the self-supervised tasks read one "
            f"shared feature vector, and {m.arch!r} has one per task"
        )
    net = make_network(
        m.arch,
        backbone,
        data.in_channels,
        m.batchnorm,
        data.num_primary,
        0 if t.method == "single" else sum(psi),
        m.hidden,
        m.soft_penalty,
        m.soft_weight,
        arch_settings(m),
    )
    generator, g = None, run.generator
    if t.method == "maxl":
        generator = make_generator(
            g.network, net, backbone, data.in_channels, m.batchnorm, psi, m.hidden, g.image_weight_range, g.gumbel_tau
        )
    if m.arch == "sparse" and t.method == "maxl" and run.meta.order == "second" and run.meta.engine == "higher":
        raise ValueError(
            "--arch sparse reads each task's masked weights by torch.func.functional_call, which the "
            "'higher' engine's patched modules do not support: use --meta-engine func or jvp"
        )
    if m.arch == "adashare" and m.adashare_samples > 0 and m.adashare_policy is None and data.val is None:
        raise ValueError(
            "adashare_samples chooses among sampled architectures on validation images held out from the "
            "training images: set --val-subset (never the test set)"
        )
    arch_set = arch_aux = None
    split_b = architecture_split(m, t.batch_size, len(data.train))
    if split_b is not None:  # after the fixed labels (made from all the training images), before the data checks
        name, split, what = split_b
        data, arch_set, aux_labels, arch_aux = hold_out_for_architecture(data, aux_labels, split, t.seed, name)
        say(f"[{m.arch}] {len(arch_set)} training images held out for the {what} updates (split B)")
    setup_seconds: dict[str, float] = {}  # searches made before the first epoch (config.json: setup_seconds)
    if m.arch == "sparse" and not resume:  # the masks: buffers of the network, in its checkpoints
        t0 = time.time()
        find_sparse_masks(net, data.train, m, t, aux_labels, generator, say)
        setup_seconds["sparse_masks"] = time.time() - t0
        say(f"[sparse] masks found in {setup_seconds['sparse_masks']:.1f}s")
    a = run.aux
    needs_prior = "colourisation" in a.tasks and a.colourisation_mode == "classification"
    learner = build_learner(
        net,
        t.method,
        a.tasks,
        a.weighting,
        loss_fn=classification_loss(t.loss, t.focal_gamma),
        in_channels=data.in_channels,
        image_size=data.image_size,
        normalisation=dataset_normalisation(data.test),
        generator=generator,
        aux_labels=aux_labels,
        meta=run.meta,
        objective=run.objective,
        aux_weights=a.weights,
        weighting_options={**meta_weighting_options(a), **a.weighting_options},
        rotation_mode=a.rotation_mode,
        colourisation_mode=a.colourisation_mode,
        prior_images=normalised_images(data.train) if needs_prior else None,
        hidden=m.hidden,
    )
    out = Path(run.out)
    record = run.to_dict()
    if is_main and not resume:
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.jsonl", "summary.json", "checkpoint.pt"):  # a fresh run keeps nothing of an older one
            (out / stale).unlink(missing_ok=True)
    trainer = Trainer(
        net,
        data.train,
        data.test,
        t,
        out,
        gen_config=g,
        learner=learner,
        aux_labels=aux_labels,
        psi=psi,
        record=record,
        val_set=data.val,
        human_labels=data.aux_train,
        weight_set=training_images_for_weights(data) if weights_on_training else data.weight_set,
        weight_from_training=weights_on_training,
        arch_set=arch_set,
        arch_aux_labels=arch_aux,
        weight_every=run.aux.weight_every,
    )
    started = {
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "world_size": distributed.world_size(),
    }
    if resume:
        trainer.load_checkpoint(out / "checkpoint.pt")
        if is_main:  # keep the original record; note the resume and the settings that changed
            stored = migrate(json.loads((out / "config.json").read_text()), announce=False)
            stored.update({k: v for k, v in record.items() if k != "data" and k != "model"})
            stored.setdefault("resumed", []).append({**started, "after_epoch": trainer.epoch})
            atomic_write_text(out / "config.json", json.dumps(stored, indent=2) + "\n")
        say(f"[{t.method}] resuming {out} after epoch {trainer.epoch} of {t.epochs}")
    else:
        if is_main:
            resolved = run.to_dict()
            resolved["data"].update(
                name=data.name,
                num_train=len(data.train),
                num_test=len(data.test),
                num_val=len(data.val) if data.val is not None else 0,
            )
            resolved["model"]["num_primary"] = data.num_primary
            resolved.update(
                labels=label_info,
                env={"torch": torch.__version__, "python": platform.python_version(), **started},
                setup_seconds=setup_seconds,
            )
            atomic_write_text(out / "config.json", json.dumps(resolved, indent=2) + "\n")
        say(f"[{t.method}] training {t.epochs} epochs -> {out}")
    return trainer
