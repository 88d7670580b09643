"""Multi-task architectures and loss weightings on CIFAR-10 animal / vehicle (issue 14).

Every architecture (:mod:`maxl.nn.architectures`) with the human hierarchy as auxiliary task
under equal weights; hard sharing with every weighting (:mod:`auxtasks.weighting`); and, one
seed each, every architecture with MAXL's generated labels::

    python experiments/architectures.py run --data-root /tmp/data/cifar10-jpeg --out runs/architectures
    python experiments/architectures.py time --out figures/architectures-timing.json
    python experiments/architectures.py report --runs runs/architectures --timing figures/architectures-timing.json \\
        --figures figures

The multi-task literature's weightings (issue 26: torchjd's aggregators and the loss-based methods)
have a second, reduced grid, ``weightings/hard/<name>``: the human hierarchy *and* rotation (one
random rotation per image) as auxiliary tasks, so three tasks, on 1000 training and 1000 test images
for 5 epochs (:data:`MTL_PROTOCOL`; about 25 minutes of one core for 17 weightings × 3 seeds)::

    python experiments/architectures.py run --data-root /tmp/data/cifar10-jpeg --configs weightings
    python experiments/architectures.py time --configs weightings --out figures/architectures-weightings-timing.json

``run`` trains each configuration × seed with ``maxl train`` (in this process) into
``OUT/<config>/seed<k>`` and skips finished runs (``--configs`` / ``--seeds`` pick a subset, so
that two processes can share the grid). ``time`` measures the time of one training step (forward,
backward, SGD step; batch 100, 32×32 RGB) of each configuration in this process, interleaved,
the median over repeats. ``report`` reads only the run folders and the timing file and writes
``architectures.md`` and ``architectures.csv``.

CPU protocol: the generated-labels protocol of ``experiments/harness.py`` (``protocol-cifar10``:
cnn3, linear heads, one-cycle SGD lr 0.1, batch 100, cross-entropy, flip + reflect crop) reduced
to 2000 training images (no validation split), 2000 test images and 10 epochs, to fit about an
hour of one CPU core for the whole grid.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

ARCHS = ("hard", "soft", "cross-stitch", "nddr", "mtan")
WEIGHTINGS = ("equal", "uncertainty", "dwa", "gradnorm", "pcgrad", "gcs", "mgda", "mgda-ub", "dtp")
PROTOCOL = [
    "--dataset",
    "imagefolder",
    "--hierarchy",
    "animal-vehicle",
    "--backbone",
    "cnn3",
    "--hidden",
    "0",
    "--normalisation",
    "0.5",
    "0.25",
    "--padding-mode",
    "reflect",
    "--batch-size",
    "100",
    "--lr",
    "0.1",
    "--momentum",
    "0",
    "--lr-schedule",
    "onecycle",
    "--warmup",
    "0.15",
    "--loss",
    "ce",
    "--train-subset",
    "2000",
    "--test-subset",
    "2000",
    "--epochs",
    "10",
    "--no-progress",
    "--threads",
    "1",
]
#: config name -> (maxl train flags, seeds)
CONFIGS: dict[str, tuple[list[str], tuple[int, ...]]] = {
    **{f"human/{a}/equal": (["--method", "human", "--arch", a], (0, 1, 2)) for a in ARCHS},
    **{f"human/hard/{w}": (["--method", "human", "--weighting", w], (0, 1, 2)) for w in WEIGHTINGS[1:]},
    **{f"maxl/{a}/equal": (["--method", "maxl", "--arch", a], (0,)) for a in ARCHS},
    "single/hard/-": (["--method", "single"], (0, 1, 2)),
}
#: the weightings of issue 26 (and equal weights, the reference), on the reduced grid
MTL_WEIGHTINGS = (
    "equal",
    "upgrad",
    "cagrad",
    "nash-mtl",
    "imtl-g",
    "aligned-mtl",
    "graddrop",
    "gradvac",
    "dualproj",
    "config",
    "fairgrad",
    "rlw",
    "famo",
    "db-mtl",
    "gls",
    "imtl-l",
    "stch",
)
#: the reduced protocol of the weightings grid: 1000 training / 1000 test images, 5 epochs
MTL_PROTOCOL = [
    *PROTOCOL[: PROTOCOL.index("--train-subset")],
    "--train-subset",
    "1000",
    "--test-subset",
    "1000",
    "--epochs",
    "5",
    *PROTOCOL[PROTOCOL.index("--no-progress") :],
]
MTL_FLAGS = ["--method", "human", "--aux", "rotation", "--rotation-mode", "random"]
CONFIGS.update({f"weightings/hard/{w}": ([*MTL_FLAGS, "--weighting", w], (0, 1, 2)) for w in MTL_WEIGHTINGS})


def protocol_of(config: str) -> list[str]:
    return MTL_PROTOCOL if config.startswith("weightings/") else PROTOCOL


def run_folder(root: Path, config: str, seed: int) -> Path:
    return root / config.replace("/", "_") / f"seed{seed}"


def run(args: argparse.Namespace) -> int:
    from maxl.cli.commands import main as maxl_main

    root = Path(args.out)
    for config, (flags, seeds) in CONFIGS.items():
        if args.configs and not any(config.startswith(c) for c in args.configs):
            continue
        for seed in seeds:
            if args.seeds and seed not in args.seeds:
                continue
            folder = run_folder(root, config, seed)
            if (folder / "summary.json").is_file():
                continue
            argv = [
                "train",
                *protocol_of(config),
                "--data-root",
                args.data_root,
                *flags,
                "--seed",
                str(seed),
                "--out",
                str(folder),
            ]
            print("maxl " + " ".join(argv), flush=True)
            if maxl_main(argv) != 0:
                print(f"run failed: {folder}", file=sys.stderr)
                return 1
    return 0


def _learner(method: str, arch: str, weighting: str, aux: tuple[str, ...] = ()):
    import torch

    from maxl.core.losses import classification_loss
    from maxl.nn.architectures import build_network
    from maxl.nn.backbones import build_backbone
    from maxl.train.aux_learner import build_learner

    torch.manual_seed(0)
    net = build_network(arch, lambda: build_backbone("cnn3", 3), 2, 0 if method == "single" else 10, 0)
    labels = torch.randint(0, 10, (100,))
    learner = build_learner(
        net,
        method,
        aux,
        weighting,
        loss_fn=classification_loss("ce"),
        aux_labels=labels,
        in_channels=3,
        image_size=32,
        rotation_mode="random",
    )
    return net, learner


def timing(args: argparse.Namespace) -> int:
    """Median seconds per training step of each single-task / human configuration (MAXL's steps
    are not timed here: their cost depends on the schedule); the first repeat is a warm-up."""
    import torch

    torch.set_num_threads(1)
    x, y, idx = torch.randn(100, 3, 32, 32), torch.randint(0, 2, (100,)), torch.arange(100)
    cases = {
        c: (
            "human" if c.startswith("weightings/") else c.split("/")[0],
            c.split("/")[1],
            "equal" if c.endswith("/-") else c.split("/")[2],
        )
        for c in CONFIGS
        if not c.startswith("maxl") and (not args.configs or any(c.startswith(p) for p in args.configs))
    }
    steps, parameters = {}, {}
    for config, (method, arch, weighting) in cases.items():
        aux = ("rotation",) if config.startswith("weightings/") else ()
        net, learner = _learner(method, arch, weighting, aux)
        opt = torch.optim.SGD(learner.network_parameters(), lr=0.01)

        def step(learner=learner, opt=opt) -> None:
            out = learner(x, y, index=idx)
            opt.zero_grad(set_to_none=True)
            learner.backward(out)
            opt.step()

        steps[config], parameters[config] = timed(step), sum(p.numel() for p in net.parameters())
    times = interleaved_times(steps, args.repeats - 1, warmup=1)
    result = {c: {"step_s": statistics.median(t), "parameters": parameters[c]} for c, t in times.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"repeats": args.repeats, "batch": 100, "threads": 1, "steps": result}, indent=2) + "\n"
    )
    for c, r in result.items():
        print(f"{c:<28} {1000 * r['step_s']:8.1f} ms  {r['parameters']:>9,d} parameters")
    return 0


# ---------------------------------------------------------------------------- timing helpers
# (shared with experiments/architecture_search.py's ``time``)


def timed(step: Callable[[], object]) -> Callable[[], float]:
    """``step`` as a case of :func:`interleaved_times`: calls it and returns its wall-clock seconds."""

    def run() -> float:
        start = time.perf_counter()
        step()
        return time.perf_counter() - start

    return run


def interleaved_times(
    cases: Mapping[str, Callable[[], float]], repeats: int, warmup: int = 0
) -> dict[str, list[float]]:
    """``{name: [seconds of each repeat]}``: ``warmup`` + ``repeats`` rounds, each calling every case
    once in order (interleaved, so that a slow moment of a shared machine hits every case alike);
    each call returns its own seconds (:func:`timed`), those of the ``warmup`` rounds are dropped.

    Raises:
        ValueError: ``repeats`` < 1 or ``warmup`` < 0.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"timing needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(warmup + repeats):
        for name, case in cases.items():
            seconds = case()
            if round_ >= warmup:
                times[name].append(seconds)
    return times


def fake_image_folder(root: Path, train_per_class: int, test_per_class: int, size: int = 32, seed: int = 0) -> Path:
    """An image folder of CIFAR-10's ten classes, ``root/{train,test}/<class>/NNNN.png``, of random
    RGB images ``size`` × ``size`` (``--dataset imagefolder --hierarchy animal-vehicle`` reads it):
    the protocol's shapes without the real data, for timing. Returns ``root``."""
    import numpy as np
    from PIL import Image

    from maxl.data.cifar100 import CIFAR10_NAMES

    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for name in CIFAR10_NAMES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return root


def with_value(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with the value after ``flag`` replaced (a copy).

    Raises:
        ValueError: ``flag`` is not in ``argv``.
    """
    if flag not in argv:
        raise ValueError(f"{flag} is not in the command line {' '.join(argv)}")
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


def build_trainer(argv: list[str], log: Callable[..., None] = lambda *_: None):
    """The :class:`maxl.train.Trainer` of one ``maxl train`` command line (``argv`` without
    ``train``), built as ``maxl train`` builds it (its parser, :func:`maxl.cli.commands.run_configs`,
    :func:`maxl.train.build.build`: data, labels, networks, a sparse-sharing mask search, split B of
    an architecture search), not trained; its run folder (``--out``) gets ``config.json``.

    Raises:
        ValueError: a command line of several runs (several ``--method``), or bad settings.
        SystemExit: flags the parser refuses (exit status 2, the message on stderr).
    """
    from maxl.cli.commands import build_parser, run_configs
    from maxl.train.build import build

    runs, _ = run_configs(build_parser().parse_args(["train", *argv]))
    if len(runs) != 1:
        raise ValueError(f"build_trainer builds one run, the command line gives {len(runs)}")
    return build(runs[0], log=log)


def _mean_std(values):
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return mean, std


def _parameters(config: str) -> int:
    method, arch, weighting = config.split("/")
    method = "human" if method == "weightings" else method
    net, _ = _learner("single" if method == "single" else "human", arch, "equal")
    return sum(p.numel() for p in net.parameters())


def _summaries(root: Path, config: str) -> dict[int, dict]:
    """``{seed: summary.json}`` of the finished runs of ``config``."""
    found = {}
    for seed in CONFIGS[config][1]:
        path = run_folder(root, config, seed) / "summary.json"
        if path.is_file():
            found[seed] = json.loads(path.read_text())
    return found


def _rows(
    root: Path, configs: list[str], steps: dict, base_config: str, paired: bool = False
) -> tuple[list[str], list[list]]:
    """The table rows (markdown) and CSV rows of the finished runs of ``configs``; with ``paired``, a
    column of the final accuracy's difference to ``base_config`` over the seeds both have."""
    base = steps.get(base_config, {}).get("step_s")
    reference = _summaries(root, base_config) if paired else {}
    rows, csv_rows = [], []
    for config in configs:
        runs = []
        for seed in CONFIGS[config][1]:
            folder = run_folder(root, config, seed)
            if (folder / "summary.json").is_file():
                summary = json.loads((folder / "summary.json").read_text())
                runs.append(summary)
                csv_rows.append(
                    [
                        config,
                        seed,
                        f"{summary['final_test_acc']:.4f}",
                        f"{summary['last5_mean_test_acc']:.4f}",
                        f"{summary['mean_epoch_time_s']:.1f}",
                    ]
                )
        if not runs:
            continue
        final = _mean_std([100 * r["final_test_acc"] for r in runs])
        last5 = _mean_std([100 * r["last5_mean_test_acc"] for r in runs])
        step = steps.get(config, {}).get("step_s")
        ratio = f"{step / base:.2f}" if step and base else "—"
        method, arch, weighting = config.split("/")
        method = "human + rotation" if method == "weightings" else method
        diff = ""
        if paired:
            mine = _summaries(root, config)
            both = sorted(set(mine) & set(reference))
            deltas = [100 * (mine[k]["final_test_acc"] - reference[k]["final_test_acc"]) for k in both]
            diff = (f"{_fmt(*_mean_std(deltas))} |" if config != base_config else "— |") if deltas else "— |"
        rows.append(
            f"| {method} | {arch} | {weighting} | {len(runs)} | {_fmt(*final)} | {_fmt(*last5)} | "
            f"{_parameters(config):,} | {ratio} | {statistics.mean(r['mean_epoch_time_s'] for r in runs):.0f} |"
            + (f" {diff}" if paired else "")
        )
    return rows, csv_rows


def _fmt(m: float, s: float) -> str:
    """``mean ± std``, or the mean alone where the std is undefined (one seed)."""
    return f"{m:.2f} ± {s:.2f}" if not math.isnan(s) else f"{m:.2f}"


def _write_csv(path: Path, csv_rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["config", "seed", "final_test_acc", "last5_mean_test_acc", "mean_epoch_time_s"])
    writer.writerows(csv_rows)
    path.write_text(buffer.getvalue())


#: the heading of the weightings grid's section in architectures.md (``report --configs weightings``
#: replaces that section and keeps the rest of the page)
MTL_HEADING = "## The multi-task literature's weightings, human hierarchy + rotation (reduced protocol)"


def report_weightings(args: argparse.Namespace) -> int:
    """The weightings grid's section of ``architectures.md`` and ``architectures-weightings.csv``."""
    root, out = Path(args.runs), Path(args.figures)
    steps = json.loads(Path(args.timing).read_text())["steps"] if args.timing else {}
    configs = [c for c in CONFIGS if c.startswith("weightings/")]
    rows, csv_rows = _rows(root, configs, steps, "weightings/hard/equal", paired=True)
    if not rows:
        print(f"no finished weightings runs under {root}", file=sys.stderr)
        return 1
    from auxtasks.weighting import WEIGHTINGS, TorchJDWeighting

    source = ", ".join(
        w for w in MTL_WEIGHTINGS if isinstance(WEIGHTINGS[w], type) and issubclass(WEIGHTINGS[w], TorchJDWeighting)
    )
    section = [
        MTL_HEADING,
        "",
        "Three tasks: the primary task, the human hierarchy (ψ = [6, 4]) and rotation (one random rotation "
        "per image), hard sharing. Primary test accuracy (%) after the last epoch and the mean of the last 5 "
        "epochs (here: every epoch), mean ± std over seeds 0–2; parameters of the multi-task network "
        "without the rotation head; time per training step relative to equal weighting on the same three "
        "tasks (`experiments/architectures.py time --configs weightings`: batch 100, one thread, median "
        "of interleaved repeats); s / epoch as measured in the runs (2 cores shared with other jobs).",
        "",
        f"From torchjd (`pip install 'maxl[mtl]'`): {source}. Written here: rlw, famo, db-mtl, gls, "
        "imtl-l, stch. Every method at its defaults (`--weighting-option` unset), no tuning.",
        "",
        "| method | architecture | weighting | seeds | final acc | last-5 mean | parameters | time / step "
        "vs equal | s / epoch | final − equal (paired by seed) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Protocol: " + " ".join(MTL_PROTOCOL) + " " + " ".join(MTL_FLAGS) + " --weighting NAME (the protocol "
        "above reduced to 1000 training and 1000 test images and 5 epochs, to fit about half an hour of "
        "one core). With 1000 images the seeds' spread is of the order of the differences between most "
        "weightings: read the table as which methods run and what they cost, not as a ranking.",
    ]
    out.mkdir(parents=True, exist_ok=True)
    page = out / "architectures.md"
    text = page.read_text() if page.is_file() else ""
    kept = text.split(MTL_HEADING)[0].rstrip("\n")
    page.write_text((kept + "\n\n" if kept else "") + "\n".join(section) + "\n")
    _write_csv(out / "architectures-weightings.csv", csv_rows)
    print("\n".join(section))
    return 0


def report(args: argparse.Namespace) -> int:
    if args.configs == ["weightings"]:
        return report_weightings(args)
    root, out = Path(args.runs), Path(args.figures)
    steps = json.loads(Path(args.timing).read_text())["steps"] if args.timing else {}
    rows, csv_rows = _rows(root, [c for c in CONFIGS if not c.startswith("weightings/")], steps, "human/hard/equal")
    if not rows:
        print(f"no finished runs under {root}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Multi-task architectures and loss weightings, CIFAR-10 animal / vehicle (CPU protocol)",
        "",
        "Primary test accuracy (%) after the last epoch and the mean of the last 5 epochs, mean ± std over "
        "seeds (seed k draws the same training subset and initial seed for every row); parameters of the "
        "multi-task network (label-generation network not counted); time per training step relative to hard "
        "sharing with the human hierarchy and equal weights (`experiments/architectures.py time`: batch 100, "
        "one thread, median of interleaved repeats); s / epoch as measured in the runs (2 shared cores, "
        "with the test evaluation).",
        "",
        "| method | architecture | weighting | seeds | final acc | last-5 mean | parameters | time / step "
        "vs hard | s / epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Protocol: " + " ".join(PROTOCOL) + " (the generated-labels protocol reduced to 2000 training "
        "images, no validation split, 10 epochs). ψ = [6, 4]. MAXL rows: one seed, the alternate schedule, "
        "a one-step look-ahead (with soft sharing that look-ahead carries no signal to the generator, see "
        "maxl/nn/architectures/soft.py).",
    ]
    page = out / "architectures.md"
    old = page.read_text() if page.is_file() else ""
    kept = MTL_HEADING + old.split(MTL_HEADING)[1] if MTL_HEADING in old else ""  # the weightings section stays
    page.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""))
    _write_csv(out / "architectures.csv", csv_rows)
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data-root", required=True)
    r.add_argument("--out", default="runs/architectures")
    r.add_argument("--configs", nargs="*", help="config name prefixes, e.g. human/hard maxl")
    r.add_argument("--seeds", nargs="*", type=int)
    t = sub.add_parser("time")
    t.add_argument("--out", default="figures/architectures-timing.json")
    t.add_argument("--repeats", type=int, default=15)
    t.add_argument("--configs", nargs="*", help="config name prefixes, e.g. weightings")
    p = sub.add_parser("report")
    p.add_argument("--runs", default="runs/architectures")
    p.add_argument("--timing", default=None)
    p.add_argument("--figures", default="figures")
    p.add_argument("--configs", nargs="*", help="'weightings': the weightings grid's section only")
    args = parser.parse_args(argv)
    return {"run": run, "time": timing, "report": report}[args.command](args)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
