"""The table of experiments/task_weights_cifar10.sh: final validation and test accuracy per config
(mean ± std over seeds), paired differences with single-task and with equal weighting (mean ± std and
the standard error std / √n), the last epoch's weights, seconds per epoch. Reads only the run folders.

    python experiments/task_weights_report.py runs/task-weights-cifar10 figures/task-weights-cifar10.md
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

CONFIGS = ("single", "equal", "auto-lambda")


def _runs(root: Path) -> dict[str, dict[int, dict]]:
    found: dict[str, dict[int, dict]] = {}
    for config in CONFIGS:
        for seed_dir in sorted((root / config).glob("seed*")):
            if not (seed_dir / "summary.json").exists():
                continue
            metrics = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
            found.setdefault(config, {})[int(seed_dir.name[4:])] = metrics[-1] | {
                "s_per_epoch": statistics.mean(r["epoch_time_s"] for r in metrics)
            }
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


def report(root: Path) -> str:
    runs = _runs(root)
    lines = [
        "# Meta-learned task weights on CIFAR-10 (CPU calibration)",
        "",
        "Made by `bash experiments/task_weights_cifar10.sh DATA_ROOT RUNS` and "
        "`python experiments/task_weights_report.py RUNS figures/task-weights-cifar10.md`. 10-class primary "
        "task, 2000 stratified training images (400 of them carved off as the validation set), 2000 test "
        "images, cnn3, 6 epochs, SGD lr 0.05 momentum 0.9, batch 32, rotation (one random rotation per "
        "image) + colourisation; Auto-λ from weight 1, Adam lr 0.01, 200 of the 1600 training images "
        "held out for its outer loss. Accuracies in %, after the last epoch; mean ± std over seeds; "
        "paired differences per seed (same training subset and initial seed) with their standard error. "
        "Epoch times on a 2-core machine shared with other jobs (load average about 8).",
        "",
        "| config | seeds | val acc | test acc | test Δ vs single | test Δ vs equal | weights, last epoch "
        "| s / epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config in CONFIGS:
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
            f"{_paired(runs, config, 'single', 'test_acc') if config != 'single' else '—'} | "
            f"{_paired(runs, config, 'equal', 'test_acc') if config == 'auto-lambda' else '—'} | {shown} | "
            f"{statistics.mean(r['s_per_epoch'] for r in seeds.values()):.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.write_text(report(root))
    print(out.read_text())
