"""Config overlays: partial run configurations, composed by merging them onto :class:`RunConfig`.

An overlay is a nested table with the sections of a run's configuration
(:meth:`maxl.train.build.RunConfig.to_dict`: ``data``, ``model``, ``generator``, ``train``, ``train.meta``,
``objective``, ``aux``, ``baselines`` and the top-level ``out``, ``threads``, ``preset``), holding only the
settings it changes. In a TOML file::

    preset = "paper"

    [data]
    dataset = "mnist"
    hierarchy = "even-odd"
    train_subset = 3000

    [train]
    epochs = 10
    lr = 0.03

    [objective]
    entropy_weight = 0.4

The presets (:mod:`maxl.train.presets`), the grids and their variants (:mod:`maxl.train.grid`)
and ``maxl train --config FILE`` are all overlays; a run is
``RunConfig.from_dict(merge_overlays(RunConfig().to_dict(), *overlays))``, later overlays
winning over earlier ones (:func:`resolve`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from maxl.core import toml

__all__ = ["merge_overlays", "nested", "dotted", "read_toml", "preset_overlay", "resolve"]


def merge_overlays(base: dict, *overlays: dict) -> dict:
    """``base`` with each overlay merged onto it in turn, as a new dict (the arguments are not
    changed): tables are merged key by key, recursively; any other value (numbers, strings,
    lists, None) replaces what was there. A table replaces a non-table and the reverse (the
    configuration's own checks then refuse what does not fit)."""
    from maxl.train.migrate import migrate  # settings named by their old paths: at the new ones

    out = copy.deepcopy(migrate(base, "an overlay"))
    for overlay in overlays:
        _merge_into(out, migrate(overlay, "an overlay"))
    return out


def _merge_into(tree: dict, overlay: dict) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _merge_into(tree[key], value)
        else:
            tree[key] = copy.deepcopy(value)


def nested(settings: dict[str, object]) -> dict:
    """``{"train.meta.engine": "jvp"}`` -> ``{"train": {"meta": {"engine": "jvp"}}}``."""
    out: dict = {}
    for path, value in settings.items():
        *parents, key = path.split(".")
        tree = out
        for p in parents:
            tree = tree.setdefault(p, {})
        tree[key] = value
    return out


def dotted(overlay: dict, prefix: str = "") -> dict[str, object]:
    """The reverse of :func:`nested`: ``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    out = {}
    for key, value in overlay.items():
        if isinstance(value, dict) and value:
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_toml(path: str | os.PathLike, what: str = "") -> dict:
    """The table of a TOML file.

    Raises:
        FileNotFoundError: no such file. ValueError: not UTF-8 text, or not TOML (the message
            starts with ``what`` and the path).
    """
    path = Path(path)
    label = f"{what} {path}".strip()
    if not path.is_file():
        raise FileNotFoundError(f"{label}: no such file")
    table = toml.read_file(path, label, allow_json=False)
    assert isinstance(table, dict)  # a TOML document is a table
    return table


def preset_overlay(preset: str, dataset: str) -> tuple[str, dict]:
    """:func:`maxl.train.presets.preset_settings` as an overlay: ``(name, nested table)``, e.g.
    ``("mnist", {"model": {"backbone": "small-cnn"}, "train": {"lr": 0.05, ...}})``."""
    from maxl.train.presets import preset_settings

    name, settings = preset_settings(preset, dataset)
    return name, nested(settings)


def resolve(*overlays: dict, preset: str | None = None):
    """The :class:`~maxl.train.build.RunConfig` of ``overlays`` merged in order onto the defaults,
    with the settings of a preset underneath them: ``preset`` if given, else the merged
    overlays' ``preset`` entry, else ``"auto"`` (the data set's own, as ``maxl train``).

        overlays (last wins)  >  preset  >  dataclass defaults

    Raises:
        ValueError: an unknown preset, or settings the configuration refuses.
    """
    from maxl.train.build import RunConfig

    defaults = RunConfig().to_dict()
    merged = merge_overlays({}, *overlays)
    dataset = (
        merged.get("data", {}).get("dataset", defaults["data"]["dataset"])
        if isinstance(merged.get("data"), dict)
        else defaults["data"]["dataset"]
    )
    name, settings = preset_overlay(preset or merged.get("preset") or "auto", dataset)
    return RunConfig.from_dict(merge_overlays(defaults, settings, merged, {"preset": name}))
