"""Tables and figures of a grid, computed only from the files its runs wrote.

:func:`collect_runs` reads ``OUT/<method>/seed<k>/{config.json, metrics.jsonl, summary.json}``
of a grid made by :mod:`maxl.train.grid` (``maxl grid``); :func:`aggregate` gives per method the mean and
standard deviation over seeds of the final, best and last-5-mean primary test accuracy (the
paper reports the mean of the last 5 epochs) and of the wall time per run; :func:`write_tables`
writes them as Markdown and CSV, and :func:`plot_curves` draws test accuracy against epoch
(mean over seeds with a ± one standard deviation band).

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933, Sec. 4 (mean test accuracy of the last 5 epochs).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maxl.analysis.run import read_metrics
from maxl.train import METHODS, atomic_write_text
from maxl.train.migrate import migrate

__all__ = [
    "Run",
    "collect_runs",
    "aggregate",
    "describe_setting",
    "markdown_table",
    "csv_table",
    "write_tables",
    "plot_curves",
]


@dataclass
class Run:
    """One finished run: its method, seed, resolved config, per-epoch metrics and summary."""

    method: str
    seed: int
    folder: Path
    config: dict
    metrics: list[dict]
    summary: dict

    @property
    def wall_time_s(self) -> float:
        """Training time plus the time spent making the auxiliary labels (autoencoder + k-means)."""
        labels = self.config.get("labels") or {}
        return float(self.summary["wall_time_s"]) + float(labels.get("time_s", 0.0))


def collect_runs(out: str | os.PathLike) -> list[Run]:
    """The finished runs under a grid folder (those with ``summary.json``), by method then seed.

    Raises:
        FileNotFoundError: ``out`` holds no finished run.
        ValueError: a corrupt metrics.jsonl (a torn last line is skipped with a
            :class:`~maxl.analysis.run.TornLineWarning`).
    """
    out = Path(out)
    runs = []
    for summary_file in sorted(out.glob("*/seed*/summary.json")):
        folder = summary_file.parent
        config = migrate(json.loads((folder / "config.json").read_text()), announce=False)  # old runs too
        metrics = read_metrics(folder)
        runs.append(
            Run(
                method=config["train"]["method"],
                seed=int(config["train"]["seed"]),
                folder=folder,
                config=config,
                metrics=metrics,
                summary=json.loads(summary_file.read_text()),
            )
        )
    if not runs:
        raise FileNotFoundError(f"no finished run (*/seed*/summary.json) under {out}")
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(runs, key=lambda r: (order.get(r.method, len(order)), r.method, r.seed))


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def aggregate(runs: list[Run]) -> list[dict]:
    """Per method (in :data:`maxl.train.trainer.METHODS` order): seeds, and mean / std over seeds of
    the final, best and last-5-mean test accuracy and of the wall time per run (seconds).

    Paired differences (the same seed draws the same data subsets and initial weights for every
    method): with ``maxl`` among the methods, ``maxl_minus_last5_mean`` / ``_std`` are the mean
    and std over the seeds both ran of ``last5(maxl, s) - last5(method, s)``; with ``single``,
    ``minus_single_last5_mean`` / ``_std`` those of ``last5(method, s) - last5(single, s)``;
    ``minus_single_final_mean`` / ``_std`` the same for the final test accuracy.
    NaN for the reference method itself or without common seeds.
    """
    last5 = {(r.method, r.seed): r.summary["last5_mean_test_acc"] for r in runs}
    final = {(r.method, r.seed): r.summary["final_test_acc"] for r in runs}
    rows = []
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == method]
        row = {"method": method, "n_seeds": len(mine), "seeds": " ".join(str(r.seed) for r in mine)}
        for key, values in (
            ("final", [r.summary["final_test_acc"] for r in mine]),
            ("best", [r.summary["best_test_acc"] for r in mine]),
            ("last5", [r.summary["last5_mean_test_acc"] for r in mine]),
            ("time_s", [r.wall_time_s for r in mine]),
        ):
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(values)
        for reference, key, sign in (("single", "minus_single", 1), ("maxl", "maxl_minus", -1)):
            if any(r.method == reference for r in runs):
                diffs = [
                    sign * (last5[(method, r.seed)] - last5[(reference, r.seed)])
                    for r in mine
                    if method != reference and (reference, r.seed) in last5
                ]
                row[f"{key}_last5_mean"], row[f"{key}_last5_std"] = _mean_std(diffs) if diffs else (math.nan,) * 2
        if any(r.method == "single" for r in runs):
            diffs = [
                final[(method, r.seed)] - final[("single", r.seed)]
                for r in mine
                if method != "single" and ("single", r.seed) in final
            ]
            row["minus_single_final_mean"], row["minus_single_final_std"] = (
                _mean_std(diffs) if diffs else (math.nan,) * 2
            )
        rows.append(row)
    return rows


def describe_setting(runs: list[Run]) -> str:
    """One paragraph on the setting shared by the runs, read from their ``config.json``."""
    c = runs[0].config
    data, model, train = c["data"], c["model"], c["train"]
    meta, objective, gen = train.get("meta", {}), c.get("objective", {}), c.get("generator", {})
    schedule = (
        f"one-cycle learning rate ({100 * train.get('warmup', 0.15):.0f} % warm-up, per step)"
        if train.get("lr_schedule") == "onecycle"
        else f"learning rates x{train['lr_gamma']} every {train['lr_step']} epochs"
    )
    subset = (
        f"{data['num_train']} training images (class-stratified subset drawn with each seed)"
        if data.get("train_subset")
        else f"all {data['num_train']} training images"
    )
    test = (
        f"{data['num_test']} test images (stratified subset)"
        if data.get("test_subset")
        else f"all {data['num_test']} test images"
    )
    return (
        f"{data['name']}, psi = {model['psi']}, backbone {model['backbone']} (heads of width {model['hidden']}), "
        f"{subset}, {test}, {train['epochs']} epochs, batch {train['batch_size']}, SGD lr {train['lr']} "
        f"momentum {train['momentum']}, weight decay {train['weight_decay']}, {schedule}, {train['loss']} loss; "
        f"MAXL: generator lr {gen.get('lr', '?')}, {meta.get('order', '?')}-order meta-gradient, "
        f"{gen.get('schedule', '?')} schedule, entropy weight {objective.get('entropy_weight', '?')}."
    )


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown_table(runs: list[Run], title: str, note: str = "") -> str:
    """The results as a Markdown section: title, setting, table, how to read it."""
    rows = aggregate(runs)
    lines = [f"### {title}", "", describe_setting(runs)]
    if note:
        lines += ["", note]
    paired = [
        (key, title)
        for key, title in (("minus_single", "method − single"), ("maxl_minus", "maxl − method"))
        if f"{key}_last5_mean" in rows[0]
    ]
    header = "| method | seeds | final test acc (%) | best test acc (%) | last-5 mean test acc (%) |"
    header += "".join(f" {title}, last-5 (pp, paired) |" for _, title in paired)
    with_final = "minus_single_final_mean" in rows[0]
    header += " method − single, final (pp, paired) |" if with_final else ""
    lines += ["", header + " time / run (s) |", "| --- " * header.count("|") + "|"]
    for r in rows:
        line = (
            f"| {r['method']} | {r['seeds']} | {_pct(r['final_mean'], r['final_std'])} | "
            f"{_pct(r['best_mean'], r['best_std'])} | {_pct(r['last5_mean'], r['last5_std'])} |"
        )
        for key, _ in paired:
            d_mean, d_std = r[f"{key}_last5_mean"], r[f"{key}_last5_std"]
            line += " — |" if math.isnan(d_mean) else f" {100 * d_mean:+.2f} ± {100 * d_std:.2f} |"
        if with_final:
            d_mean, d_std = r["minus_single_final_mean"], r["minus_single_final_std"]
            line += " — |" if math.isnan(d_mean) else f" {100 * d_mean:+.2f} ± {100 * d_std:.2f} |"
        lines.append(line + f" {r['time_s_mean']:.0f} ± {r['time_s_std']:.0f} |")
    lines += [
        "",
        "Primary-task test accuracy, mean ± sample standard deviation over seeds; *final*: last epoch, "
        "*best*: best epoch, *last-5 mean*: mean of the last 5 epochs (the paper's measure)."
        + (
            " *method − single*, *maxl − method*: per-seed differences of the last-5 means (same seed: "
            "same data subsets and initial weights), mean ± std over seeds, in percentage points."
            if paired
            else ""
        )
        + " Time: wall time of one run, training plus making its auxiliary labels (k-means: the "
        "autoencoder too).",
    ]
    return "\n".join(lines) + "\n"


def csv_table(runs: list[Run]) -> str:
    """The aggregated results as CSV (accuracies as fractions, times in seconds)."""
    rows = aggregate(runs)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_tables(runs: list[Run], prefix: str | os.PathLike, title: str, note: str = "") -> tuple[Path, Path]:
    """Write ``<prefix>.md`` and ``<prefix>.csv`` atomically; returns their paths."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    md, cs = prefix.with_name(prefix.name + ".md"), prefix.with_name(prefix.name + ".csv")
    atomic_write_text(md, markdown_table(runs, title, note))
    atomic_write_text(cs, csv_table(runs))
    return md, cs


def accuracy_curves(runs: list[Run]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per method: ``(epochs [E], mean [E], std [E])`` of the test accuracy over seeds.

    Raises:
        ValueError: the seeds of a method ran different numbers of epochs.
    """
    curves = {}
    for method in dict.fromkeys(r.method for r in runs):
        accs = [[m["test_acc"] for m in r.metrics] for r in runs if r.method == method]
        if len({len(a) for a in accs}) != 1:
            raise ValueError(f"{method}: the seeds ran different numbers of epochs {[len(a) for a in accs]}")
        a = np.asarray(accs, dtype=np.float64)  # [seeds, E]
        std = a.std(axis=0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
        curves[method] = (np.arange(1, a.shape[1] + 1), a.mean(axis=0), std)
    return curves


def plot_curves(runs: list[Run], path: str | os.PathLike, title: str) -> Path:
    """Test accuracy (%) against epoch per method: mean over seeds and a ± 1 std band. PNG or PDF.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = {m: f"C{i}" for i, m in enumerate(METHODS)}  # a method keeps its colour across figures
    curves = accuracy_curves(runs)
    others = [m for m in curves if m not in colours]  # e.g. variants of one method: the next colours
    colours.update({m: f"C{(len(METHODS) + k) % 10}" for k, m in enumerate(others)})
    for method, (epochs, mean, std) in curves.items():
        n = sum(r.method == method for r in runs)
        colour = colours[method]
        ax.plot(epochs, 100 * mean, label=f"{method} (n={n})", color=colour, lw=1.6)
        ax.fill_between(epochs, 100 * (mean - std), 100 * (mean + std), color=colour, alpha=0.18, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("primary test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path
