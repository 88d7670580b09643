"""Command line: ``maxl train``, ``maxl demo`` (and ``maxl visualise`` / ``compare``, see
:mod:`maxl.cli.analysis`).

This module only parses argv into :class:`maxl.train.build.RunConfig` objects and calls
:func:`maxl.train.build.build`. Every ``maxl train`` flag sets one setting of the run
configuration (:data:`OPTIONS`, generated from the settings dataclasses by :mod:`maxl.cli.schema`);
settings not given come from ``--config FILE`` (TOML, or a run's ``config.json``), from the run
being resumed (``--resume``), from the data set's preset (``--preset``, :mod:`maxl.train.presets`),
or from the defaults.
Under ``torchrun --nproc_per_node N -m maxl train ...`` the processes join one process group
(:mod:`maxl.train.distributed`) and only rank 0 prints and writes the run folder.

:func:`main` returns the exit status: 0 done; 2 bad input or setup; 1 the run stopped (non-finite
values, or a file the operating system would not write: disk full, read-only folder), keeping
its last checkpoint. Either error is one ``maxl: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from maxl.analysis.run import TornLineWarning
from maxl.cli.analysis import ANALYSIS_COMMANDS, add_analysis_commands
from maxl.cli.demo import finish_demo
from maxl.cli.grid import GRID_COMMANDS, add_grid_command
from maxl.cli.schema import add_options, option_table
from maxl.core import toml
from maxl.data.readers import WriteError
from maxl.meta import DoubleBackwardError
from maxl.train import distributed
from maxl.train.build import RunConfig, build, parse_psi
from maxl.train.config import RESUMABLE_CHANGES
from maxl.train.diagnostics import GeneratorLabelWarning
from maxl.train.migrate import MovedSettingsWarning, complete_run_record, migrate
from maxl.train.overlays import merge_overlays, nested, preset_overlay
from maxl.train.preemption import EXIT_PREEMPTED, Preempted

__all__ = [
    "main",
    "build_parser",
    "run_configs",
    "run_training",
    "parse_psi",
    "parse_aux_weights",
    "parse_weighting_options",
    "OPTIONS",
    "DEMO_ARGS",
]

#: ``{flag: (setting, argparse keywords)}`` of ``maxl train``, generated from the settings dataclasses
#: (:mod:`maxl.cli.schema`); ``OPTION_OF`` names the flag of each setting.
OPTIONS: dict[str, tuple[str, dict]] = option_table()
OPTION_OF = {path: flag for flag, (path, _) in OPTIONS.items()}

DEMO_ARGS = [
    "--dataset",
    "digits",
    "--method",
    "single",
    "maxl",
    "--batch-size",
    "32",
    "--lr",
    "0.05",
    "--momentum",
    "0.9",
    "--hidden",
    "64",
    "--lr-step",
    "1000",
]


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one ``maxl: error: ...`` line and exit status 2 like
    every other bad input of :func:`main` (instead of the usage and the message on two lines);
    the subcommands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"maxl: error: {message.replace(chr(10), ' ')} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``maxl``. ``train`` options left out are absent from the namespace
    (``argparse.SUPPRESS``): only what the command line says overrides a configuration."""
    parser = _Parser(prog="maxl", description="Meta Auxiliary Learning (Liu, Davison, Johns, NeurIPS 2019).")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "train",
        help="train single-task, human / random / k-means auxiliary-label or MAXL models",
        argument_default=argparse.SUPPRESS,
    )
    r = add_options(t)[""]
    r.add_argument(
        "--config",
        metavar="FILE",
        help="start from the settings in FILE (TOML with the sections "
        "[data] [model] [train] [train.meta] [objective] [aux] [baselines], or a run's config.json); flags override",
    )
    r.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its checkpoint.pt with the "
        "settings of its config.json (flags that disagree with them are refused; --epochs may extend "
        "the run)",
    )
    r.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt where the run "
        "folder holds one of the same settings (refused, with the differences, for other settings); "
        "start afresh where it holds none. Implied in a process that torchrun restarted",
    )
    demo = sub.add_parser(
        "demo",
        help="quick start: single vs maxl on the embedded digits data, then the maxl run's report.html; about a minute",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--epochs", type=int, default=15, help="epochs per method")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--out", default="runs/demo", help="parent folder of the two run folders")
    add_analysis_commands(sub)
    add_grid_command(sub)
    return parser


def parse_aux_weights(items: list[str]) -> dict[str, float]:
    """``["rotation=0.5", ...]`` -> ``{"rotation": 0.5}``.

    Raises:
        ValueError: an item that is not ``TASK=NUMBER``.
    """
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"--aux-weight {item!r}: expected TASK=WEIGHT, e.g. rotation=0.5")
    return weights


def parse_weighting_options(items: list[str]) -> dict[str, str | float]:
    """``["c=0.4", ...]`` -> ``{"c": "0.4"}`` (the weighting converts each value to its type).

    Raises:
        ValueError: an item that is not ``KEY=VALUE``, or a key given twice.
    """
    options: dict[str, str | float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ValueError(f"--weighting-option {item!r}: expected KEY=VALUE, e.g. c=0.4")
        if key in options:
            raise ValueError(f"--weighting-option {key} given twice")
        options[key] = value.strip()
    return options


def _get(tree: dict, path: str):
    """The value at the dotted ``path`` of nested tables, or None where a table lacks it."""
    value: object = tree
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def read_config_file(path: str | os.PathLike) -> dict:
    """The settings of a TOML file or a run's ``config.json``.

    Raises:
        FileNotFoundError: no such file. ValueError: it is not UTF-8 text, cannot be parsed, or
            is not a table of sections (a JSON list, say).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    table = toml.read_file(path, f"--config {path}")
    if not isinstance(table, dict):
        kind = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(table), "null")
        raise ValueError(
            f"--config {path}: expected a table of sections ([data], [model], [train], ...), got a JSON {kind}"
        )
    return table


def run_configs(args: argparse.Namespace) -> tuple[list[RunConfig], bool]:
    """The runs of a parsed ``maxl train`` command line, and whether they continue a run.

    Raises:
        FileNotFoundError: ``--config`` / ``--resume`` files are missing.
        ValueError: bad settings, or flags that disagree with the run being resumed (each is
            named with both values).
    """
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "resume", "auto_resume")}
    if "aux.weights" in given:
        given["aux.weights"] = parse_aux_weights(given["aux.weights"])
    if "aux.weighting_options" in given:
        given["aux.weighting_options"] = parse_weighting_options(given["aux.weighting_options"])
    base = RunConfig().to_dict()
    resume = getattr(args, "resume", None)
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").is_file():
            inside = sorted(str(c.parent) for c in run_dir.glob("*/config.json"))
            hint = f"; it holds the run folders {', '.join(inside)}: resume one of them" if inside else ""
            raise FileNotFoundError(f"--resume {run_dir}: no config.json in that folder{hint}")
        if not (run_dir / "checkpoint.pt").is_file():
            raise FileNotFoundError(
                f"--resume {run_dir}: no checkpoint.pt in that folder (the run stopped before the "
                "end of its first epoch); start it again without --resume"
            )
        stored_file = run_dir / "config.json"
        stored = RunConfig.from_dict(
            complete_run_record(migrate(read_config_file(stored_file), str(stored_file)))
        ).to_dict()
        if "train.method" in given:
            methods = given["train.method"]
            given["train.method"] = methods[0] if len(methods) == 1 else methods
        conflicts = [
            f"{OPTION_OF[k]} (run: {_get(stored, k)}, command line: {v})"
            for k, v in sorted(given.items())
            if k not in RESUMABLE_CHANGES and v != _get(stored, k)
        ]
        if "out" in given and Path(given["out"]).resolve() != run_dir.resolve():
            conflicts.append(f"--out {given['out']} (a resumed run writes into its own folder {run_dir})")
        if conflicts:
            raise ValueError(
                f"--resume {run_dir}: the command line disagrees with the run's config.json on "
                f"{'; '.join(conflicts)}. Leave these flags out to continue the run as it was, or "
                "start a new run in another folder"
            )
        # only the resumable changes (and what equals the run's) remain: the flags as an overlay
        return [RunConfig.from_dict(merge_overlays(stored, nested(given), {"out": str(run_dir)}))], True
    raw = {}
    if getattr(args, "config", None) is not None:
        raw = migrate(read_config_file(args.config), str(args.config))  # an old run's config.json: moved settings
        RunConfig.from_dict(raw)  # the file's own errors, before anything is merged onto it
    filed = merge_overlays(base, raw)
    methods = given.pop("train.method", [_get(filed, "train.method")])
    # flags > file > preset > defaults: each an overlay (maxl.train.overlays), merged in that order
    dataset = given.get("data.dataset", _get(filed, "data.dataset"))
    preset, settings = preset_overlay(given.pop("preset", None) or raw.get("preset") or "auto", dataset)
    base = merge_overlays(base, settings, raw, nested(given), {"preset": preset})
    runs = []
    for method in methods:
        tree = json.loads(json.dumps(base))  # a copy per run
        tree["train"]["method"] = method
        if len(methods) > 1:
            tree["out"] = str(Path(base["out"]) / method)
        runs.append(RunConfig.from_dict(tree))
    inert = {path: why for path, why in runs[0].inert_settings().items() if path in given}
    if inert:
        raise ValueError("; ".join(f"{OPTION_OF[path]} has no effect here: {why}" for path, why in inert.items()))
    return runs, False


def run_training(args: argparse.Namespace) -> dict[str, dict]:
    """Build and train every run of a parsed ``maxl train`` command line; returns
    ``{method: summary}``."""
    runs, resume = run_configs(args)
    summaries = {run.train.method: build(run, resume=resume or _continues(run, args)).fit() for run in runs}
    if distributed.rank() == 0:
        print_table(summaries)
    return summaries


def _continues(run: RunConfig, args: argparse.Namespace) -> bool:
    """Whether ``--auto-resume`` (implied in a process that torchrun restarted, where
    ``TORCHELASTIC_RESTART_COUNT`` > 0) continues the run from ``run.out/checkpoint.pt``: where
    the folder holds one. The trainer refuses a checkpoint of other settings and names them."""
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    return (getattr(args, "auto_resume", False) or restarted) and (Path(run.out) / "checkpoint.pt").is_file()


def print_table(summaries: dict[str, dict]) -> None:
    print(f"\n{'method':<8} {'final test acc':>15} {'best test acc':>14} {'last-5 mean':>12} {'s/epoch':>8}")
    for method, s in summaries.items():
        print(
            f"{method:<8} {s['final_test_acc']:>15.4f} {s['best_test_acc']:>14.4f} "
            f"{s['last5_mean_test_acc']:>12.4f} {s['mean_epoch_time_s']:>8.2f}"
        )


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Label and torn-line warnings as one ``maxl: warning: ...`` line, without the source
    line that points into maxl; every other warning as Python shows it."""
    if issubclass(category, (GeneratorLabelWarning, TornLineWarning, MovedSettingsWarning)):
        return f"maxl: warning: {message}\n"
    return _PYTHON_FORMAT(message, category, filename, lineno, line)


_PYTHON_FORMAT = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = _format_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"maxl[rank {os.environ['RANK']}]" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "maxl"
    try:
        demo_out = None
        if args.command == "demo":
            demo_out = args.out
            argv = ["train", *DEMO_ARGS, "--epochs", str(args.epochs), "--seed", str(args.seed), "--out", args.out]
            print("maxl " + " ".join(argv))
            args = parser.parse_args(argv)
        if args.command == "train":
            device = getattr(args, "train.device", None)
            if device is None and getattr(args, "resume", None) is not None:  # the run's device picks the backend
                device = run_configs(args)[0][0].train.device
            with distributed.process_group(device or "auto"):
                run_training(args)
            if demo_out is not None and int(os.environ.get("RANK", "0")) == 0:
                finish_demo(demo_out)  # the maxl run's report.html and what its labels did
        else:
            {**ANALYSIS_COMMANDS, **GRID_COMMANDS}[args.command](args)
    except (ValueError, FileNotFoundError, ImportError) as err:  # bad input or setup
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except Preempted as stop:  # a signal stopped the run after a step; its checkpoint is written
        print(f"{prog}: {stop}", file=sys.stderr)
        return EXIT_PREEMPTED
    except (FloatingPointError, DoubleBackwardError, WriteError) as err:  # the run stopped; last checkpoint intact
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
