"""Run a named comparison grid (methods × seeds) and write its results table.

    python -m experiments.grid --config mnist --data-root /path/to/data --out runs/mnist --threads 1
    python -m experiments.grid --list

Runs already finished in --out are skipped, so the same command resumes an interrupted grid.
The table (Markdown and CSV) goes to OUT/results.{md,csv}, and also to --table PREFIX if given.
Every run goes through `maxl train` (maxl.cli.commands.run_training); OUT/<method>/seed<k>/run.json holds
the equivalent command line of each run.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from experiments.harness import CONFIGS, GridMismatchError, run_grid
from maxl.analysis.results import collect_runs, write_tables


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), help="named grid configuration")
    p.add_argument("--list", action="store_true", help="list the named configurations and exit")
    p.add_argument("--data-root", default=None, help="data folder (default: the configuration's, relative)")
    p.add_argument("--out", default=None, help="output folder of the grid (default: runs/<config>)")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods of the configuration")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="these seeds instead of the configuration's")
    p.add_argument("--device", default="auto", help="device of every run (cpu, cuda, auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a shared CPU)")
    p.add_argument("--extra", default="", help="further `maxl train` flags for every run, e.g. '--epochs 3'")
    p.add_argument("--table", default=None, help="also write the table to PREFIX.md and PREFIX.csv")
    p.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list or args.config is None:
        for name, grid in CONFIGS.items():
            print(f"{name:<24} {grid.description}\n{'':<24} maxl train {shlex.join(grid.train_args)}")
        return 0 if args.list else 2
    grid = CONFIGS[args.config]
    out = args.out or f"runs/{grid.name}"
    try:
        run_grid(grid, out, data_root=args.data_root, methods=args.methods, seeds=args.seeds, device=args.device,
                 threads=args.threads, extra_args=shlex.split(args.extra), dry_run=args.dry_run)
    except (GridMismatchError, ValueError, FileNotFoundError) as err:
        print(f"grid: error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        return 0
    runs = collect_runs(out)
    title = f"{grid.name}: {grid.description}"
    for prefix in [f"{out}/results", *([args.table] if args.table else [])]:
        md, cs = write_tables(runs, prefix, title, grid.note)
        print(f"wrote {md} and {cs}")
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
