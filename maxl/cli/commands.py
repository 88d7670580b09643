"""Command line: ``maxl train``, ``maxl demo`` (and ``maxl visualise`` / ``compare``, see
:mod:`maxl.cli.analysis`).

This module only parses argv into :class:`maxl.train.build.RunConfig` objects and calls
:func:`maxl.train.build.build`. Every ``maxl train`` flag sets one setting of the run
configuration (:data:`FLAGS`); settings not given come from ``--config FILE`` (TOML, or a
run's ``config.json``), from the run being resumed (``--resume``), from the data set's preset
(``--preset``, :mod:`maxl.train.presets`), or from the defaults.
Under ``torchrun --nproc_per_node N -m maxl train ...`` the processes join one process group
(:mod:`maxl.train.distributed`) and only rank 0 prints and writes the run folder.

:func:`main` returns the exit status: 0 done; 2 bad input or setup; 1 the run stopped (non-finite
values, or a file the operating system would not write: disk full, read-only folder), keeping
its last checkpoint. Either error is one ``maxl: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from auxtasks import COLOURISATION_MODES, ROTATION_MODES, WEIGHTINGS
from maxl.analysis.run import TornLineWarning
from maxl.cli.analysis import ANALYSIS_COMMANDS, add_analysis_commands
from maxl.cli.grid import GRID_COMMANDS, add_grid_command
from maxl.cli.demo import finish_demo
from maxl.core.losses import LOSSES
from maxl.data.datasets import DATASETS
from maxl.data.readers import WriteError
from maxl.meta import ENGINES, ORDERS, DoubleBackwardError
from maxl.nn.architectures import ARCHITECTURES, PENALTIES
from maxl.nn.backbones import BACKBONES
from maxl.train import distributed
from maxl.train.aux_learner import TASK_NAMES as AUX_TASKS
from maxl.train.build import GENERATORS, RunConfig, build, parse_psi
from maxl.train.diagnostics import GeneratorLabelWarning
from maxl.train.config import GEN_OPTIMIZERS, LR_SCHEDULES, METHODS, RESUMABLE_CHANGES, SCHEDULES
from maxl.train.preemption import EXIT_PREEMPTED, Preempted
from maxl.train.presets import PRESET_CHOICES, preset_settings

__all__ = ["main", "build_parser", "run_configs", "run_training", "parse_psi", "parse_aux_weights", "FLAGS",
           "DEMO_ARGS"]

_DEFAULTS = RunConfig().to_dict()


def _default(path: str):
    value = _DEFAULTS
    for key in path.split("."):
        value = value[key]
    return value


# flag -> (setting, argparse keywords); the help text gets the setting's default appended
FLAGS: dict[str, tuple[str, dict]] = {
    # data
    "--dataset": ("data.dataset", dict(choices=DATASETS, help="data set; 'digits' is scikit-learn's embedded 8x8 "
                                                              "digits (no download)")),
    "--data-root": ("data.data_root", dict(help="folder holding the data set files (MNIST/raw, "
                                                "cifar-10-batches-py, ImageFolder root)")),
    "--hierarchy": ("data.hierarchy", dict(help="class hierarchy: cifar100 'P-A' with levels 3/10/20/100 "
                                                "(default 20-100); cifar10/stl10/imagefolder 'animal-vehicle'; "
                                                "digits/mnist/svhn/emnist-digits 'even-odd' or 'low-high'; "
                                                "fashionmnist 'clothes-shoes-bags'; emnist-byclass/bymerge/balanced "
                                                "'digit-upper-lower'; or a FILE.json / FILE.toml mapping each primary "
                                                "class to its class names (any data set; a two-level ImageFolder "
                                                "train/<primary>/<auxiliary>/ gives its own)")),
    "--download": ("data.download", dict(action="store_true", help="let torchvision download MNIST/CIFAR "
                                                                   "(needs network)")),
    "--train-subset": ("data.train_subset", dict(type=int, help="class-stratified subset of training images")),
    "--test-subset": ("data.test_subset", dict(type=int, help="class-stratified subset of test images")),
    "--val-subset": ("data.val_subset", dict(type=int, help="hold out this many training images (class-stratified) "
                     "as a validation set, evaluated every epoch (val_acc) and never trained on")),
    "--no-augment": ("data.augment", dict(action="store_false", help="turn off the random crop + flip of RGB "
                                                                     "images")),
    "--padding-mode": ("data.padding_mode", dict(choices=("constant", "reflect"), help="padding of the random "
                                                                                      "crop")),
    "--resize": ("data.resize", dict(type=int, metavar="PIXELS", help="resize the images to PIXELS x PIXELS once at "
                 "load (e.g. stl10's 96 to 32)")),
    "--normalisation": ("data.normalisation", dict(type=float, nargs=2, metavar=("MEAN", "STD"), help="normalise "
                        "every channel as (x - MEAN) / STD instead of the data set's own statistics")),
    # model
    "--method": ("train.method", dict(nargs="+", choices=METHODS, help="one or more methods; several are run one "
                                                                       "after another into OUT/METHOD")),
    "--backbone": ("model.backbone", dict(choices=sorted(BACKBONES), help="backbone of both networks (default: "
                                          "tiny-cnn for digits, small-cnn for mnist, vgg16 else)")),
    "--arch": ("model.arch", dict(choices=ARCHITECTURES, help="multi-task architecture: hard sharing (MAXL's), "
               "soft sharing, cross-stitch, NDDR or MTAN (maxl.nn.architectures); the generator keeps its own backbone")),
    "--soft-penalty": ("model.soft_penalty", dict(choices=PENALTIES, help="--arch soft: squared-L2 tie (Duong et "
                       "al. 2015) or tensor trace norm (Yang & Hospedales 2017) of corresponding kernels")),
    "--soft-weight": ("model.soft_weight", dict(type=float, help="--arch soft: weight of the penalty")),
    "--hidden": ("model.hidden", dict(type=int, help="hidden width of the heads")),
    "--no-batchnorm": ("model.batchnorm", dict(action="store_false", help="backbones without BatchNorm: then a "
                       "torchrun run over N processes computes the multi-task step of one process with the same "
                       "global batch")),
    "--generator": ("model.generator", dict(choices=GENERATORS, help="label-generation network: its own backbone "
                    "(the paper) or a head on the multi-task network's detached features (features-running: computed "
                    "with its BatchNorm running statistics, so that an image's label does not depend on its batch)")),
    "--image-weight-range": ("model.image_weight_range", dict(type=float, help="R > 0: the generator also learns "
                             "each image's auxiliary-loss weight in [2^-R, 2^R] by the meta-gradient (WAMAL); "
                             "0: equal weights (MAXL)")),
    "--gumbel-tau": ("model.gumbel_tau", dict(type=float, help="T > 0: the auxiliary head learns from hard one-hot "
                     "samples of the generated labels, passed straight through a Gumbel-softmax of temperature T "
                     "(Jang et al. 2017); the label statistics keep the distribution; 0: soft labels (the paper)")),
    "--gumbel-tau-end": ("train.gumbel_tau_end", dict(type=float, help="with --gumbel-tau: the temperature of the "
                         "last epoch, reached linearly from --gumbel-tau")),
    "--psi": ("model.psi", dict(help="hierarchy psi: auxiliary classes per primary class, an int or a list like "
                                     "6,4 (default: the human hierarchy if any, else 5 per class)")),
    # optimisation
    "--epochs": ("train.epochs", dict(type=int, help="training epochs")),
    "--batch-size": ("train.batch_size", dict(type=int, help="images per batch (under torchrun: the global batch, "
                                                             "split over the processes)")),
    "--lr": ("train.lr", dict(type=float, help="SGD learning rate of the multi-task network")),
    "--momentum": ("train.momentum", dict(type=float, help="SGD momentum of the multi-task network")),
    "--weight-decay": ("train.weight_decay", dict(type=float, help="weight decay of the multi-task network")),
    "--gen-lr": ("train.gen_lr", dict(type=float, help="SGD learning rate of the label-generation network")),
    "--gen-weight-decay": ("train.gen_weight_decay", dict(type=float, help="weight decay of the generator")),
    "--lr-step": ("train.lr_step", dict(type=int, help="multiply both learning rates by --lr-gamma every N "
                                                       "epochs")),
    "--lr-gamma": ("train.lr_gamma", dict(type=float, help="learning-rate decay factor")),
    "--lr-schedule": ("train.lr_schedule", dict(choices=LR_SCHEDULES, help="step: x --lr-gamma every --lr-step "
                      "epochs; onecycle: warm-up to --lr over --warmup of the steps, then cosine annealing, per step")),
    "--warmup": ("train.warmup", dict(type=float, help="warm-up share of the one-cycle schedule")),
    "--gen-optimizer": ("train.gen_optimizer", dict(choices=GEN_OPTIMIZERS, help="optimiser of the generator")),
    "--loss": ("train.loss", dict(choices=LOSSES, help="loss of both heads (focal: gamma 2, the reference)")),
    "--focal-gamma": ("train.focal_gamma", dict(type=float, help="focusing parameter of the focal loss")),
    # meta step
    "--entropy-weight": ("train.meta.entropy_weight", dict(type=float, help="lambda of the negative-entropy "
                                                                            "term")),
    "--inner-lr": ("train.meta.inner_lr", dict(type=float, help="look-ahead step alpha (default: the multi-task "
                                                                "network's current learning rate)")),
    "--meta-order": ("train.meta.order", dict(choices=ORDERS, help="exact second-order meta-gradient, its "
                                                                   "finite-difference first-order approximation, or "
                                                                   "implicit differentiation (long horizon)")),
    "--neumann-terms": ("train.meta.neumann_terms", dict(type=int, help="K Neumann terms of the inverse Hessian "
                                                                        "(--meta-order implicit)")),
    "--image-entropy-weight": ("train.meta.image_entropy_weight", dict(type=float, help="mu of the per-image "
                               "entropy term of J (sharp labels per image); = --entropy-weight: the mutual information")),
    "--consistency-weight": ("train.meta.consistency_weight", dict(type=float, help="nu of the view-consistency "
                             "term of J: the mutual information of two augmented views' labels (IIC)")),
    "--consistency-colour": ("train.meta.consistency_colour", dict(type=float, help="strength s in [0, 1) of a colour "
                                                                                "distortion of the second view")),
    "--consistency-no-flip": ("train.meta.consistency_flip", dict(action="store_false", help="no mirror images among "
                              "the second views (for digits)")),
    "--consistency-rotation": ("train.meta.consistency_rotation", dict(type=float, help="rotate the second view by up "
                               "to this many degrees")),
    "--inner-steps": ("train.meta.inner_steps", dict(type=int, help="differentiable look-ahead steps k (func, higher)")),
    "--meta-batch": ("train.meta_batch", dict(choices=("same", "other"), help="outer loss on the look-ahead's batch "
                     "(the paper) or on another batch of the training images")),
    "--centre-meta-gradient": ("train.meta.centre_by_class", dict(action="store_true", help="remove from the "
                               "look-ahead's push on the labels its mean over the batch's images of each primary "
                               "class: the look-ahead decides which images take which auxiliary class, the entropy "
                               "term how often each is taken")),
    "--record-meta-parts": ("train.meta.record_parts", dict(action="store_true", help="record the norms of the "
                            "meta-gradient's look-ahead and entropy parts every epoch (one more generator backward)")),
    "--meta-engine": ("train.meta.engine", dict(choices=ENGINES, help="engine of the second-order look-ahead")),
    "--schedule": ("train.schedule", dict(choices=SCHEDULES, help="alternate: a multi-task pass then a generator "
                                          "pass per epoch (reference); per-step: generator update every "
                                          "--gen-every steps")),
    "--gen-every": ("train.gen_every", dict(type=int, help="generator update every k steps (per-step schedule)")),
    "--no-fused": ("train.fused", dict(action="store_false", help="per-step schedule: take the multi-task update "
                   "and the look-ahead from separate forward/backward passes (default: one shared pass where it "
                   "applies, same gradients)")),
    # auxiliary tasks
    "--aux": ("aux.tasks", dict(action="append", choices=AUX_TASKS, help="add an auxiliary task (repeat for "
              "several): rotation (Gidaris et al. 2018), colourisation (Zhang et al. 2016, RGB data only)")),
    "--weighting": ("aux.weighting", dict(choices=sorted(WEIGHTINGS), help="loss weighting of the primary and "
                                                                           "auxiliary tasks")),
    "--aux-weight": ("aux.weights", dict(action="append", metavar="TASK=W", help="fixed weight of a task's loss, "
                     "e.g. rotation=0.5 (the method's own task is named after the method: maxl, human; the "
                     "primary task 'primary'); unnamed tasks keep 1")),
    "--rotation-mode": ("aux.rotation_mode", dict(choices=ROTATION_MODES, help="all four rotations of every image "
                                                  "(the paper) or one random rotation per image")),
    "--colourisation-mode": ("aux.colourisation_mode", dict(choices=COLOURISATION_MODES, help="ab regression, or "
                             "the paper's classification over ab bins with class rebalancing")),
    # baselines
    "--ae-epochs": ("baselines.ae_epochs", dict(type=int, help="kmeans: epochs of the autoencoder whose latent "
                                                               "codes are clustered")),
    "--ae-latent": ("baselines.ae_latent", dict(type=int, help="kmeans: size of the autoencoder's latent code")),
    # run
    "--preset": ("preset", dict(choices=PRESET_CHOICES, help="settings to start from before --config and the flags: "
                 "auto (default) the data set's preset, paper the paper's CIFAR-100 settings, or another data set's "
                 "preset (maxl.train.presets; written resolved into config.json)")),
    "--seed": ("train.seed", dict(type=int, help="random seed")),
    "--device": ("train.device", dict(help="cpu, cuda, cuda:1, ... or auto")),
    "--out": ("out", dict(help="run folder (with several methods: OUT/METHOD)")),
    "--no-progress": ("train.progress", dict(action="store_false", help="no progress bars or per-epoch lines")),
    "--threads": ("threads", dict(type=int, help="CPU threads of torch (default: torch's choice; 1 is fastest on a "
                                                 "shared CPU)")),
    "--deterministic": ("train.deterministic", dict(action="store_true", help="deterministic kernels only "
                        "(torch.use_deterministic_algorithms): bit-identical reruns on a GPU too")),
    "--tensorboard": ("train.tensorboard", dict(action="store_true", help="also write the metrics as TensorBoard "
                                                                          "events to OUT/tensorboard")),
    "--checkpoint-every": ("train.checkpoint_every", dict(type=int, metavar="N", help="also write checkpoint.pt "
                           "every N steps of an epoch (0: at epoch ends only); SIGTERM / SIGINT / SIGUSR1 always "
                           "write one after the step under way")),
}
_GROUPS = {"data": "data", "model": "model", "train.meta": "meta step (maxl)", "train": "optimisation",
           "aux": "auxiliary tasks (auxtasks) on the shared backbone", "baselines": "baselines (kmeans)", "": "run"}
FLAG_OF = {path: flag for flag, (path, _) in FLAGS.items()}

DEMO_ARGS = ["--dataset", "digits", "--method", "single", "maxl", "--batch-size", "32", "--lr", "0.05",
             "--momentum", "0.9", "--hidden", "64", "--lr-step", "1000"]


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one ``maxl: error: ...`` line and exit status 2 like
    every other bad input of :func:`main` (instead of the usage and the message on two lines);
    the subcommands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"maxl: error: {message.replace(chr(10), ' ')} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``maxl``. ``train`` options left out are absent from the namespace
    (``argparse.SUPPRESS``): only what the command line says overrides a configuration."""
    parser = _Parser(prog="maxl", description="Meta Auxiliary Learning (Liu, Davison, Johns, NeurIPS 2019).")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train single-task, human / random / k-means auxiliary-label or MAXL models",
                       argument_default=argparse.SUPPRESS)
    groups = {}
    for flag, (path, kwargs) in FLAGS.items():
        section = next(s for s in _GROUPS if path.startswith(s))
        group = groups.setdefault(section, t.add_argument_group(_GROUPS[section]))
        default = _default(path)
        shown = "" if kwargs.get("action") in ("store_true", "store_false") or default in (None, [], {}) else \
            f" (default: {default})"
        group.add_argument(flag, dest=path, **{**kwargs, "help": kwargs["help"] + shown})
    r = groups[""]
    r.add_argument("--config", metavar="FILE", help="start from the settings in FILE (TOML with the sections "
                   "[data] [model] [train] [train.meta] [aux] [baselines], or a run's config.json); flags override")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint.pt with the "
                   "settings of its config.json (flags that disagree with them are refused; --epochs may extend "
                   "the run)")
    r.add_argument("--auto-resume", action="store_true", help="continue from OUT/checkpoint.pt where the run "
                   "folder holds one of the same settings (refused, with the differences, for other settings); "
                   "start afresh where it holds none. Implied in a process that torchrun restarted")
    demo = sub.add_parser("demo", help="quick start: single vs maxl on the embedded digits data, then the maxl "
                          "run's report.html; about a minute",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--epochs", type=int, default=15, help="epochs per method")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--out", default="runs/demo", help="parent folder of the two run folders")
    add_analysis_commands(sub)
    add_grid_command(sub)
    return parser


def parse_aux_weights(items: list[str]) -> dict[str, float]:
    """``["rotation=0.5", ...]`` -> ``{"rotation": 0.5}``.

    Raises:
        ValueError: an item that is not ``TASK=NUMBER``.
    """
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"--aux-weight {item!r}: expected TASK=WEIGHT, e.g. rotation=0.5")
    return weights


def _set(tree: dict, path: str, value) -> None:
    *parents, key = path.split(".")
    for p in parents:
        tree = tree[p]
    tree[key] = value


def _has(tree: dict, path: str) -> bool:
    for key in path.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def _get(tree: dict, path: str):
    for key in path.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def read_config_file(path: str | os.PathLike) -> dict:
    """The settings of a TOML file or a run's ``config.json``.

    Raises:
        FileNotFoundError: no such file. ValueError: it is not UTF-8 text, cannot be parsed, or
            is not a table of sections (a JSON list, say).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")  # TOML and JSON files are UTF-8
    except UnicodeDecodeError as err:
        raise ValueError(f"--config {path}: not UTF-8 text (byte {data[err.start]:#04x} at offset "
                         f"{err.start})") from None
    try:
        if path.suffix == ".json":
            table = json.loads(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            table = tomllib.loads(text)
    except ValueError as err:
        raise ValueError(f"--config {path}: cannot parse it ({err})") from None
    if not isinstance(table, dict):
        kind = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(table), "null")
        raise ValueError(f"--config {path}: expected a table of sections ([data], [model], [train], ...), got a "
                         f"JSON {kind}")
    return table


def run_configs(args: argparse.Namespace) -> tuple[list[RunConfig], bool]:
    """The runs of a parsed ``maxl train`` command line, and whether they continue a run.

    Raises:
        FileNotFoundError: ``--config`` / ``--resume`` files are missing.
        ValueError: bad settings, or flags that disagree with the run being resumed (each is
            named with both values).
    """
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "resume", "auto_resume")}
    if "aux.weights" in given:
        given["aux.weights"] = parse_aux_weights(given["aux.weights"])
    base = RunConfig().to_dict()
    resume = getattr(args, "resume", None)
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").is_file():
            inside = sorted(str(c.parent) for c in run_dir.glob("*/config.json"))
            hint = f"; it holds the run folders {', '.join(inside)}: resume one of them" if inside else ""
            raise FileNotFoundError(f"--resume {run_dir}: no config.json in that folder{hint}")
        if not (run_dir / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"--resume {run_dir}: no checkpoint.pt in that folder (the run stopped before the "
                                    "end of its first epoch); start it again without --resume")
        stored = RunConfig.from_dict(read_config_file(run_dir / "config.json")).to_dict()
        if "train.method" in given:
            given["train.method"] = given["train.method"][0] if len(given["train.method"]) == 1 else given["train.method"]
        conflicts = [f"{FLAG_OF[k]} (run: {_get(stored, k)}, command line: {v})" for k, v in sorted(given.items())
                     if k not in RESUMABLE_CHANGES and v != _get(stored, k)]
        if "out" in given and Path(given["out"]).resolve() != run_dir.resolve():
            conflicts.append(f"--out {given['out']} (a resumed run writes into its own folder {run_dir})")
        if conflicts:
            raise ValueError(f"--resume {run_dir}: the command line disagrees with the run's config.json on "
                             f"{'; '.join(conflicts)}. Leave these flags out to continue the run as it was, or "
                             "start a new run in another folder")
        for k, v in given.items():
            _set(stored, k, v)
        stored["out"] = str(run_dir)
        return [RunConfig.from_dict(stored)], True
    raw = {}
    if getattr(args, "config", None) is not None:
        raw = read_config_file(args.config)
        loaded = RunConfig.from_dict(raw).to_dict()
        base = {**base, **{k: v for k, v in loaded.items()}}
    methods = given.pop("train.method", [_get(base, "train.method")])
    # the preset fills the settings that neither the file nor the flags set: flags > file > preset > defaults
    dataset = given.get("data.dataset", _get(base, "data.dataset"))
    preset, settings = preset_settings(given.pop("preset", None) or raw.get("preset") or "auto", dataset)
    for path, value in settings.items():
        if path not in given and not _has(raw, path):
            _set(base, path, value)
    base["preset"] = preset
    for k, v in given.items():
        _set(base, k, v)
    runs = []
    for method in methods:
        tree = json.loads(json.dumps(base))  # a copy per run
        tree["train"]["method"] = method
        if len(methods) > 1:
            tree["out"] = str(Path(base["out"]) / method)
        runs.append(RunConfig.from_dict(tree))
    return runs, False


def run_training(args: argparse.Namespace) -> dict[str, dict]:
    """Build and train every run of a parsed ``maxl train`` command line; returns
    ``{method: summary}``."""
    runs, resume = run_configs(args)
    summaries = {run.train.method: build(run, resume=resume or _continues(run, args)).fit() for run in runs}
    if distributed.rank() == 0:
        print_table(summaries)
    return summaries


def _continues(run: RunConfig, args: argparse.Namespace) -> bool:
    """Whether ``--auto-resume`` (implied in a process that torchrun restarted, where
    ``TORCHELASTIC_RESTART_COUNT`` > 0) continues the run from ``run.out/checkpoint.pt``: where
    the folder holds one. The trainer refuses a checkpoint of other settings and names them."""
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    return (getattr(args, "auto_resume", False) or restarted) and (Path(run.out) / "checkpoint.pt").is_file()


def print_table(summaries: dict[str, dict]) -> None:
    print(f"\n{'method':<8} {'final test acc':>15} {'best test acc':>14} {'last-5 mean':>12} {'s/epoch':>8}")
    for method, s in summaries.items():
        print(f"{method:<8} {s['final_test_acc']:>15.4f} {s['best_test_acc']:>14.4f} "
              f"{s['last5_mean_test_acc']:>12.4f} {s['mean_epoch_time_s']:>8.2f}")


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Label and torn-line warnings as one ``maxl: warning: ...`` line, without the source
    line that points into maxl; every other warning as Python shows it."""
    if issubclass(category, (GeneratorLabelWarning, TornLineWarning)):
        return f"maxl: warning: {message}\n"
    return _PYTHON_FORMAT(message, category, filename, lineno, line)


_PYTHON_FORMAT = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = _format_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"maxl[rank {os.environ['RANK']}]" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "maxl"
    try:
        demo_out = None
        if args.command == "demo":
            demo_out = args.out
            argv = ["train", *DEMO_ARGS, "--epochs", str(args.epochs), "--seed", str(args.seed), "--out", args.out]
            print("maxl " + " ".join(argv))
            args = parser.parse_args(argv)
        if args.command == "train":
            device = getattr(args, "train.device", None)
            if device is None and getattr(args, "resume", None) is not None:  # the run's device picks the backend
                device = run_configs(args)[0][0].train.device
            with distributed.process_group(device or "auto"):
                run_training(args)
            if demo_out is not None and int(os.environ.get("RANK", "0")) == 0:
                finish_demo(demo_out)  # the maxl run's report.html and what its labels did
        else:
            {**ANALYSIS_COMMANDS, **GRID_COMMANDS}[args.command](args)
    except (ValueError, FileNotFoundError, ImportError) as err:  # bad input or setup
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except Preempted as stop:  # a signal stopped the run after a step; its checkpoint is written
        print(f"{prog}: {stop}", file=sys.stderr)
        return EXIT_PREEMPTED
    except (FloatingPointError, DoubleBackwardError, WriteError) as err:  # the run stopped; last checkpoint intact
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
