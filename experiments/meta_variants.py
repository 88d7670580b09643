"""Do the cheap meta steps learn as well as the reference one? MNIST, 3 seeds.

The benchmark (``experiments/benchmark.py``) measures what one iteration costs; this script
checks on real data that the cheaper settings of issue 7 train as well as the reference
schedule. It runs the ``mnist`` grid (``maxl/grids/mnist.toml``: even / odd primary, ψ = [5, 5],
tiny-cnn, 3000 training / 2000 test images per seed, 10 epochs) with its variants

* ``single``: no auxiliary task;
* ``maxl``: the reference schedule (a pass of multi-task steps, then a pass of generator steps,
  per epoch) with the default ``func`` engine;
* ``maxl-fused-jvp``: a generator step on every multi-task step, fused with it, exact
  forward-mode ``jvp`` engine (``--schedule per-step --meta-engine jvp``);
* ``maxl-every4``: the same with the generator updated every 4th step (``--gen-every 4``);

and writes the table (``PREFIX.md``, ``PREFIX.csv``: test accuracy, the per-seed difference
to ``maxl``, wall time per run) and the test-accuracy curves (``PREFIX.png``)::

    python -m experiments.meta_variants run --data-root /tmp/data --out runs/meta-variants --threads 1
    python -m experiments.meta_variants report --runs runs/meta-variants --prefix figures/mnist-meta-variants

``run`` is ``maxl grid mnist --variants all``: it skips finished runs and continues interrupted ones
(:func:`maxl.train.grid.run_grid`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from maxl.analysis.results import collect_runs, plot_curves, write_tables
from maxl.train.grid import load_grid, run_grid

GRID = "mnist"
#: variant -> its overlay on the grid (maxl/grids/mnist.toml)
VARIANTS = load_grid(GRID).variants
NOTE = (
    "`maxl` is the reference schedule with the `func` engine; `maxl-fused-jvp` updates the generator on "
    "every multi-task step from the same forward/backward (exact forward-mode meta-gradient), "
    "`maxl-every4` on every 4th step; the setting line above is that of the first run. "
    "*maxl − method* compares each variant with the reference schedule, seed by seed."
)


def run(args: argparse.Namespace) -> None:
    grid = load_grid(args.grid)
    run_grid(
        grid,
        args.out,
        variants=list(grid.variants),
        data_root=args.data_root,
        seeds=args.seeds,
        device=args.device,
        threads=args.threads,
    )


def report(args: argparse.Namespace) -> None:
    runs = []
    for variant in VARIANTS:
        folder = Path(args.runs) / variant
        if not folder.is_dir():
            raise SystemExit(f"meta_variants: no runs of {variant!r} in {folder}; run `run` first")
        runs += [dataclasses.replace(r, method=variant) for r in collect_runs(folder)]
    md, csv = write_tables(runs, args.prefix, "MNIST even / odd: the meta step's variants", note=NOTE)
    png = plot_curves(runs, Path(args.prefix).with_suffix(".png"), "MNIST even / odd: meta-step variants")
    print(f"wrote {md}, {csv} and {png}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train every variant and seed (skips finished runs)")
    r.add_argument("--data-root", required=True, help="folder holding MNIST/raw")
    r.add_argument("--grid", default=GRID, help="the grid (a name or a TOML file) whose variants to run")
    r.add_argument("--out", default="runs/meta-variants", help="one grid folder per variant below it")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--device", default="auto")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    t = sub.add_parser("report", help="table and curves from the run folders")
    t.add_argument("--runs", default="runs/meta-variants")
    t.add_argument("--prefix", default="figures/mnist-meta-variants", help="writes PREFIX.md, .csv, .png")
    args = p.parse_args(argv)
    {"run": run, "report": report}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
