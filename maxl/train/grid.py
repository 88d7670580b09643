"""Grids of runs: methods × seeds (× named variants) of one base configuration, as TOML files.

A grid file holds config overlays (:mod:`maxl.train.overlays`) and what to run of them::

    description = "MNIST, even / odd primary, the 10 digits auxiliary, psi = [5, 5]"
    note = "printed under the results table"
    include = ["_cpu"]            # grid files merged underneath this one (same folder, .toml implied)
    methods = ["single", "human", "random", "kmeans", "maxl"]
    seeds = [0, 1, 2]

    [base]                        # the overlay of every run
    preset = "paper"
    [base.data]
    dataset = "mnist"
    hierarchy = "even-odd"
    data_root = "data"            # relative to the working directory; --data-root overrides it

    [variants.maxl-every4]        # a named overlay on top of the base
    train.method = "maxl"
    generator = { schedule = "per-step", every = 4 }

A run is ``base``, then its variant, then the runner's own settings (method, seed, run folder,
device, threads, data root) merged onto :class:`~maxl.train.build.RunConfig`'s defaults, with the
preset (``base.preset``, ``"auto"`` if none: the data set's own) underneath
(:func:`maxl.train.overlays.resolve`). A variant that sets ``train.method`` runs that method
only; one that does not, every method of the grid. Included files are merged with
:func:`~maxl.train.overlays.merge_overlays` too (the including file wins; lists such as
``methods`` are replaced, tables merged). A relative hierarchy file (``data.hierarchy`` ending
in ``.toml`` / ``.json``) is read relative to the grid file that names it.

The built-in grids are ``maxl/grids/*.toml`` (:func:`grid_names`; files whose name starts with
``_`` are fragments to include). :func:`run_grid` trains every run a folder does not hold
finished yet: ``OUT/<method>/seed<k>/``, or ``OUT/<variant>/<method>/seed<k>/`` for variants. A
run whose folder holds ``summary.json`` of the same settings (its ``config.json``) is skipped; an
unfinished one with a checkpoint continues from it (``build(run, resume=True)``), one without
starts again; a folder holding a run of other settings is refused (:class:`GridMismatchError`).
``maxl grid`` (:mod:`maxl.cli.grid`) is the command line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from maxl.train.checkpoint import atomic_write_text
from maxl.train.config import METHODS, RESUMABLE_CHANGES
from maxl.train.migrate import migrate
from maxl.train.overlays import dotted, merge_overlays, read_toml, resolve

__all__ = [
    "Grid",
    "GridMismatchError",
    "GRIDS_DIR",
    "grid_names",
    "load_grid",
    "run_folder",
    "run_grid",
    "folder_state",
    "WHERE_SETTINGS",
]

#: the built-in grids
GRIDS_DIR = Path(__file__).resolve().parent.parent / "grids"
RUN_SPEC_FILE = "run.json"  # what the grid asked of a run, written before it starts
_KEYS = {"description", "note", "include", "methods", "seeds", "base", "variants"}
#: settings that say where or how a run is computed, not what: a folder's run may differ in them (the
#: resumable changes of :data:`~maxl.train.config.RESUMABLE_CHANGES` but the length, which a finished
#: run must match)
WHERE_SETTINGS = tuple(s for s in RESUMABLE_CHANGES if s != "train.epochs")
#: settings the grid sets for each run; its overlays may not
_OWNED = ("train.seed", "out")


class GridMismatchError(ValueError):
    """A run folder holds a run made with other settings than the grid asks for."""


@dataclass(frozen=True)
class Grid:
    """One comparison: every method × seed (× variant) of one base overlay.

    Attributes:
        name: the grid's name (its file's stem).
        description: one line on what it is for.
        base: the overlay shared by every run.
        methods: methods to compare, in table order.
        seeds: seeds of every method; the seed also draws the training subset, so the methods
            of one seed see the same images and start from the same weights.
        variants: name -> overlay on top of ``base``.
        note: what deviates from the paper's setting and why (printed under the table).
        path: the file it was read from (None: made in code).
    """

    name: str
    description: str = ""
    base: dict = field(default_factory=dict)
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: dict[str, dict] = field(default_factory=dict)
    note: str = ""
    path: Path | None = None

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"grid {self.name!r}: unknown methods {unknown}; expected some of {METHODS}")
        if (
            not self.seeds
            or len(set(self.seeds)) != len(self.seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds)
        ):
            raise ValueError(f"grid {self.name!r}: seeds must be distinct integers, and some, got {list(self.seeds)}")
        for where, overlay in [("base", self.base), *((f"variants.{n}", o) for n, o in self.variants.items())]:
            if not isinstance(overlay, dict):
                raise ValueError(f"grid {self.name!r}: {where} must be a table of settings")
            owned = sorted(set(_OWNED + (("train.method",) if where == "base" else ())) & set(dotted(overlay)))
            if owned:
                raise ValueError(
                    f"grid {self.name!r}: {where} may not set {owned}; the grid sets them"
                    + (" (a variant may set train.method)" if where == "base" else "")
                )
            method = dotted(overlay).get("train.method")
            if method is not None and method not in METHODS:
                raise ValueError(f"grid {self.name!r}: {where} sets train.method {method!r}; expected one of {METHODS}")

    def variant_methods(self, variant: str | None) -> list[str]:
        """The methods a variant runs: its own ``train.method``, or the grid's."""
        if variant is None:
            return list(self.methods)
        if variant not in self.variants:
            raise ValueError(f"grid {self.name!r} has no variant {variant!r}; it has {sorted(self.variants) or 'none'}")
        method = dotted(self.variants[variant]).get("train.method")
        return [str(method)] if method is not None else list(self.methods)

    def overlays(self, method: str, seed: int, variant: str | None = None, *more: dict) -> list[dict]:
        """The overlays of one run, in merge order: the base, the variant, ``more``, then the
        method and seed."""
        if variant is not None and variant not in self.variants:
            self.variant_methods(variant)  # raises naming the variants
        return [
            self.base,
            *([self.variants[variant]] if variant is not None else []),
            *more,
            {"train": {"method": method, "seed": seed}},
        ]

    def resolve(self, method: str, seed: int, variant: str | None = None, *more: dict):
        """The :class:`~maxl.train.build.RunConfig` of one run (:meth:`overlays`)."""
        return resolve(*self.overlays(method, seed, variant, *more))


def grid_names(folder: str | os.PathLike = GRIDS_DIR) -> list[str]:
    """The names of the grids in ``folder`` (the built-in ones by default), fragments left out."""
    return sorted(p.stem for p in Path(folder).glob("*.toml") if not p.stem.startswith("_"))


def _locate(name: str | os.PathLike, folder: Path) -> Path:
    path = Path(name)
    if path.suffix != ".toml":
        path = path.with_name(path.name + ".toml")
    for candidate in [path] if path.is_absolute() else [folder / path, Path(name), path]:
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"no grid {str(name)!r}: not a file, and not one of the grids in {folder} ({', '.join(grid_names(folder))})"
    )


def _anchor_hierarchy(overlay: dict, folder: Path) -> dict:
    """``overlay`` with a relative hierarchy file (``data.hierarchy`` ending in .toml / .json) made
    absolute against ``folder`` when it lies there."""
    data = overlay.get("data") if isinstance(overlay, dict) else None
    hierarchy = data.get("hierarchy") if isinstance(data, dict) else None
    if (
        isinstance(hierarchy, str)
        and Path(hierarchy).suffix in (".toml", ".json")
        and not Path(hierarchy).is_absolute()
        and (folder / hierarchy).is_file()
    ):
        return merge_overlays(overlay, {"data": {"hierarchy": str((folder / hierarchy).resolve())}})
    return overlay


def _read_grid_table(path: Path, seen: tuple[Path, ...]) -> dict:
    if path in seen:
        raise ValueError(f"grid {path}: includes itself ({' -> '.join(map(str, (*seen, path)))})")
    table = read_toml(path, "grid")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ValueError(f"grid {path}: unknown entries {unknown}; a grid has {sorted(_KEYS)}")
    if isinstance(table.get("base"), dict):
        table["base"] = _anchor_hierarchy(table["base"], path.parent)
    if isinstance(table.get("variants"), dict):
        table["variants"] = {n: _anchor_hierarchy(v, path.parent) for n, v in table["variants"].items()}
    includes = table.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ValueError(f"grid {path}: include must be a list of grid file names")
    under = [_read_grid_table(_locate(i, path.parent), (*seen, path)) for i in includes]
    return merge_overlays({}, *under, table)


def load_grid(name: str | os.PathLike) -> Grid:
    """A grid by name (one of :func:`grid_names`) or from a TOML file.

    Raises:
        FileNotFoundError: no such grid. ValueError: a file that is not a grid (unknown entries,
            bad methods or seeds, overlays that set what the grid sets).
    """
    path = _locate(name, GRIDS_DIR)
    table = _read_grid_table(path, ())
    try:
        return Grid(
            name=path.stem,
            description=table.get("description", ""),
            base=table.get("base", {}),
            methods=tuple(table.get("methods", METHODS)),
            seeds=tuple(table.get("seeds", (0, 1, 2))),
            variants=dict(table.get("variants", {})),
            note=table.get("note", ""),
            path=path,
        )
    except TypeError as err:
        raise ValueError(f"grid {path}: {err}") from None


def run_folder(out: str | os.PathLike, method: str, seed: int, variant: str | None = None) -> Path:
    return Path(out) / (variant or "") / method / f"seed{seed}"


def _comparable(tree: dict) -> dict:
    """A configuration's settings without the :data:`WHERE_SETTINGS`."""
    flat = dotted(json.loads(json.dumps(tree)))
    return {k: v for k, v in flat.items() if k not in WHERE_SETTINGS}


def folder_state(folder: Path, run) -> str:
    """``"finished"``, ``"resume"`` (a checkpoint of the same settings) or ``"new"`` for the run
    ``run`` (a RunConfig) in ``folder``.

    Raises:
        GridMismatchError: ``folder`` holds (part of) a run of other settings, or a finished run
            without its ``config.json``; the grid never overwrites such a run silently.
    """
    from maxl.train.build import RunConfig, parse_psi

    config_file = folder / "config.json"
    if not config_file.is_file():
        if (folder / "summary.json").is_file():
            raise GridMismatchError(
                f"{folder} holds a finished run without config.json: not made by a grid; use another output folder"
            )
        return "new"
    try:
        stored_raw = json.loads(config_file.read_text())
        stored = _comparable(RunConfig.from_dict(migrate(stored_raw, str(config_file))).to_dict())
    except ValueError as err:
        raise GridMismatchError(f"{folder}: cannot read its config.json ({err}); use another output folder") from None
    wanted = _comparable(run.to_dict())
    # config.json holds psi and the backbone resolved from the data set: a grid leaving them out asks for that
    if wanted.get("model.backbone") is None:
        wanted["model.backbone"] = stored.get("model.backbone")
    if wanted.get("model.psi") is None:
        wanted["model.psi"] = stored.get("model.psi")
    elif (num_primary := stored_raw.get("model", {}).get("num_primary")) is not None:
        try:
            wanted["model.psi"] = parse_psi(wanted["model.psi"], num_primary, None)
        except ValueError:
            pass
    finished, checkpoint = (folder / "summary.json").is_file(), (folder / "checkpoint.pt").is_file()
    # an unfinished run continues to the grid's length (the step schedule does not depend on it)
    free = ("train.epochs",) if checkpoint and not finished else ()
    differ = [
        f"{k} (folder: {stored.get(k)!r}, grid: {wanted.get(k)!r})"
        for k in sorted(set(stored) | set(wanted))
        if stored.get(k) != wanted.get(k) and k not in free
    ]
    if differ:
        raise GridMismatchError(
            f"{folder} holds a run of other settings than the grid asks for: {'; '.join(differ)}. "
            "Use another output folder (or delete that run)"
        )
    if finished:
        return "finished"
    return "resume" if checkpoint else "new"


def run_grid(
    grid: Grid,
    out: str | os.PathLike,
    *,
    variants: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    data_root: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    overlays: Sequence[dict] = (),
    dry_run: bool = False,
    log=print,
    progress: bool = True,
    command: str | None = None,
) -> list[dict]:
    """Run every (variant,) method and seed of ``grid`` that ``out`` does not hold finished yet.

    Args:
        grid: the grid.
        out: its output folder: ``OUT/<method>/seed<k>``, or ``OUT/<variant>/<method>/seed<k>``.
        variants: these variants of the grid (each with its own methods); None: the base grid.
        methods: only these methods (None: all of the grid's, or of each variant).
        seeds: these seeds instead of the grid's.
        data_root: the data folder of every run (None: the grid's ``data.data_root``).
        device, threads: ``train.device`` and ``threads`` of every run.
        overlays: further overlays merged onto every run (part of its settings: a grid resumed
            with other overlays is refused).
        dry_run: only report what would run.
        log: where progress lines go.
        progress: one tqdm bar over the whole grid (stderr): runs done of all, the time per run
            and an estimate of the time left from the mean time of the runs trained here.
        command: the command line to record in each run's ``run.json``.

    Returns:
        One dict per run: ``variant``, ``method``, ``seed``, ``folder``, ``status``
        (``"skipped"``, ``"ran"``, ``"resumed"`` or ``"todo"`` for a dry run) and ``summary``
        (None if not run).

    Raises:
        ValueError: unknown methods or variants, settings the configuration refuses;
            :class:`GridMismatchError` for a folder holding another run.
    """
    from tqdm import tqdm

    from maxl.train.build import build

    wanted = list(methods) if methods else None
    chosen = list(variants) if variants is not None else [None]
    all_methods = {m for v in chosen for m in grid.variant_methods(v)}
    unknown = [m for m in wanted or [] if m not in all_methods]
    if unknown:
        raise ValueError(f"methods {unknown} are not in grid {grid.name!r} ({sorted(all_methods)})")
    seeds = list(seeds) if seeds else list(grid.seeds)
    out = Path(out)
    where = {"train": {"device": device, "progress": False}, "threads": threads}
    if data_root is not None:
        where["data"] = {"data_root": data_root}
    plan = []
    for variant in chosen:
        for seed in seeds:
            for method in grid.variant_methods(variant):
                if wanted is None or method in wanted:
                    folder = run_folder(out, method, seed, variant)
                    run = grid.resolve(method, seed, variant, *overlays, where, {"out": str(folder)})
                    plan.append((variant, method, seed, folder, run))
    states = [folder_state(folder, run) for *_, folder, run in plan]  # every folder checked before any run
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            out / "grid.json",
            json.dumps(
                {
                    "grid": grid.name,
                    "file": str(grid.path) if grid.path else None,
                    "description": grid.description,
                    "variants": variants,
                    "methods": wanted,
                    "seeds": seeds,
                    "data_root": data_root,
                    "overlays": list(overlays),
                },
                indent=2,
            )
            + "\n",
        )
    results = []
    # smoothing=0: the estimate uses the mean time of all runs trained so far, not the last one
    bar = tqdm(
        total=len(plan),
        initial=states.count("finished"),
        unit="run",
        desc=f"grid {grid.name}",
        smoothing=0,
        disable=dry_run or not progress,
        dynamic_ncols=True,
    )
    say = bar.write if log is print and not bar.disable else log  # lines above the bar, not through it
    for k, ((variant, method, seed, folder, run), state) in enumerate(zip(plan, states), 1):
        tag = f"[{k}/{len(plan)}] {variant + ' ' if variant else ''}{method} seed {seed}"
        entry = dict(variant=variant, method=method, seed=seed, folder=folder)
        if state == "finished":
            summary = json.loads((folder / "summary.json").read_text())
            say(f"{tag}: finished before ({summary['last5_mean_test_acc']:.4f} last-5 mean), skipped")
            results.append(dict(entry, status="skipped", summary=summary))
            continue
        resume = state == "resume"
        if dry_run:
            say(f"{tag}: would {'continue' if resume else 'run'} {folder}")
            results.append(dict(entry, status="todo", summary=None))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").unlink(missing_ok=True)
        atomic_write_text(
            folder / RUN_SPEC_FILE,
            json.dumps(
                {
                    "grid": grid.name,
                    "variant": variant,
                    "method": method,
                    "seed": seed,
                    "overlay": dotted(merge_overlays({}, *grid.overlays(method, seed, variant, *overlays))),
                    "command": command,
                },
                indent=2,
            )
            + "\n",
        )
        say(f"{tag}: {'continuing' if resume else 'training'} {folder}")
        bar.set_postfix_str(f"{variant + ' ' if variant else ''}{method} seed {seed}")
        start = time.time()
        summary = build(run, resume=resume).fit()
        say(f"{tag}: last-5 mean {summary['last5_mean_test_acc']:.4f} in {time.time() - start:.0f}s")
        results.append(dict(entry, status="resumed" if resume else "ran", summary=summary))
        bar.update(1)
    bar.close()
    return results
