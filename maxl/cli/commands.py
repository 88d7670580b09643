"""Command line: ``maxl train``, ``maxl demo``.

Only this module (and the experiment scripts) parse argv; the components take dataclasses.
Under ``torchrun --nproc_per_node N -m maxl train ...`` the processes join one process group
(:mod:`maxl.train.distributed`) and only rank 0 prints and writes the run folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from auxtasks import COLOURISATION_MODES, ROTATION_MODES, WEIGHTINGS
from maxl.train.aux_learner import TASK_NAMES as AUX_TASKS
from maxl.train.aux_learner import build_learner, dataset_normalisation, normalised_images

from maxl.train import distributed
from maxl.baselines.autoencoder import AutoencoderConfig
from maxl.nn.backbones import BACKBONES, build_backbone
from maxl.data.datasets import DATASETS, load_dataset
from maxl.core.hierarchy import Hierarchy
from maxl.baselines.labels import fixed_aux_labels
from maxl.core.losses import LOSSES, classification_loss
from maxl.meta import ENGINES, ORDERS, DoubleBackwardError, MetaConfig
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork
from maxl.train.trainer import (FIXED_LABEL_METHODS, METHODS, SCHEDULES, TrainConfig, Trainer, atomic_write_text,
                      resolve_device, seed_everything)

__all__ = ["main", "build_parser", "run_training", "parse_psi", "resume_args", "run_visualise", "run_compare"]

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

    t = sub.add_parser("train", help="train single-task, human / random / k-means auxiliary-label or MAXL models",
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
    m.add_argument("--no-batchnorm", action="store_true",
                   help="backbones without BatchNorm: then a torchrun run over N processes computes the "
                        "multi-task step of one process with the same global batch")
    m.add_argument("--psi", default=None,
                   help="hierarchy psi: auxiliary classes per primary class, an int or a list like 6,4 "
                        "(default: the human hierarchy if any, else 5 per class)")
    o = t.add_argument_group("optimisation (defaults: the paper's CIFAR-100 settings)")
    o.add_argument("--epochs", type=int, default=200, help="training epochs")
    o.add_argument("--batch-size", type=int, default=100,
                   help="images per batch (under torchrun: the global batch, split over the processes)")
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
    g.add_argument("--no-fused", action="store_true",
                   help="per-step schedule: take the multi-task update and the look-ahead from separate "
                        "forward/backward passes (default: one shared pass, same gradients)")
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
    b = t.add_argument_group("baselines (random, kmeans)")
    b.add_argument("--ae-epochs", type=int, default=10,
                   help="kmeans: epochs of the autoencoder whose latent codes are clustered")
    b.add_argument("--ae-latent", type=int, default=32, help="kmeans: size of the autoencoder's latent code")
    r = t.add_argument_group("run")
    r.add_argument("--seed", type=int, default=0, help="random seed")
    r.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto")
    r.add_argument("--out", default="runs/maxl", help="run folder (with several methods: OUT/METHOD)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    r.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch (default: torch's choice; 1 is fastest on a shared CPU)")
    r.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its checkpoint.pt with the settings of its config.json "
                        "(flags that disagree with them are refused; --epochs may extend the run)")
    r.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels only (torch.use_deterministic_algorithms): bit-identical reruns "
                        "on a GPU too; see the README")
    r.add_argument("--tensorboard", action="store_true",
                   help="also write the metrics as TensorBoard events to OUT/tensorboard (needs tensorboard)")

    demo = sub.add_parser("demo", help="quick start: single vs maxl on the embedded digits data, about a minute",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--epochs", type=int, default=15, help="epochs per method")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--out", default="runs/demo", help="parent folder of the two run folders")
    add_analysis_commands(sub)
    return parser


DEMO_ARGS = ["--dataset", "digits", "--method", "single", "maxl", "--batch-size", "32", "--lr", "0.05",
             "--momentum", "0.9", "--hidden", "64", "--lr-step", "1000"]


# Flags that may differ from a run's config.json on --resume: they change where or how long it
# runs, not what it computes (a longer run repeats the shorter one's epochs exactly; another device
# or thread count changes only the float rounding).
RESUME_MAY_CHANGE = ("resume", "out", "epochs", "device", "threads", "no_progress", "tensorboard", "data_root",
                     "download")


def given_options(argv: list[str]) -> set[str]:
    """The ``maxl train`` options written on the command line ``argv`` (not left at defaults)."""
    parser = build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    for action in train._actions:  # a fresh parser: nothing to restore
        action.default = argparse.SUPPRESS  # options left out then stay out of the namespace
    return set(vars(parser.parse_args(argv))) - {"command"}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _show(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def resume_args(args: argparse.Namespace, given: set[str]) -> argparse.Namespace:
    """The arguments of the run in ``args.resume``, from its ``config.json``.

    Args:
        args: the parsed command line, with ``args.resume`` the run folder.
        given: the options written on the command line (:func:`given_options`); each must
            agree with the run's, except those in :data:`RESUME_MAY_CHANGE`.

    Returns:
        The run's arguments with ``out = resume`` and the allowed changes applied.

    Raises:
        FileNotFoundError: the folder has no ``config.json`` or no ``checkpoint.pt``.
        ValueError: options that disagree with the run (each is named, with both values).
    """
    run = Path(args.resume)
    if not (run / "config.json").is_file():
        inside = sorted(str(c.parent) for c in run.glob("*/config.json"))
        hint = f"; it holds the run folders {', '.join(inside)}: resume one of them" if inside else ""
        raise FileNotFoundError(f"--resume {run}: no config.json in that folder{hint}")
    if not (run / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"--resume {run}: no checkpoint.pt in that folder (the run stopped before the "
                                f"end of its first epoch); start it again without --resume")
    config = json.loads((run / "config.json").read_text())
    if "args" not in config:
        raise ValueError(f"--resume {run}: its config.json has no 'args' record (written by an older maxl), so "
                         "its command line is unknown; start the run again")
    stored = {**config["args"], "method": [config["train"]["method"]]}
    conflicts = [f"{_flag(k)} (run: {_show(stored[k])}, command line: {_show(getattr(args, k))})"
                 for k in sorted(given - set(RESUME_MAY_CHANGE)) if k in stored and getattr(args, k) != stored[k]]
    if "out" in given and Path(args.out).resolve() != run.resolve():
        conflicts.append(f"--out {args.out} (a resumed run writes into its own folder {run})")
    if conflicts:
        raise ValueError(
            f"--resume {run}: the command line disagrees with the run's config.json on {'; '.join(conflicts)}. "
            "Leave these flags out to continue the run as it was, or start a new run in another folder"
        )
    merged = {**vars(args), **stored, **{k: getattr(args, k) for k in given & set(RESUME_MAY_CHANGE)}}
    merged.update(resume=str(run), out=str(run))
    return argparse.Namespace(**merged)


def run_training(args: argparse.Namespace) -> dict[str, dict]:
    """Run every method of ``args.method`` (or continue the run ``args.resume``, whose
    arguments :func:`resume_args` made); returns ``{method: summary}``."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    resume = getattr(args, "resume", None) is not None
    is_main = distributed.rank() == 0  # under torchrun only rank 0 prints and writes files
    if getattr(args, "deterministic", False):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before any cuBLAS call
    data = load_dataset(args.dataset, args.data_root, hierarchy=args.hierarchy, train_subset=args.train_subset,
                        test_subset=args.test_subset, augment=not args.no_augment, seed=args.seed,
                        download=args.download)
    psi = parse_psi(args.psi, data.num_primary, data.psi)
    backbone = args.backbone or DEFAULT_BACKBONE[args.dataset]
    batchnorm = not getattr(args, "no_batchnorm", False)
    if is_main:
        print(f"{data.name}: {len(data.train)} train / {len(data.test)} test images, {data.in_channels}x"
              f"{data.image_size}x{data.image_size}, {data.num_primary} primary classes, psi={psi}, backbone {backbone}")
    summaries = {}
    for method in args.method:
        out = Path(args.out) / method if len(args.method) > 1 and not resume else Path(args.out)
        if method == "human" and (data.aux_train is None or data.psi != psi):
            raise ValueError(f"method 'human' needs a data set with a human hierarchy matching psi={psi}; "
                             f"{data.name} has psi={data.psi}")
        meta = MetaConfig(inner_lr=args.inner_lr or args.lr, entropy_weight=args.entropy_weight,
                          order=args.meta_order, engine=args.meta_engine)
        config = TrainConfig(method=method, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             momentum=args.momentum, weight_decay=args.weight_decay, gen_lr=args.gen_lr,
                             gen_weight_decay=args.gen_weight_decay, lr_step=args.lr_step, lr_gamma=args.lr_gamma,
                             loss=args.loss, focal_gamma=args.focal_gamma, schedule=args.schedule,
                             gen_every=args.gen_every, fused=not args.no_fused, seed=args.seed, device=args.device,
                             progress=not args.no_progress, meta=meta,
                             deterministic=args.deterministic, tensorboard=args.tensorboard)
        aux_labels = label_info = None
        if method in FIXED_LABEL_METHODS:  # made before the networks, so that their initialisation is the same
            ae_config = AutoencoderConfig(epochs=args.ae_epochs, latent_dim=args.ae_latent)
            aux_labels, label_info = fixed_aux_labels(method, data, psi, args.seed, ae_config,
                                                      resolve_device(args.device))
            if is_main:
                print(f"[{method}] auxiliary labels made in {label_info['time_s']:.1f}s")
        seed_everything(args.seed)
        num_aux = 0 if method == "single" else sum(psi)
        net = MultiTaskNetwork(build_backbone(backbone, data.in_channels, batchnorm), data.num_primary, num_aux,
                               args.hidden)
        generator = None
        if method == "maxl":
            generator = LabelGenerator(build_backbone(backbone, data.in_channels, batchnorm), psi, args.hidden)
        if is_main and not resume:
            out.mkdir(parents=True, exist_ok=True)
            for stale in ("metrics.jsonl", "summary.json"):
                (out / stale).unlink(missing_ok=True)
        started = {"command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                   "world_size": distributed.world_size()}
        resolved = {
            "data": {"dataset": args.dataset, "name": data.name, "data_root": args.data_root,
                     "hierarchy": args.hierarchy, "train_subset": args.train_subset,
                     "test_subset": args.test_subset, "augment": not args.no_augment,
                     "num_train": len(data.train), "num_test": len(data.test)},
            "model": {"backbone": backbone, "hidden": args.hidden, "psi": psi, "num_primary": data.num_primary,
                      "batchnorm": batchnorm},
            "train": asdict(config),
            "labels": label_info,
            "env": {"torch": torch.__version__, "python": platform.python_version(), **started},
            # the command line's values, so that --resume can rebuild and check the run
            "args": {k: v for k, v in vars(args).items() if k != "resume"},
        }
        learner = make_aux_learner(args, data, method, net, generator, config, aux_labels)
        if learner is not None:
            resolved["aux"] = {"tasks": list(args.aux), "weighting": args.weighting,
                               "aux_weights": parse_aux_weights(args.aux_weight), "rotation_mode": args.rotation_mode,
                               "colourisation_mode": args.colourisation_mode}
        trainer = Trainer(net, data.train, data.test, config, out, generator=generator,
                          aux_labels=aux_labels, learner=learner, psi=psi)
        if resume:
            trainer.load_checkpoint(out / "checkpoint.pt")
            if is_main:  # keep the original record; note the resume and any longer --epochs
                stored = json.loads((out / "config.json").read_text())
                stored.update(train=resolved["train"], args=resolved["args"])
                stored.setdefault("resumed", []).append({**started, "after_epoch": trainer.epoch})
                atomic_write_text(out / "config.json", json.dumps(stored, indent=2) + "\n")
                print(f"[{method}] resuming {out} after epoch {trainer.epoch} of {config.epochs}")
        else:
            if is_main:
                atomic_write_text(out / "config.json", json.dumps(resolved, indent=2) + "\n")
                print(f"[{method}] training {config.epochs} epochs -> {out}")
        summaries[method] = trainer.fit()
    if is_main:
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


def make_aux_learner(args: argparse.Namespace, data, method: str, net, generator, config: TrainConfig,
                     aux_labels=None):
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
        generator=generator, aux_labels=aux_labels, meta=config.meta,
        aux_weights=parse_aux_weights(args.aux_weight), rotation_mode=args.rotation_mode, colourisation_mode=mode,
        prior_images=normalised_images(data.train) if needs_prior else None,
        hidden=args.hidden)


def print_table(summaries: dict[str, dict]) -> None:
    print(f"\n{'method':<8} {'final test acc':>15} {'best test acc':>14} {'last-5 mean':>12} {'s/epoch':>8}")
    for method, s in summaries.items():
        print(f"{method:<8} {s['final_test_acc']:>15.4f} {s['best_test_acc']:>14.4f} "
              f"{s['last5_mean_test_acc']:>12.4f} {s['mean_epoch_time_s']:>8.2f}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"maxl[rank {os.environ['RANK']}]" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "maxl"
    try:
        if args.command == "train" and args.resume is not None:
            args = resume_args(args, given_options(argv))  # first: the run's --device picks the backend
        with distributed.process_group(getattr(args, "device", "auto")):
            if args.command == "demo":
                argv = ["train", *DEMO_ARGS, "--epochs", str(args.epochs), "--seed", str(args.seed), "--out", args.out]
                print("maxl " + " ".join(argv))
                run_training(parser.parse_args(argv))
            elif args.command == "train":
                run_training(args)
            elif args.command in ANALYSIS_COMMANDS:
                ANALYSIS_COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, ImportError) as err:  # bad input or setup
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except (FloatingPointError, DoubleBackwardError) as err:  # the run stopped; its last checkpoint is intact
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- maxl visualise / compare
def add_analysis_commands(sub) -> None:
    """The subcommands ``visualise`` (alias ``visualize``) and ``compare`` (see :mod:`maxl.analysis.visualise`)."""
    v = sub.add_parser("visualise", aliases=["visualize"], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="figures, agreement with human labels and RUN_DIR/report.html of a trained run")
    v.add_argument("run_dir", help="run folder written by `maxl train`")
    v.add_argument("--against", default=None,
                   help="a second run on the same test set (e.g. OUT/single), drawn beside RUN_DIR")
    v.add_argument("--out", default=None, help="folder for figures/ and report.html (default: RUN_DIR)")
    v.add_argument("--top-k", type=int, default=8, help="test images per auxiliary class in the top-k grids")
    v.add_argument("--embedding", choices=("tsne", "umap"), default="tsne",
                   help="2-D embedding: scikit-learn t-SNE, or UMAP (needs umap-learn)")
    v.add_argument("--max-points", type=int, default=2000, help="test images in the embeddings (random subset)")
    v.add_argument("--embed-classes", type=int, default=2,
                   help="the first N primary classes get their own embedding by auxiliary label")
    v.add_argument("--data-root", default=None, help="where the data set lies, if it moved since training")
    v.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    v.add_argument("--seed", type=int, default=0, help="seed of the subset and the embeddings")
    v.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch and of the embedding (default: the libraries' own); "
                        "1 is much faster on a machine shared with other jobs")
    c = sub.add_parser("compare", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="training curves of several runs on one figure")
    c.add_argument("run_dirs", nargs="+", help="run folders written by `maxl train`")
    c.add_argument("--out", default="compare.png", help="PNG to write")


def run_visualise(args: argparse.Namespace) -> dict:
    from maxl.analysis.visualise import visualise_run  # matplotlib and scikit-learn's manifold: only when needed

    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        result = visualise_run(args.run_dir, against=args.against, out_dir=args.out, top_k=args.top_k,
                               embedding=args.embedding, max_points=args.max_points,
                               embed_classes=args.embed_classes, data_root=args.data_root, device=args.device,
                               seed=args.seed, threads=args.threads)
    finally:
        torch.set_num_threads(threads)
    if result["agreement"] is not None:
        mean = result["agreement"]["mean"]
        print(f"generated vs human auxiliary labels within primary classes (test set): NMI {mean['nmi']:.3f}  "
              f"ARI {mean['ari']:.3f}  purity {mean['purity']:.3f} (chance {mean['chance_purity']:.3f})")
    for path in result["figures"]:
        print(f"wrote {path}")
    print(f"wrote {result['report']}")
    return result


def run_compare(args: argparse.Namespace):
    from maxl.analysis.visualise import compare_runs

    path, rows = compare_runs(args.run_dirs, args.out)
    print(f"{'run':<40} {'epochs':>6} {'final test acc':>15} {'best':>8} {'last-5 mean':>12}")
    for r in rows:
        print(f"{r['run']:<40} {r['epochs']:>6} {r['final_test_acc']:>15.4f} {r['best_test_acc']:>8.4f} "
              f"{r['last5_mean_test_acc']:>12.4f}")
    print(f"wrote {path}")
    return path, rows


ANALYSIS_COMMANDS = {"visualise": run_visualise, "visualize": run_visualise, "compare": run_compare}


if __name__ == "__main__":
    sys.exit(main())
