"""Issue 13: do MAXL's generated labels carry information and help? Ablation, dynamics, final table.

Every run is an ordinary ``maxl train`` run of a generated-labels protocol grid
(``maxl/grids/protocol-*.toml``, e.g. ``protocol-cifar10`` / ``protocol-mnist``: a validation
split carved from the training subset, the test set untouched until the final table), trained by
:func:`maxl.train.grid.run_grid` (as ``maxl grid GRID --variants ...``).

* ``ablation``: MAXL variants (:data:`VARIANTS`, the grids' named overlays, from
  ``maxl/grids/_generated-labels.toml``) and the ``single`` / ``human`` references, on the given
  seeds; ``report-ablation``
  writes the table of *validation* accuracy (final and last-5 mean, paired differences to
  single and to the paper's MAXL), the labels at the end of training (mean max-probability,
  share of auxiliary classes used, NMI with the human fine labels) and the meta-gradient's parts.
* ``dynamics``: per-epoch label statistics and meta-gradient norms of chosen runs (a figure).
* ``final``: the protocol grid (single, human, random, k-means, paper MAXL) plus the chosen
  variant, 5 seeds, test accuracy (:mod:`maxl.analysis.results` tables).

::

    python -m experiments.generated_labels ablation --grid protocol-cifar10 --data-root /tmp/data/cifar10-jpeg \\
        --out runs/gl-cifar10 --seeds 0 1 --threads 1
    python -m experiments.generated_labels report-ablation --runs runs/gl-cifar10 --prefix figures/gl-cifar10-ablation
    python -m experiments.generated_labels dynamics --runs runs/gl-cifar10 --variants paper adam --out figures/x.png
    python -m experiments.grid --config protocol-cifar10 --data-root /tmp/data/cifar10-jpeg --out runs/p-c10 --threads 1
    python -m experiments.generated_labels final --variant ps-adam-mi --data-root /tmp/data/cifar10-jpeg \\
        --out runs/gl-final
    python -m experiments.generated_labels report-final --grid-runs runs/p-c10 --runs runs/gl-final \
        --variant ps-adam-mi --prefix figures/protocol-cifar10-results
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from maxl.analysis.run import read_metrics
from maxl.cli.grid import overlay_flags, train_flags_overlay
from maxl.train.grid import grid_names, load_grid, run_grid

#: the protocol grids (every one holds the variants of maxl/grids/_generated-labels.toml)
GRIDS = [g for g in grid_names() if g.startswith("protocol-")]
#: variant -> its overlay on top of the protocol (``train.method``: the method it runs)
VARIANTS: dict[str, dict] = load_grid("protocol-cifar10").variants


def flags(variant: str) -> str:
    """The variant's settings as ``maxl train`` flags (how the tables name them)."""
    return overlay_flags(VARIANTS[variant])


def ablation(args: argparse.Namespace) -> None:
    run_grid(
        load_grid(args.grid),
        args.out,
        variants=args.variants or list(VARIANTS),
        data_root=args.data_root,
        seeds=args.seeds,
        device=args.device,
        threads=args.threads,
        overlays=[train_flags_overlay(args.extra)] if args.extra else [],
    )


def _runs(folder: Path) -> dict[int, dict]:
    """seed -> {config, metrics, summary} of the finished runs below a variant's folder.

    Raises:
        ValueError: a corrupt metrics.jsonl (a torn last line is skipped with a warning).
    """
    out = {}
    for summary in sorted(folder.glob("*/seed*/summary.json")):
        run = summary.parent
        metrics = read_metrics(run)
        config = json.loads((run / "config.json").read_text())
        out[int(config["train"]["seed"])] = {"metrics": metrics, "summary": json.loads(summary.read_text())}
    return out


def _epoch_mean(metrics: list[dict], key: str, last: int | None = None) -> float | None:
    """Mean of ``key`` over the epochs that recorded it, or over the ``last`` of them (None if none did)."""
    values = [m[key] for m in metrics if key in m][-last if last else None :]
    return float(np.mean(values)) if values else None


def _ms(values) -> str:
    a = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if not len(a):
        return "–"
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if len(a) > 1 else f"{a.mean():.3f}"


def _pct(values) -> str:
    a = np.asarray(values, dtype=float) * 100
    return f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if len(a) > 1 else f"{a.mean():.2f}"


def ablation_rows(root: Path, names: list[str]) -> list[dict]:
    runs = {n: _runs(root / n) for n in names if (root / n).is_dir()}
    rows = []
    for name, seeds in runs.items():
        if not seeds:
            continue
        last = [s["metrics"][-1] for s in seeds.values()]
        val_final = [s["summary"]["final_val_acc"] for s in seeds.values()]
        val_last5 = [s["summary"]["last5_mean_val_acc"] for s in seeds.values()]
        row = {
            "variant": name,
            "seeds": " ".join(map(str, seeds)),
            "val_final": _pct(val_final),
            "val_last5": _pct(val_last5),
        }
        for ref in ("single", "paper"):
            common = [k for k in seeds if k in runs.get(ref, {})]
            diffs = [
                seeds[k]["summary"]["last5_mean_val_acc"] - runs[ref][k]["summary"]["last5_mean_val_acc"]
                for k in common
            ]
            row[f"minus_{ref}"] = _pct(diffs) if diffs and name != ref else "–"
        # the validation loss resolves smaller differences than the accuracy of a small split
        pairs = [
            (
                _epoch_mean(seeds[k]["metrics"], "val_loss", last=5),
                _epoch_mean(runs["single"][k]["metrics"], "val_loss", last=5),
            )
            for k in seeds
            if k in runs.get("single", {})
        ]
        diffs = [a - b for a, b in pairs if a is not None and b is not None]
        row["val_loss_minus_single"] = _ms(diffs) if diffs and name != "single" else "–"
        row["max_prob"] = _ms([r.get("label_max_prob") for r in last])
        row["used"] = _ms([r.get("label_used_fraction") for r in last])
        row["nmi"] = _ms([r.get("label_nmi_human") for r in last])
        row["weight"] = _ms([r.get("meta_image_weight_mean") for r in last])
        first = [s["metrics"][0] for s in seeds.values()]
        row["nmi_epoch1"] = _ms([r.get("label_nmi_human") for r in first])
        row["lookahead_norm"] = _ms([_epoch_mean(s["metrics"], "meta_lookahead_grad_norm") for s in seeds.values()])
        row["entropy_norm"] = _ms([_epoch_mean(s["metrics"], "meta_entropy_grad_norm") for s in seeds.values()])
        row["s_per_epoch"] = _ms([s["summary"]["mean_epoch_time_s"] for s in seeds.values()])
        rows.append(row)
    return rows


COLUMNS = [
    ("variant", "variant"),
    ("seeds", "seeds"),
    ("val_final", "val acc final %"),
    ("val_last5", "val acc last-5 %"),
    ("minus_single", "− single (last-5, paired) %"),
    ("minus_paper", "− paper MAXL (paired) %"),
    ("val_loss_minus_single", "val loss − single (last-5, paired)"),
    ("max_prob", "label max-prob"),
    ("used", "classes used"),
    ("nmi", "NMI with fine labels"),
    ("nmi_epoch1", "NMI at epoch 1"),
    ("weight", "aux-loss weight (WAMAL)"),
    ("lookahead_norm", "‖∇ look-ahead‖"),
    ("entropy_norm", "‖∇ entropy‖"),
    ("s_per_epoch", "s / epoch"),
]


def report_ablation(args: argparse.Namespace) -> None:
    root = Path(args.runs)
    rows = ablation_rows(root, args.variants or list(VARIANTS))
    lines = [f"# {args.title}", "", "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[k]) for k, _ in COLUMNS) + " |" for r in rows]
    notes = {r["variant"]: flags(r["variant"]) or "(protocol defaults)" for r in rows}
    lines += [
        "",
        "Validation split only (the test set is not read). Label statistics, the WAMAL auxiliary-loss "
        "weight and gradient norms are those of the last epoch, gradient norms the mean over the epochs (mean "
        "± std over seeds); NMI within primary classes, of the generated argmax with the human fine label, on "
        "the training images. s / epoch: wall time on a shared 2-core machine (other jobs ran beside most "
        "runs), a rough guide only; the benchmark in figures/ measures cost.",
        "",
        "Variants (flags on top of the protocol):",
        "",
    ]
    lines += [f"- `{n}`: `{flags}`" for n, flags in notes.items()]
    Path(args.prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.prefix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def report_remedies(args: argparse.Namespace) -> None:
    """One table of every variant on several protocols' validation splits: the paired gain over
    single-task and what the variant did to the labels (the rows of :func:`ablation_rows`)."""
    protocols = []
    for spec in args.runs:
        name, sep, root = spec.partition("=")
        if not sep:
            raise SystemExit(f"--runs takes NAME=FOLDER, got {spec!r}")
        protocols.append((name, {r["variant"]: r for r in ablation_rows(Path(root), args.variants or list(VARIANTS))}))
    names = [n for n in (args.variants or list(VARIANTS)) if any(n in rows for _, rows in protocols)]
    head = ["variant"] + [f"{p}: − single (pp, paired) · seeds · max-prob / used / NMI" for p, _ in protocols]
    lines = [f"# {args.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        cells = [f"`{n}`"]
        for _, rows in protocols:
            r = rows.get(n)
            if r is None:
                cells.append("")
                continue
            labels = " / ".join(r[k].split(" ±")[0] for k in ("max_prob", "used", "nmi"))
            cells.append(f"{r['minus_single']} · {len(r['seeds'].split())} · {labels}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Validation split only (the test set is not read): the last-5-epoch mean accuracy minus single-task's "
        "on the same seeds (mean ± std over seeds), and the label statistics of the last epoch (means over "
        "seeds; NMI within primary classes, with the human fine labels, on the training images). The "
        "per-protocol tables (report-ablation) have the standard deviations, losses and gradient norms.",
        "",
        "Variants (flags on top of the protocol):",
        "",
    ]
    lines += [f"- `{n}`: `{flags(n) or '(protocol defaults)'}`" for n in names]
    Path(args.prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.prefix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def dynamics(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        ("label_max_prob", "mean max-probability"),
        ("label_used_fraction", "classes used"),
        ("label_nmi_human", "NMI with fine labels"),
        ("meta_lookahead_grad_norm", "‖∇θ2 L_pri(θ1⁺)‖"),
        ("meta_entropy_grad_norm", "‖∇θ2 of the entropy terms‖"),
        ("val_acc", "validation accuracy"),
    ]
    loaded = {name: sorted(_runs(Path(args.runs) / name).items()) for name in args.variants}
    weighted = any("meta_image_weight_mean" in m for runs in loaded.values() for _, run in runs for m in run["metrics"])
    if args.mean and weighted:  # the WAMAL weight in place of the classes used (always 1 with those variants)
        keys[1] = ("meta_image_weight_mean", "auxiliary-loss weight (WAMAL)")
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for (key, label), ax in zip(keys, axes.flat):
        for i, name in enumerate(args.variants):
            runs = loaded[name]
            curves = [[m.get(key, math.nan) for m in run["metrics"]] for _, run in runs]
            if args.mean and curves:  # one line per variant: the mean over its seeds
                ys = np.nanmean(np.array(curves, dtype=float), axis=0) if not np.isnan(curves).all() else []
                if len(ys):
                    ax.plot(
                        range(1, len(ys) + 1), ys, label=f"{name} ({len(curves)} seeds)", alpha=0.9, color=f"C{i % 10}"
                    )  # one colour per variant in every panel
                continue
            for (seed, _), ys in zip(runs, curves):
                ax.plot(range(1, len(ys) + 1), ys, label=f"{name} s{seed}", alpha=0.8)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        if key.startswith("meta_"):
            ax.set_yscale("log")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(args.title)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


def final(args: argparse.Namespace) -> None:
    """The chosen variant on every seed of the protocol grid, next to the grid's methods."""
    run_grid(
        load_grid(args.grid),
        args.out,
        variants=[args.variant],
        data_root=args.data_root,
        device=args.device,
        threads=args.threads,
    )


def report_final(args: argparse.Namespace) -> None:
    """Test table: the protocol grid's methods and the chosen variants (each named ``maxl-<variant>``)."""
    import dataclasses

    from maxl.analysis.results import collect_runs, plot_curves, write_tables

    runs = collect_runs(args.grid_runs)
    for variant in args.variant:
        runs += [dataclasses.replace(r, method=f"maxl-{variant}") for r in collect_runs(Path(args.runs) / variant)]
    added = "; ".join(f"`maxl-{v}` adds `{flags(v)}`" for v in args.variant)
    note = (
        f"`maxl` is the paper's MAXL in this protocol; {added}. The variants were compared on the validation "
        "split (experiments/generated_labels.py report-ablation); the test set was read for this table only."
    )
    md, csv = write_tables(runs, args.prefix, args.title, note=note)
    png = plot_curves(runs, Path(args.prefix).with_suffix(".png"), args.title)
    print(Path(md).read_text())
    print(f"wrote {md}, {csv}, {png}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("ablation", help="train the variants on the protocol (skips finished runs)")
    a.add_argument("--grid", choices=GRIDS, default="protocol-cifar10")
    a.add_argument("--data-root", required=True)
    a.add_argument("--out", required=True, help="one grid folder per variant below it")
    a.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    a.add_argument("--device", default="cpu")
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags added to every run")
    r = sub.add_parser("report-ablation", help="the validation table of the variants")
    r.add_argument("--runs", required=True)
    r.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    r.add_argument("--prefix", required=True, help="writes PREFIX.md")
    r.add_argument("--title", default="Generated labels: ablation on the validation split")
    m = sub.add_parser("report-remedies", help="every variant on several protocols' validation splits")
    m.add_argument("--runs", nargs="+", required=True, help="NAME=FOLDER: a protocol's name and its ablation folder")
    m.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    m.add_argument("--prefix", required=True, help="writes PREFIX.md")
    m.add_argument("--title", default="Generated labels: every variant on every protocol (validation)")
    d = sub.add_parser("dynamics", help="per-epoch label statistics and meta-gradient norms")
    d.add_argument("--runs", required=True)
    d.add_argument("--variants", nargs="+", choices=list(VARIANTS), required=True)
    d.add_argument("--out", required=True, help="PNG to write")
    d.add_argument(
        "--mean",
        action="store_true",
        help="one line per variant (the mean over its seeds), and the "
        "WAMAL weight in place of the classes used if a run has one",
    )
    d.add_argument("--title", default="Generated labels: dynamics")
    f = sub.add_parser("final", help="the chosen variant on every seed of the protocol grid")
    f.add_argument("--grid", choices=GRIDS, default="protocol-cifar10")
    f.add_argument("--variant", choices=list(VARIANTS), required=True)
    f.add_argument("--data-root", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--device", default="cpu")
    f.add_argument("--threads", type=int, default=1)
    g = sub.add_parser("report-final", help="the test table of the grid and the chosen variant")
    g.add_argument("--grid-runs", required=True, help="the protocol grid's output folder")
    g.add_argument("--runs", required=True, help="the `final` output folder")
    g.add_argument("--variant", nargs="+", choices=list(VARIANTS), required=True, help="one or more chosen variants")
    g.add_argument("--prefix", required=True)
    g.add_argument("--title", default="Generated-labels protocol: test accuracy")
    args = p.parse_args(argv)
    {
        "ablation": ablation,
        "report-ablation": report_ablation,
        "report-remedies": report_remedies,
        "dynamics": dynamics,
        "final": final,
        "report-final": report_final,
    }[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
