"""Auxiliary tasks on CIFAR-10 at CPU scale: does rotation / colourisation help the primary task?

Two comparisons, each over seeds 0, 1, 2 (the seed also draws the stratified training subset):

* ``cifar10``: the 10-class primary task alone, + rotation, + colourisation, + both (equal
  weights), and + colourisation / + both with uncertainty weighting;
* ``animal-vehicle``: the 2-class primary task (ψ = [6, 4]) alone, with MAXL, with MAXL + rotation.

    python experiments/aux_cifar10.py run --data-root /tmp/data/cifar10-jpeg --out runs/aux-cifar10
    python experiments/aux_cifar10.py report --runs runs/aux-cifar10 --figures figures

``run`` trains every configuration with ``maxl train`` (in this process, one after another) into
``OUT/<comparison>/<config>/seed<k>`` and skips runs whose ``summary.json`` exists, so an
interrupted grid resumes. ``report`` reads only the run folders (``config.json``,
``metrics.jsonl``, ``summary.json``) and writes ``aux_cifar10.md`` (table), ``aux_cifar10.csv``
(one row per run) and ``aux_cifar10.png`` (test accuracy per epoch, mean ± std over seeds).

CPU scale: small-cnn, 2000 stratified training images, 2000 test images, 3 epochs, SGD lr 0.05
with momentum 0.9. Rotation uses one random rotation per image (``--rotation-mode random``) so
that each self-supervised task costs one extra backbone pass over the batch, like
colourisation; MAXL updates its generator every 4th step (``--schedule per-step
--gen-every 4``), the look-ahead including the rotation task when it is on.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from pathlib import Path

SEEDS = (0, 1, 2)
COMMON = [
    "--dataset",
    "imagefolder",
    "--backbone",
    "small-cnn",
    "--train-subset",
    "2000",
    "--test-subset",
    "2000",
    "--epochs",
    "3",
    "--lr",
    "0.05",
    "--momentum",
    "0.9",
    "--rotation-mode",
    "random",
    "--no-progress",
]
MAXL = ["--method", "maxl", "--schedule", "per-step", "--gen-every", "4"]
COMPARISONS = {
    "cifar10": {
        "title": "CIFAR-10, 10-class primary task",
        "args": [],
        "configs": {
            "single": ["--method", "single"],
            "+rotation": ["--method", "single", "--aux", "rotation"],
            "+colourisation": ["--method", "single", "--aux", "colourisation"],
            "+both": ["--method", "single", "--aux", "rotation", "--aux", "colourisation"],
            # the colourisation regression loss is ~100x smaller than the cross-entropy: let
            # uncertainty weighting (Kendall et al. 2018) set its weight instead of equal weights
            "+colourisation-uncertainty": [
                "--method",
                "single",
                "--aux",
                "colourisation",
                "--weighting",
                "uncertainty",
            ],
            "+both-uncertainty": [
                "--method",
                "single",
                "--aux",
                "rotation",
                "--aux",
                "colourisation",
                "--weighting",
                "uncertainty",
            ],
        },
    },
    "animal-vehicle": {
        "title": "CIFAR-10 animal / vehicle primary task, psi = [6, 4]",
        "args": ["--hierarchy", "animal-vehicle"],
        "configs": {
            "single": ["--method", "single"],
            "maxl": MAXL,
            "maxl+rotation": [*MAXL, "--aux", "rotation"],
        },
    },
}


def run_folder(root: Path, comparison: str, config: str, seed: int) -> Path:
    return root / comparison / config / f"seed{seed}"


def run(args: argparse.Namespace) -> int:
    from maxl.cli.commands import main as maxl_main  # only the run step needs torch

    root = Path(args.out)
    for comparison, spec in COMPARISONS.items():
        if args.only and comparison not in args.only:
            continue
        for seed in SEEDS:
            for config, extra in spec["configs"].items():
                folder = run_folder(root, comparison, config, seed)
                if (folder / "summary.json").is_file():
                    print(f"skip {folder} (done)")
                    continue
                argv = [
                    "train",
                    *COMMON,
                    "--data-root",
                    args.data_root,
                    *spec["args"],
                    *extra,
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


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def load_runs(root: Path) -> list[dict]:
    """One dict per finished run: comparison, config, seed, per-epoch test accuracy, summary.

    Raises:
        ValueError: a corrupt metrics.jsonl (a torn last line is skipped with a warning).
    """
    from maxl.analysis.run import read_metrics  # torch: imported only when needed, like the run step

    rows = []
    for comparison, spec in COMPARISONS.items():
        for config in spec["configs"]:
            for seed in SEEDS:
                folder = run_folder(root, comparison, config, seed)
                if not (folder / "summary.json").is_file():
                    continue
                summary = json.loads((folder / "summary.json").read_text())
                metrics = read_metrics(folder)
                config_json = json.loads((folder / "config.json").read_text())
                weights = {
                    k.removeprefix("train_weight_"): v for k, v in metrics[-1].items() if k.startswith("train_weight_")
                }  # last epoch's mean loss weights
                rows.append(
                    {
                        "comparison": comparison,
                        "config": config,
                        "seed": seed,
                        "weights": weights,
                        "test_acc": [m["test_acc"] for m in metrics],
                        "summary": summary,
                        "num_train": config_json["data"]["num_train"],
                        "num_test": config_json["data"]["num_test"],
                    }
                )
    return rows


def report(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = load_runs(Path(args.runs))
    if not rows:
        print(f"no finished runs under {args.runs}", file=sys.stderr)
        return 1
    out = Path(args.figures)
    out.mkdir(parents=True, exist_ok=True)

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "comparison",
            "config",
            "seed",
            "final_test_acc",
            "best_test_acc",
            "epochs",
            "wall_time_s",
            "mean_epoch_time_s",
            "num_train",
            "num_test",
        ]
    )
    for r in rows:
        s = r["summary"]
        writer.writerow(
            [
                r["comparison"],
                r["config"],
                r["seed"],
                f"{s['final_test_acc']:.4f}",
                f"{s['best_test_acc']:.4f}",
                s["epochs"],
                f"{s['wall_time_s']:.1f}",
                f"{s['mean_epoch_time_s']:.1f}",
                r["num_train"],
                r["num_test"],
            ]
        )
    _write(out / "aux_cifar10.csv", buffer.getvalue())

    lines = [
        "# Auxiliary tasks on CIFAR-10 (CPU scale)",
        "",
        "Final test accuracy after the last epoch, mean ± std over seeds; Δ is the difference to "
        "`single` of the same seed (same training subset and initial seed), mean ± std. "
        "Epoch times were measured on a 2-core machine shared with other jobs.",
        "",
    ]
    for comparison, spec in COMPARISONS.items():
        group = [r for r in rows if r["comparison"] == comparison]
        if not group:
            continue
        lines += [
            f"## {spec['title']}",
            "",
            "| config | seeds | final test acc | Δ vs single | best test acc | loss weights, last epoch | s / epoch |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        base = {r["seed"]: r["summary"]["final_test_acc"] for r in group if r["config"] == "single"}
        for config in spec["configs"]:
            runs = [r for r in group if r["config"] == config]
            if not runs:
                continue
            final = _mean_std([r["summary"]["final_test_acc"] for r in runs])
            best = _mean_std([r["summary"]["best_test_acc"] for r in runs])
            time = _mean_std([r["summary"]["mean_epoch_time_s"] for r in runs])
            paired = [r["summary"]["final_test_acc"] - base[r["seed"]] for r in runs if r["seed"] in base]
            delta = (
                "—"
                if config == "single" or not paired
                else "{:+.2f} ± {:.2f}".format(*(100 * v for v in _mean_std(paired)))
            )
            names = list(runs[0]["weights"])
            weights = ", ".join(f"{n} {_mean_std([r['weights'][n] for r in runs])[0]:.2g}" for n in names) or "—"
            lines.append(
                f"| {config} | {len(runs)} | {100 * final[0]:.2f} ± {100 * final[1]:.2f} % | {delta} | "
                f"{100 * best[0]:.2f} ± {100 * best[1]:.2f} % | {weights} | {time[0]:.0f} |"
            )
        first = group[0]
        lines += ["", f"{first['num_train']} training / {first['num_test']} test images per run.", ""]
    _write(out / "aux_cifar10.md", "\n".join(lines))

    comparisons = [c for c in COMPARISONS if any(r["comparison"] == c for r in rows)]
    fig, axes = plt.subplots(1, len(comparisons), figsize=(6 * len(comparisons), 4.2), squeeze=False)
    for ax, comparison in zip(axes[0], comparisons):
        for config in COMPARISONS[comparison]["configs"]:
            curves = [r["test_acc"] for r in rows if r["comparison"] == comparison and r["config"] == config]
            if not curves:
                continue
            epochs = min(len(c) for c in curves)
            stats = [_mean_std([100 * c[e] for c in curves]) for e in range(epochs)]
            x = list(range(1, epochs + 1))
            mean = [m for m, _ in stats]
            ax.plot(x, mean, marker="o", label=f"{config} (n={len(curves)})")
            ax.fill_between(x, [m - s for m, s in stats], [m + s for m, s in stats], alpha=0.2)
        ax.set_title(COMPARISONS[comparison]["title"], fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("primary test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = out / "aux_cifar10.tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out / "aux_cifar10.png")
    print(f"wrote {out / 'aux_cifar10.md'}, {out / 'aux_cifar10.csv'}, {out / 'aux_cifar10.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train every configuration (skips finished runs)")
    r.add_argument("--data-root", required=True, help="the CIFAR-10 ImageFolder root (train/, test/)")
    r.add_argument("--out", default="runs/aux-cifar10", help="parent folder of the run folders")
    r.add_argument("--only", nargs="+", choices=sorted(COMPARISONS), help="run only these comparisons")
    p = sub.add_parser("report", help="table, CSV and figure from the run folders")
    p.add_argument("--runs", default="runs/aux-cifar10", help="parent folder of the run folders")
    p.add_argument("--figures", default="figures", help="where the table, CSV and figure go")
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
