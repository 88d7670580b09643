"""The table of experiments/task_weights_cifar10.sh (``--protocol 6-epoch``, the default) or
experiments/task_weights_calibrate.sh (``--protocol 30-epoch``, CIFAR-10; ``--protocol mnist-long``, MNIST
even / odd with the digits and rotation; ``--protocol animal-vehicle``, CIFAR-10 animal / vehicle with
the ten classes and rotation): validation and test accuracy per config (after the last epoch,
or for mnist-long and animal-vehicle the mean of the last 5 epochs; mean ± std over seeds), paired differences with
single-task (validation and test) and with equal weighting (mean ± std and the standard error std / √n),
the last epoch's weights, seconds per epoch. Every configuration folder found is a row (known ones
first). Reads only the run folders.

    python experiments/task_weights_report.py runs/task-weights-cifar10 figures/task-weights-cifar10.md
    python experiments/task_weights_report.py runs/task-weights-30ep figures/task-weights-cifar10-30ep.md \
        --protocol 30-epoch
    python experiments/task_weights_report.py runs/task-weights-mnist-long figures/task-weights-mnist-long.md \
        --protocol mnist-long
    python experiments/task_weights_report.py runs/task-weights-av figures/task-weights-animal-vehicle.md \
        --protocol animal-vehicle
    python experiments/task_weights_report.py runs/task-weights-mnist-long figures/task-weights-mnist-long-sgd.md \
        --protocol mnist-long-sgd
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

CONFIGS = ("single", "equal", "human", "rotation", "colourisation", "auto-lambda", "ol-aux", "auxilearn")
# protocol: (title, description, epochs averaged for the accuracies: 1 = the last epoch's)
PROTOCOLS = {
    "6-epoch": (
        "Meta-learned task weights on CIFAR-10 (CPU calibration)",
        "Made by `bash experiments/task_weights_cifar10.sh DATA_ROOT RUNS` and "
        "`python experiments/task_weights_report.py RUNS figures/task-weights-cifar10.md`. 10-class primary "
        "task, 2000 stratified training images (400 of them carved off as the validation set), 2000 test "
        "images, cnn3, 6 epochs, SGD lr 0.05 momentum 0.9, batch 32, rotation (one random rotation per "
        "image) + colourisation; Auto-λ from weight 1, Adam lr 0.01, 200 of the 1600 training images "
        "held out for its outer loss. Accuracies in %, after the last epoch; mean ± std over seeds; "
        "paired differences per seed (same training subset and initial seed) with their standard error. "
        "Epoch times on a 2-core machine shared with other jobs (load average about 8).",
        1,
    ),
    "30-epoch": (
        "Auxiliary tasks and their weights on CIFAR-10, 30 epochs (CPU calibration)",
        "Made by `bash experiments/task_weights_calibrate.sh DATA_ROOT RUNS` (CONFIGS and SEEDS as listed "
        "below) and `python experiments/task_weights_report.py RUNS figures/task-weights-cifar10-30ep.md "
        "--protocol 30-epoch`. 10-class primary task, 2000 stratified training images (400 of them carved "
        "off as the validation set), 2000 test images, cnn3, 30 epochs, one-cycle SGD (lr 0.05, momentum "
        "0.9, weight decay 5e-4), batch 32, one thread; rotation (one random rotation per image) and "
        "colourisation; `rotation-W` = rotation alone at weight W; Auto-λ from weight 1, Adam lr 0.01, 200 "
        "of the 1600 training images held out for its outer loss (fused step). Accuracies in %, after the "
        "last epoch; mean ± std over seeds; paired differences per seed (same training subset and initial "
        "seed) with their standard error. Epoch times on a 2-core machine shared with other jobs.",
        1,
    ),
    "mnist-long": (
        "Auxiliary tasks and their weights on MNIST-long (the digits and rotation for even / odd)",
        "Made by `PROTOCOL=mnist-long bash experiments/task_weights_calibrate.sh DATA_ROOT RUNS` (CONFIGS and "
        "SEEDS as listed below) and `python experiments/task_weights_report.py RUNS "
        "figures/task-weights-mnist-long.md --protocol mnist-long`. MNIST, even / odd primary task, 1800 "
        "stratified training images (1000 of them carved off as the validation set), 2000 test images, "
        "cnn3, 60 epochs, one-cycle SGD (lr 0.1, no momentum), batch 100, cross-entropy, one thread (the "
        "generated-labels protocol `protocol-mnist-long`); auxiliary tasks: the digits (the human "
        "hierarchy ψ = [5, 5], task `human`) and rotation (one random rotation per image); `human-W` = the "
        "digits alone at weight W, `both-WH-WR` = both at weights WH and WR; meta-learned weightings as "
        "listed in the script. Accuracies in %, mean of the last 5 epochs; mean ± std over seeds; paired "
        "differences per seed (same training subset and initial seed) with their standard error. Epoch "
        "times on a 2-core machine shared with other jobs. `NAME-lrX`: that weighting with weight learning rate X; "
        "`-s0`: `--weight-split 0`. `ol-aux` (lr 3e-4) ran on the unfused OL-AUX step, `ol-aux-lr*` on the fused "
        "one (the same update, 1.0× equal weighting's cost instead of 3×). Weight curves (seed 0): `python -m maxl "
        "compare RUNS/auto-lambda-s0/seed0 RUNS/auto-lambda-lr0.001-s0/seed0 RUNS/ol-aux-lr0.01/seed0 "
        "RUNS/ol-aux-lr0.03/seed0 RUNS/auxilearn/seed0 RUNS/maxl-auto-lambda-s0/seed0 --out "
        "figures/task-weights-mnist-long-curves.png` (writes `task-weights-mnist-long-curves-weights.png`).",
        5,
    ),
    "30-epoch-resnet20": (
        "Auxiliary tasks on CIFAR-10, 30 epochs, ResNet-20 (CPU calibration, the residual backbone)",
        "Made by `BACKBONE=resnet20 bash experiments/task_weights_calibrate.sh DATA_ROOT RUNS` (CONFIGS and "
        "SEEDS as listed below) and `python experiments/task_weights_report.py RUNS "
        "figures/task-weights-cifar10-30ep-resnet20.md --protocol 30-epoch-resnet20`. The protocol of "
        "`task-weights-cifar10-30ep.md` with ResNet-20 in place of cnn3: 10-class primary task, 2000 "
        "stratified training images (400 of them carved off as the validation set), 2000 test images, 30 "
        "epochs, one-cycle SGD (lr 0.05, momentum 0.9, weight decay 5e-4), batch 32, one thread; rotation "
        "(one random rotation per image) and colourisation. Accuracies in %, after the last epoch; mean ± "
        "std over seeds; paired differences per seed (same training subset and initial seed) with their "
        "standard error. Epoch times on a 2-core machine shared with other jobs.",
        1,
    ),
    "mnist-long-sgd": (
        "OL-AUX with the paper's plain weight step, and the other weightings, on MNIST-long (the digits and rotation "
        "for even / odd)",
        'Made by `PROTOCOL=mnist-long SEEDS="0 1 2" CONFIGS="single equal human-3 human-10 human-30 human-100 '
        'ol-aux-sgd-lr0.3 ol-aux-sgd-lr1 ol-aux-sgd-lr3 ol-aux-sgd-lr10" bash '
        'experiments/task_weights_calibrate.sh DATA_ROOT RUNS`, then `SEEDS="3 4"` for the chosen ones '
        '(`CONFIGS="single equal human-3 human-30 ol-aux-sgd-lr3 ol-aux-sgd-lr3-init10"`; '
        '`SEEDS="0 1 2" CONFIGS="ol-aux-sgd-lr3-init3 ol-aux-sgd-lr3-init10 uncertainty dwa gradnorm pcgrad gcs '
        'mgda dtp"`, then `SEEDS="3 4"` for the existing weightings too; and '
        '`CONFIGS="auto-lambda-s0 ol-aux-lr0.01 auxilearn-nonlinear" '
        "SEEDS=0` for the seed-0 rows: the first two record the meta-gradient per epoch; AuxiLearn's nonlinear "
        "variant holds 200 images out) and `python "
        "experiments/task_weights_report.py RUNS figures/task-weights-mnist-long-sgd.md --protocol "
        "mnist-long-sgd`. The protocol of `task-weights-mnist-long.md`: MNIST even / odd, 1800 stratified "
        "training images (1000 of them carved off as the validation set), 2000 test images, cnn3, 60 epochs, "
        "one-cycle SGD (lr 0.1, no momentum), batch 100, one thread; the digits (task `human`) and rotation. "
        "`human-W`: the digits alone at weight W (10, 30 and 100 extend the grid of `task-weights-mnist-long.md`, "
        "whose best point was 3, once the learnt weights went above it). `ol-aux-sgd-lrX`: fused OL-AUX "
        "(horizon 5) whose weights take the paper's plain gradient step w ← w − X · Σ (`--weighting-option "
        "optimizer=sgd --weight-lr X`) instead of Adam's; X = 0.3 was first set from the size of seed 0's "
        "signal in `ol-aux-lr0.01` (about −0.027 per step for the digits over epochs 10–40), then X was "
        "chosen on validation among 0.3, 1, 3 and 10. `ol-aux-sgd-lr3-initY`: the same at lr 3, its auxiliary weights "
        "starting at Y instead of 1 (`--weighting-option init=Y`), Y chosen on validation among 1, 3 and 10 "
        "(seeds 0–2). The existing weightings (uncertainty, DWA, GradNorm, PCGrad, GCS, MGDA, DTP) at their "
        "defaults. Curves (seed 0): `python -m maxl compare RUNS/ol-aux-sgd-lr3-init10/seed0 "
        "RUNS/ol-aux-sgd-lr3/seed0 RUNS/human-30/seed0 RUNS/equal/seed0 --out "
        "figures/task-weights-mnist-long-sgd-curves.png` (writes `task-weights-mnist-long-sgd-curves-weights.png`). "
        "Accuracies in %, mean of the last 5 epochs; mean ± "
        "std over seeds; paired differences per seed with their standard error. Epoch times on a 2-core "
        "machine shared with other jobs.",
        5,
    ),
    "animal-vehicle": (
        "Auxiliary tasks and their weights on CIFAR-10 animal / vehicle (the ten classes and rotation)",
        "Made by `PROTOCOL=animal-vehicle bash experiments/task_weights_calibrate.sh DATA_ROOT RUNS` (CONFIGS "
        "and SEEDS as listed below) and `python experiments/task_weights_report.py RUNS "
        "figures/task-weights-animal-vehicle.md --protocol animal-vehicle`. CIFAR-10 JPEGs, animal / vehicle "
        "primary task, 3000 stratified training images (1000 of them carved off as the validation set), 2000 "
        "test images, cnn3, 30 epochs, one-cycle SGD (lr 0.1, no momentum), batch 100, cross-entropy, one "
        "thread (the architectures table's optimiser); auxiliary tasks: the ten classes (the human hierarchy "
        "ψ = [6, 4], task `human`) and rotation (one random rotation per image); `human-W` = the ten classes "
        "alone at weight W, `rotation-W` rotation alone, `both-WH-WR` both at weights WH and WR: the grid "
        "{0.1, 0.3, 1, 3} of issue 23, extended to the ten classes at 10, 30 and 100 once the meta-learned "
        "weights went above 3. `auto-lambda`: weights from 1, Adam lr 0.01, 200 of the 2000 training images "
        "held out for its outer loss, fused step; `ol-aux-lrX`: fused OL-AUX (horizon 5) whose weights take "
        "Adam steps of lr X; `ol-aux-sgd-lrX`: the paper's plain step w ← w − X · Σ "
        "(`--weighting-option optimizer=sgd`), X on validation from 0.1 to 30; `ol-aux-sgd-lr10-initY`: the "
        "same at lr 10, its auxiliary weights starting at Y instead of 1 (`--weighting-option init=Y`), Y "
        "chosen on validation among 1, 3 and 10 (seeds 0–2); OL-AUX trains on all 2000 "
        "images. `maxl`: the primary task and MAXL's generated labels (ψ = [6, 4]) at equal weights, no other "
        "auxiliary task; `maxl-auto-lambda`: the same with Auto-λ on the generated-labels task (as `auto-lambda`). "
        "The other weightings at their defaults. Accuracies in %, mean of the last 5 epochs; mean ± "
        "std over seeds; paired differences per seed (same training subset and initial seed) with their "
        "standard error. Epoch times on a 2-core machine shared with other jobs (the cost per iteration is "
        "`figures/task-weights-cost.md`'s). Weight curves (seed 0): `python -m maxl compare "
        "RUNS/ol-aux-sgd-lr10/seed0 RUNS/ol-aux-lr0.01/seed0 RUNS/auto-lambda/seed0 --out "
        "figures/task-weights-animal-vehicle-curves.png` (writes `task-weights-animal-vehicle-curves-weights.png`).",
        5,
    ),
}


def _configs(root: Path) -> list[str]:
    found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return [c for c in CONFIGS if c in found] + [c for c in found if c not in CONFIGS]


def _runs(root: Path, last: int = 1) -> dict[str, dict[int, dict]]:
    """Per config and seed: the last epoch's record, its accuracies averaged over the ``last`` epochs."""
    found: dict[str, dict[int, dict]] = {}
    for config in _configs(root):
        for seed_dir in sorted((root / config).glob("seed*")):
            if not (seed_dir / "summary.json").exists():
                continue
            metrics = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
            found.setdefault(config, {})[int(seed_dir.name[4:])] = (
                metrics[-1]
                | {key: statistics.mean(r[key] for r in metrics[-last:]) for key in ("val_acc", "test_acc")}
                | {"s_per_epoch": statistics.mean(r["epoch_time_s"] for r in metrics)}
                | {"run_s": sum(r["epoch_time_s"] for r in metrics)}
            )
    return found


def _stat(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "—"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _paired(runs, config: str, against: str, key: str) -> str:
    seeds = sorted(set(runs.get(config, {})) & set(runs.get(against, {})))
    diffs = [100 * (runs[config][s][key] - runs[against][s][key]) for s in seeds]
    if len(diffs) < 2:
        return "—"
    se = statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs):.2f} (SE {se:.2f})"


def report(root: Path, protocol: str = "6-epoch") -> str:
    title, text, last = PROTOCOLS[protocol]
    runs = _runs(root, last)
    lines = [
        f"# {title}",
        "",
        text,
        "",
        "| config | seeds | val acc | test acc | val Δ vs single | test Δ vs single | test Δ vs equal "
        "| weights, last epoch | s / epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config in runs:
        seeds = runs.get(config, {})
        if not seeds:
            continue
        val = [100 * r["val_acc"] for r in seeds.values()]
        test = [100 * r["test_acc"] for r in seeds.values()]
        weights = {
            k[13:]: statistics.mean(r[k] for r in seeds.values())
            for k in next(iter(seeds.values()))
            if k.startswith("train_weight_")
        }
        shown = ", ".join(f"{k} {v:.2f}" for k, v in weights.items()) or "—"
        lines.append(
            f"| {config} | {len(seeds)} | {_stat(val)} | {_stat(test)} | "
            f"{_paired(runs, config, 'single', 'val_acc') if config != 'single' else '—'} | "
            f"{_paired(runs, config, 'single', 'test_acc') if config != 'single' else '—'} | "
            f"{_paired(runs, config, 'equal', 'test_acc') if config not in ('single', 'equal') else '—'} | {shown} | "
            f"{statistics.mean(r['s_per_epoch'] for r in seeds.values()):.0f} |"
        )
    return "\n".join(lines + [""] + _goal(runs)) + "\n"


def _fixed_weights(weight: str) -> re.Pattern:
    """Config names of fixed weights: the auxiliary tasks at weight 1, or named with their weights,
    each weight matching the pattern ``weight``."""
    return re.compile(
        rf"^(equal|human|rotation|colourisation)$|^(human|rotation|colourisation)-{weight}$|^both-{weight}-{weight}$"
    )


# fixed weights (the validation grid): the auxiliary tasks at weight 1, or named with their weights
FIXED = _fixed_weights(r"[0-9.]+")
# the validation grid of issue 23: every auxiliary weight in {0.1, 0.3, 1, 3} (a protocol's grid may go
# further, e.g. the ten classes at 10 and 30 on animal / vehicle, once the learnt weights went there)
ISSUE_GRID = _fixed_weights(r"(0\.1|0\.3|1|3)")
# meta-learned weights: a weighting, its plain step (-sgd), its weight learning rate (-lrX), the
# auxiliary weights' start (-initX) and its outer-loss images (-s0)
META = re.compile(
    r"^(auto-lambda|ol-aux|auxilearn|auxilearn-nonlinear|maxl-auto-lambda)(-sgd)?(-lr[0-9.e-]+)?(-init[0-9.]+)?(-s0)?$"
)


def _goal(runs) -> list[str]:
    """Issue 23's goal: the best meta-learned weighting (chosen on validation) at least as good as the
    best fixed weights (chosen on validation; within the paired noise: Δ > −2 SE) and more than 2 SE
    better than equal weighting on test (SE = std / √n of the paired differences). Where the best fixed
    weights lie outside the issue's grid {0.1, 0.3, 1, 3} (a protocol that searched further), a row
    compares with the best inside it too."""

    def candidates(pattern: re.Pattern) -> tuple[list[str], list[int]]:
        """The configs of a kind that have the seeds most of them have (at most 3 required), and the
        seeds they all share: the choice compares validation means over the same seeds."""
        found = [c for c in runs if pattern.match(c) and runs[c]]
        if not found:
            return [], []
        need = min(3, max(len(runs[c]) for c in found))
        found = [c for c in found if len(runs[c]) >= need]
        return found, sorted(set.intersection(*(set(runs[c]) for c in found)))

    def best(found: list[str], seeds: list[int]) -> str | None:
        """The highest mean validation accuracy over ``seeds``; a tie (to 1e-6 pp) goes to the config
        listed first, so a config beats its own ``-lrX`` / ``-initX`` variants, which sort after it."""
        return max(
            found, key=lambda c: round(100 * statistics.mean(runs[c][s]["val_acc"] for s in seeds), 6), default=None
        )

    fixed_found, fixed_seeds = candidates(FIXED)
    meta_found, meta_seeds = candidates(META)
    if not fixed_seeds or not meta_seeds or "equal" not in runs:
        return []
    fixed, meta = best(fixed_found, fixed_seeds), best(meta_found, meta_seeds)
    assert fixed is not None and meta is not None  # candidates found

    def paired(against: str, sign: int) -> tuple[str, str]:
        """meta − against on test, paired by seed; the goal: Δ > 2 SE (sign 1) or Δ > −2 SE (sign −1)."""
        seeds = sorted(set(runs[meta]) & set(runs[against]))
        diffs = [100 * (runs[meta][s]["test_acc"] - runs[against][s]["test_acc"]) for s in seeds]
        if len(diffs) < 2:
            return "—", "—"
        mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
        se = sd / len(diffs) ** 0.5
        return f"{mean:+.2f} ± {sd:.2f} (SE {se:.2f})", "yes" if mean > sign * 2 * se else "no"

    def mean_of(config: str, key: str) -> float:
        return statistics.mean(r[key] for r in runs[config].values())

    grid = [c for c in runs if FIXED.match(c) and runs[c]]
    grid_s = sum(mean_of(c, "run_s") for c in grid)
    vs_fixed, vs_equal = paired(fixed, -1), paired("equal", 1)
    issue_found, issue_seeds = candidates(ISSUE_GRID)
    in_grid = best(issue_found, issue_seeds) if issue_seeds else None
    grid_row = []
    if in_grid is not None and in_grid != fixed:
        vs_grid = paired(in_grid, -1)
        grid_row = [
            f"| best meta-learned − best of {{0.1, 0.3, 1, 3}} (`{in_grid}`) | {vs_grid[0]} | > −2 SE | {vs_grid[1]} |"
        ]
    return [
        "## Against the goal",
        "",
        f"The best fixed weights on validation: `{fixed}`; the best meta-learned weighting on validation: "
        f"`{meta}` (mean validation accuracy over the seeds {', '.join(map(str, fixed_seeds))} for the fixed "
        f"weights and {', '.join(map(str, meta_seeds))} for the meta-learned ones, which every candidate of its "
        "kind has; a config with fewer seeds is not a candidate; the test set only below). Test accuracy, "
        "paired by seed over the seeds both have:",
        "",
        "| comparison | test Δ (pp) | goal | met |",
        "| --- | --- | --- | --- |",
        f"| best meta-learned − best fixed | {vs_fixed[0]} | > −2 SE | {vs_fixed[1]} |",
        *grid_row,
        f"| best meta-learned − equal | {vs_equal[0]} | > 2 SE | {vs_equal[1]} |",
        "",
        f"Cost: `{meta}` took {mean_of(meta, 's_per_epoch') / mean_of('equal', 's_per_epoch'):.2f}× equal "
        f"weighting's seconds per epoch (the runs' own times, on a shared machine: rough); the grid searched "
        f"here ({len(grid)} fixed-weight configs, one run each) took {grid_s / mean_of(meta, 'run_s'):.1f}× one "
        "meta-learned run.",
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="6-epoch")
    args = parser.parse_args()
    args.out.write_text(report(args.runs, args.protocol))
    print(args.out.read_text())
