"""Command line: ``maxl train``, ``maxl demo``.

Only this module (and the experiment scripts) parse argv; the components take dataclasses.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from auxtasks import COLOURISATION_MODES, ROTATION_MODES, WEIGHTINGS
from auxtasks.for_maxl import TASK_NAMES as AUX_TASKS
from auxtasks.for_maxl import build_learner, dataset_normalisation, normalised_images

from .backbones import BACKBONES, build_backbone
from .data import DATASETS, load_dataset
from .hierarchy import Hierarchy
from .losses import LOSSES, classification_loss
from .meta import ENGINES, ORDERS, MetaConfig
from .networks import LabelGenerator, MultiTaskNetwork
from .trainer import METHODS, SCHEDULES, TrainConfig, Trainer, atomic_write_text, seed_everything

__all__ = ["main", "build_parser", "run_training", "parse_psi"]

# Per data set: the backbone that fits its images and the default auxiliary classes per primary class.
DEFAULT_BACKBONE = {"digits": "tiny-cnn", "mnist": "small-cnn", "cifar10": "vgg16", "cifar100": "vgg16",
                    "imagefolder": "vgg16"}
DEFAULT_AUX_PER_CLASS = 5


def parse_psi(text: str | None, num_primary: int, human_psi: list[int] | None) -> list[int]:
    """ψ from the command line: ``"5"`` (5 for every primary class), ``"6,4"`` (one per
    class) or None (the data set's human hierarchy if it has one, else 5 per class).

    Raises:
        ValueError: unparsable text, or a ψ whose length is not the number of primary classes.
    """
    if text is None:
        return list(human_psi) if human_psi is not None else [DEFAULT_AUX_PER_CLASS] * num_primary
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ValueError(f"--psi {text!r}: expected an int or comma-separated ints such as 6,4") from None
    if len(values) == 1:
        values = values * num_primary
    psi = list(Hierarchy(values).psi)
    if len(psi) != num_primary:
        raise ValueError(
            f"--psi {text!r} has {len(psi)} entries but the data set has {num_primary} primary "
            f"classes: give one entry per primary class, or a single int"
        )
    return psi


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maxl", description="Meta Auxiliary Learning (Liu, Davison, Johns, NeurIPS 2019).")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train single-task, human-hierarchy or MAXL models",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = t.add_argument_group("data")
    d.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="data set; 'digits' is scikit-learn's embedded 8x8 digits (no download)")
    d.add_argument("--data-root", default=None,
                   help="folder holding the data set files (MNIST/raw, cifar-10-batches-py, ImageFolder root)")
    d.add_argument("--hierarchy", default=None,
                   help="class hierarchy: cifar100 'P-A' with levels 3/10/20/100 (default 20-100); "
                        "cifar10/imagefolder 'animal-vehicle'")
    d.add_argument("--download", action="store_true", help="let torchvision download MNIST/CIFAR (needs network)")
    d.add_argument("--train-subset", type=int, default=None, help="class-stratified subset of training images")
    d.add_argument("--test-subset", type=int, default=None, help="class-stratified subset of test images")
    d.add_argument("--no-augment", action="store_true", help="turn off the random crop + flip of RGB images")
    m = t.add_argument_group("model")
    m.add_argument("--method", nargs="+", choices=METHODS, default=["maxl"],
                   help="one or more methods; several are run one after another into OUT/METHOD")
    m.add_argument("--backbone", choices=sorted(BACKBONES), default=None,
                   help="backbone of both networks (default: tiny-cnn for digits, small-cnn for mnist, vgg16 else)")
    m.add_argument("--hidden", type=int, default=512, help="hidden width of the heads")
    m.add_argument("--psi", default=None,
                   help="hierarchy psi: auxiliary classes per primary class, an int or a list like 6,4 "
                        "(default: the human hierarchy if any, else 5 per class)")
    o = t.add_argument_group("optimisation (defaults: the paper's CIFAR-100 settings)")
    o.add_argument("--epochs", type=int, default=200, help="training epochs")
    o.add_argument("--batch-size", type=int, default=100, help="images per batch")
    o.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the multi-task network")
    o.add_argument("--momentum", type=float, default=0.0, help="SGD momentum of the multi-task network")
    o.add_argument("--weight-decay", type=float, default=0.0, help="weight decay of the multi-task network")
    o.add_argument("--gen-lr", type=float, default=1e-3, help="SGD learning rate of the label-generation network")
    o.add_argument("--gen-weight-decay", type=float, default=5e-4, help="weight decay of the generator")
    o.add_argument("--lr-step", type=int, default=50, help="halve (x --lr-gamma) both learning rates every N epochs")
    o.add_argument("--lr-gamma", type=float, default=0.5, help="learning-rate decay factor")
    o.add_argument("--loss", choices=LOSSES, default="focal", help="loss of both heads (focal: gamma 2, the reference)")
    o.add_argument("--focal-gamma", type=float, default=2.0, help="focusing parameter of the focal loss")
    g = t.add_argument_group("meta step (maxl)")
    g.add_argument("--entropy-weight", type=float, default=0.2, help="lambda of the negative-entropy term")
    g.add_argument("--inner-lr", type=float, default=None, help="look-ahead step alpha (default: --lr)")
    g.add_argument("--meta-order", choices=ORDERS, default="second",
                   help="exact second-order meta-gradient or its finite-difference first-order approximation")
    g.add_argument("--meta-engine", choices=ENGINES, default="func", help="engine of the second-order look-ahead")
    g.add_argument("--schedule", choices=SCHEDULES, default="alternate",
                   help="alternate: a multi-task pass then a generator pass per epoch (reference); "
                        "per-step: generator update every --gen-every steps")
    g.add_argument("--gen-every", type=int, default=1, help="generator update every k steps (per-step schedule)")
    a = t.add_argument_group("auxiliary tasks (auxtasks) on the shared backbone")
    a.add_argument("--aux", action="append", choices=AUX_TASKS, default=[],
                   help="add an auxiliary task (repeat for several): rotation (Gidaris et al. 2018), "
                        "colourisation (Zhang et al. 2016, RGB data only)")
    a.add_argument("--weighting", choices=sorted(WEIGHTINGS), default="equal",
                   help="loss weighting of the primary and auxiliary tasks")
    a.add_argument("--aux-weight", action="append", default=[], metavar="TASK=W",
                   help="fixed weight of a task's loss, e.g. rotation=0.5 (the method's own task is named after "
                        "the method: maxl, human; the primary task 'primary'); unnamed tasks keep 1")
    a.add_argument("--rotation-mode", choices=ROTATION_MODES, default="all",
                   help="all four rotations of every image (the paper) or one random rotation per image")
    a.add_argument("--colourisation-mode", choices=COLOURISATION_MODES, default="regression",
                   help="ab regression, or the paper's classification over ab bins with class rebalancing")
    r = t.add_argument_group("run")
    r.add_argument("--seed", type=int, default=0, help="random seed")
    r.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto")
    r.add_argument("--out", default="runs/maxl", help="run folder (with several methods: OUT/METHOD)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")

    demo = sub.add_parser("demo", help="quick start: single vs maxl on the embedded digits data, about a minute",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--epochs", type=int, default=15, help="epochs per method")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--out", default="runs/demo", help="parent folder of the two run folders")
    return parser


DEMO_ARGS = ["--dataset", "digits", "--method", "single", "maxl", "--batch-size", "32", "--lr", "0.05",
             "--momentum", "0.9", "--hidden", "64", "--lr-step", "1000"]


def run_training(args: argparse.Namespace) -> dict[str, dict]:
    """Run every method of ``args.method``; returns ``{method: summary}``."""
    data = load_dataset(args.dataset, args.data_root, hierarchy=args.hierarchy, train_subset=args.train_subset,
                        test_subset=args.test_subset, augment=not args.no_augment, seed=args.seed,
                        download=args.download)
    psi = parse_psi(args.psi, data.num_primary, data.psi)
    backbone = args.backbone or DEFAULT_BACKBONE[args.dataset]
    print(f"{data.name}: {len(data.train)} train / {len(data.test)} test images, {data.in_channels}x"
          f"{data.image_size}x{data.image_size}, {data.num_primary} primary classes, psi={psi}, backbone {backbone}")
    summaries = {}
    for method in args.method:
        out = Path(args.out) / method if len(args.method) > 1 else Path(args.out)
        if method in ("random", "kmeans"):
            raise ValueError(f"method {method!r} is not available from the command line yet")
        if method == "human" and (data.aux_train is None or data.psi != psi):
            raise ValueError(f"method 'human' needs a data set with a human hierarchy matching psi={psi}; "
                             f"{data.name} has psi={data.psi}")
        meta = MetaConfig(inner_lr=args.inner_lr or args.lr, entropy_weight=args.entropy_weight,
                          order=args.meta_order, engine=args.meta_engine)
        config = TrainConfig(method=method, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             momentum=args.momentum, weight_decay=args.weight_decay, gen_lr=args.gen_lr,
                             gen_weight_decay=args.gen_weight_decay, lr_step=args.lr_step, lr_gamma=args.lr_gamma,
                             loss=args.loss, focal_gamma=args.focal_gamma, schedule=args.schedule,
                             gen_every=args.gen_every, seed=args.seed, device=args.device,
                             progress=not args.no_progress, meta=meta)
        seed_everything(args.seed)
        num_aux = 0 if method == "single" else sum(psi)
        net = MultiTaskNetwork(build_backbone(backbone, data.in_channels), data.num_primary, num_aux, args.hidden)
        generator = None
        if method == "maxl":
            generator = LabelGenerator(build_backbone(backbone, data.in_channels), psi, args.hidden)
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.jsonl", "summary.json"):
            (out / stale).unlink(missing_ok=True)
        resolved = {
            "data": {"dataset": args.dataset, "name": data.name, "data_root": args.data_root,
                     "hierarchy": args.hierarchy, "train_subset": args.train_subset,
                     "test_subset": args.test_subset, "augment": not args.no_augment,
                     "num_train": len(data.train), "num_test": len(data.test)},
            "model": {"backbone": backbone, "hidden": args.hidden, "psi": psi, "num_primary": data.num_primary},
            "train": asdict(config),
            "env": {"torch": torch.__version__, "python": platform.python_version(),
                    "command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S")},
        }
        learner = make_aux_learner(args, data, method, net, generator, config)
        if learner is not None:
            resolved["aux"] = {"tasks": list(args.aux), "weighting": args.weighting,
                               "aux_weights": parse_aux_weights(args.aux_weight), "rotation_mode": args.rotation_mode,
                               "colourisation_mode": args.colourisation_mode}
        atomic_write_text(out / "config.json", json.dumps(resolved, indent=2) + "\n")
        trainer = Trainer(net, data.train, data.test, config, out, generator=generator,
                          aux_labels=data.aux_train if method == "human" else None, learner=learner)
        print(f"[{method}] training {config.epochs} epochs -> {out}")
        summaries[method] = trainer.fit()
    print_table(summaries)
    return summaries


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


def make_aux_learner(args: argparse.Namespace, data, method: str, net, generator, config: TrainConfig):
    """The auxtasks learner of a run with ``--aux``, ``--weighting`` or ``--aux-weight``; None without."""
    if not (args.aux or args.weighting != "equal" or args.aux_weight):
        return None  # equal weights of the method's own losses: the trainer's plain path
    if args.aux_weight and args.weighting != "equal":
        raise ValueError(f"--aux-weight sets fixed weights and cannot be combined with --weighting {args.weighting}")
    mode = args.colourisation_mode
    needs_prior = "colourisation" in args.aux and mode == "classification"
    return build_learner(
        net, method, args.aux, args.weighting, loss_fn=classification_loss(args.loss, args.focal_gamma),
        in_channels=data.in_channels, image_size=data.image_size, normalisation=dataset_normalisation(data.test),
        generator=generator, aux_labels=data.aux_train if method == "human" else None, meta=config.meta,
        aux_weights=parse_aux_weights(args.aux_weight), rotation_mode=args.rotation_mode, colourisation_mode=mode,
        prior_images=normalised_images(data.train) if needs_prior else None,
        hidden=args.hidden)


def print_table(summaries: dict[str, dict]) -> None:
    print(f"\n{'method':<8} {'final test acc':>15} {'best test acc':>14} {'last-5 mean':>12} {'s/epoch':>8}")
    for method, s in summaries.items():
        print(f"{method:<8} {s['final_test_acc']:>15.4f} {s['best_test_acc']:>14.4f} "
              f"{s['last5_mean_test_acc']:>12.4f} {s['mean_epoch_time_s']:>8.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            argv = ["train", *DEMO_ARGS, "--epochs", str(args.epochs), "--seed", str(args.seed), "--out", args.out]
            print("maxl " + " ".join(argv))
            run_training(parser.parse_args(argv))
        elif args.command == "train":
            run_training(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"maxl: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
