"""Run a named comparison grid (methods × seeds) and write its results table: a thin wrapper of
``maxl grid`` (the grids are TOML files in maxl/grids; :mod:`maxl.train.grid`), kept so that the
commands of figures/ keep working.

    python -m experiments.grid --config mnist --data-root /path/to/data --out runs/mnist --threads 1
    python -m experiments.grid --list

is ``maxl grid mnist --data-root /path/to/data --out runs/mnist --threads 1`` (``maxl grid --list``).
``--extra`` takes ``maxl train`` flags for every run and passes them on as settings (``--set``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from maxl.cli.commands import main as maxl_main
from maxl.cli.grid import train_flags_overlay
from maxl.train.grid import grid_names
from maxl.train.overlays import dotted


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--config", choices=grid_names(), help="named grid (maxl/grids/NAME.toml)")
    p.add_argument("--list", action="store_true", help="list the named grids and exit")
    p.add_argument("--data-root", default=None, help="data folder (default: the grid's, relative)")
    p.add_argument("--out", default=None, help="output folder of the grid (default: runs/<config>)")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods of the grid")
    p.add_argument("--seeds", nargs="+", default=None, help="these seeds instead of the grid's")
    p.add_argument("--device", default="auto", help="device of every run (cpu, cuda, auto)")
    p.add_argument("--threads", default=None, help="torch CPU threads (1 is fastest on a shared CPU)")
    p.add_argument("--extra", default="", help="further `maxl train` flags for every run, e.g. '--epochs 3'")
    p.add_argument("--table", default=None, help="also write the table to PREFIX.md and PREFIX.csv")
    p.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    return p


def set_flags(extra: list[str]) -> list[str]:
    """``maxl train`` flags as ``maxl grid --set KEY=VALUE`` options."""
    return [f"--set={k}={json.dumps(v)}" for k, v in dotted(train_flags_overlay(extra)).items()] if extra else []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list or args.config is None:
        maxl_main(["grid", "--list"])
        return 0 if args.list else 2
    out = ["grid", args.config, "--device", args.device]
    for flag, value in (
        ("--data-root", args.data_root),
        ("--out", args.out),
        ("--threads", args.threads),
        ("--table", args.table),
    ):
        out += [flag, value] if value is not None else []
    out += ["--methods", *args.methods] if args.methods else []
    out += ["--seeds", *args.seeds] if args.seeds else []
    out += ["--dry-run"] if args.dry_run else []
    try:
        out += set_flags(shlex.split(args.extra))
    except ValueError as err:
        print(f"grid: error: {err}", file=sys.stderr)
        return 2
    return maxl_main(out)


if __name__ == "__main__":
    sys.exit(main())
