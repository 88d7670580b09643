"""``maxl grid``: run a grid of methods × seeds (× variants) from a TOML grid file, resumably, and
write its results table (:mod:`maxl.train.grid`).

    maxl grid --list
    maxl grid mnist --data-root data --out runs/mnist --threads 1
    maxl grid protocol-cifar10 --variants ps-adam-mi paper --seeds 0 1 --out runs/gl-cifar10
    maxl grid my-grid.toml --out runs/mine --set train.epochs=3

Runs finished in ``--out`` are skipped and interrupted ones continue from their checkpoint, so the
same command resumes a grid. The table (Markdown and CSV) goes to ``OUT/results.{md,csv}``
(and to ``--table PREFIX``); with variants, one row per variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from maxl.core import toml
from maxl.train.config import METHODS
from maxl.train.overlays import dotted, nested, read_toml

__all__ = ["add_grid_command", "grid_command", "GRID_COMMANDS", "parse_set", "train_flags_overlay", "overlay_flags"]


def add_grid_command(sub) -> None:
    g = sub.add_parser(
        "grid",
        help="run a grid of methods x seeds (x variants) from a TOML grid file, resumably",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__.split("\n\n")[0],
    )
    g.add_argument("grid", nargs="?", help="a built-in grid's name (see --list) or a grid TOML file")
    g.add_argument("--list", action="store_true", help="list the built-in grids (and a grid's variants) and exit")
    g.add_argument("--out", default=None, help="output folder of the grid (default: runs/<grid>)")
    g.add_argument(
        "--variants",
        nargs="+",
        default=None,
        metavar="NAME",
        help="run these variants of the grid ('all': every one) into OUT/<variant>/<method>/seed<k>",
    )
    g.add_argument("--methods", nargs="+", choices=METHODS, default=None, help="only these methods")
    g.add_argument("--seeds", nargs="+", type=int, default=None, help="these seeds instead of the grid's")
    g.add_argument("--data-root", default=None, help="data folder of every run (default: the grid's data.data_root)")
    g.add_argument("--device", default="auto", help="device of every run (cpu, cuda, auto)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a shared CPU)")
    g.add_argument(
        "--overlay",
        action="append",
        default=[],
        metavar="FILE",
        help="a TOML overlay merged onto every run (repeatable; part of the runs' settings)",
    )
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="settings",
        help="one setting of every run, e.g. train.epochs=3 (a TOML value; repeatable, after --overlay)",
    )
    g.add_argument("--table", default=None, help="also write the table to PREFIX.md and PREFIX.csv")
    g.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_set(item: str) -> dict:
    """``"train.epochs=3"`` -> ``{"train": {"epochs": 3}}`` (the value read as TOML, else as text).

    Raises:
        ValueError: not ``KEY=VALUE``.
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
    try:
        value = toml.loads(f"v = {text}")["v"]
    except ValueError:
        value = text
    return nested({key.strip(): value})


def train_flags_overlay(flags: list[str]) -> dict:
    """The overlay that ``maxl train`` flags set, e.g. ``["--epochs", "3", "--meta-engine", "jvp"]`` ->
    ``{"train": {"epochs": 3, "meta": {"engine": "jvp"}}}`` (parsed by ``maxl train``'s own parser).

    Raises:
        ValueError: flags that are not ``maxl train``'s, or that set what a grid sets (method, seed, out).
    """
    from maxl.cli.commands import build_parser, parse_aux_weights

    try:
        given = {k: v for k, v in vars(build_parser().parse_args(["train", *flags])).items() if k != "command"}
    except SystemExit:
        raise ValueError(f"not `maxl train` flags: {shlex.join(flags)}") from None
    owned = sorted({"train.method", "train.seed", "out", "config", "resume", "auto_resume"} & set(given))
    if owned:
        raise ValueError(f"{shlex.join(flags)}: a grid sets {owned} itself")
    if "aux.weights" in given:
        given["aux.weights"] = parse_aux_weights(given["aux.weights"])
    return nested(given)


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def overlay_flags(overlay: dict, leave_out: tuple[str, ...] = ("train.method",)) -> str:
    """The ``maxl train`` flags that set what ``overlay`` sets (its settings without a flag as
    ``path=value``), e.g. ``{"generator": {"schedule": "per-step", "weight_decay": 0.0}}`` ->
    ``"--schedule per-step --gen-weight-decay 0"``: how a variant reads on the command line."""
    from maxl.cli.schema import options
    from maxl.train.migrate import migrate

    overlay = migrate(overlay, announce=False)  # settings named by their old paths: at the new ones
    flag_of = {o.path: o for o in options()}
    words = []
    for path, value in dotted(overlay).items():
        if path in leave_out:
            continue
        o = flag_of.get(path)
        if o is None:
            words.append(f"{path}={json.dumps(value)}")
        elif o.kwargs.get("action") in ("store_true", "store_false"):
            if value == (o.kwargs["action"] == "store_true"):
                words.append(o.flag)
            else:
                words.append(f"{path}={json.dumps(value)}")
        elif isinstance(value, dict):
            words += [w for k, v in value.items() for w in (o.flag, f"{k}={_text(v)}")]
        elif isinstance(value, list) and o.kwargs.get("action") == "append":
            words += [w for v in value for w in (o.flag, _text(v))]
        elif isinstance(value, list):
            words += [o.flag, *map(_text, value)]
        else:
            words += [o.flag, _text(value)]
    return shlex.join(words)


def _list(grid_name: str | None) -> int:
    from maxl.train.grid import grid_names, load_grid

    if grid_name is not None:
        grid = load_grid(grid_name)
        print(f"{grid.name}: {grid.description}")
        for name, overlay in grid.variants.items():
            print(f"  {name:<36} {' '.join(grid.variant_methods(name)):<8} {overlay_flags(overlay)}")
        return 0
    for name in grid_names():
        print(f"{name:<28} {load_grid(name).description}")
    return 0


def grid_command(args: argparse.Namespace) -> int:
    from maxl.analysis.results import collect_runs, write_tables
    from maxl.train.grid import load_grid, run_grid

    if args.list:
        return _list(args.grid)
    if args.grid is None:
        raise ValueError("grid: name a grid (a built-in one, see `maxl grid --list`, or a TOML file)")
    grid = load_grid(args.grid)
    variants = args.variants
    if variants == ["all"]:
        variants = list(grid.variants)
    overlays = [read_toml(f, "--overlay") for f in args.overlay] + [parse_set(s) for s in args.settings]
    out = Path(args.out or f"runs/{grid.name}")
    command = "maxl " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["grid"] else None
    run_grid(
        grid,
        out,
        variants=variants,
        methods=args.methods,
        seeds=args.seeds,
        data_root=args.data_root,
        device=args.device,
        threads=args.threads,
        overlays=overlays,
        dry_run=args.dry_run,
        progress=not args.no_progress,
        command=command,
    )
    if args.dry_run:
        return 0
    if variants is None:
        runs = collect_runs(out)
    else:
        runs = []
        for v in variants:
            several = len(grid.variant_methods(v)) > 1
            runs += [dataclasses.replace(r, method=f"{v}/{r.method}" if several else v) for r in collect_runs(out / v)]
    title = f"{grid.name}: {grid.description}"
    for prefix in [str(out / "results"), *([args.table] if args.table else [])]:
        md, cs = write_tables(runs, prefix, title, grid.note)
        print(f"wrote {md} and {cs}")
    print(Path(md).read_text())
    return 0


#: subcommand -> handler, for :func:`maxl.cli.commands.main`
GRID_COMMANDS = {"grid": grid_command}
