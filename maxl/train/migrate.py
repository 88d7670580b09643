"""Settings that moved between sections, and the migration of configurations of the old shape.

A run's ``config.json`` and the TOML overlays name each setting by its dotted path
(``train.meta.entropy_weight``). When a setting moves to another section (issue 24: the terms of
the generator's objective J left ``train.meta`` for ``objective``; the generator's network,
optimiser and schedule left ``model`` and ``train`` for ``generator``), configurations written before
still name the old path. :func:`migrate` moves such entries to their new paths, so that
``maxl train --config OLD/config.json``, ``--resume OLD``, ``maxl grid`` and the analysis of old
runs read them, and announces it once per configuration in a one-line
:class:`MovedSettingsWarning`. A configuration that names both the old and the new path of a
setting with different values is refused: which one was meant cannot be told.
"""

from __future__ import annotations

import copy
import warnings

from maxl.meta.config import MOVED_TO_OBJECTIVE
from maxl.train.config import MOVED_TO_GENERATOR

__all__ = ["ADDED", "MOVED", "MovedSettingsWarning", "complete_run_record", "migrate"]

#: ``{old dotted path: new dotted path}`` of every setting that moved.
MOVED: dict[str, str] = {
    **{f"train.meta.{name}": f"objective.{name}" for name in MOVED_TO_OBJECTIVE},
    **{old: f"generator.{name}" for old, name in MOVED_TO_GENERATOR.items()},
}

_MISSING = object()
_ANNOUNCED: set[str] = set()


class MovedSettingsWarning(FutureWarning):
    """A configuration named settings by their old paths; they were read at their new ones."""


def _pop(tree: dict, path: str):
    *parents, key = path.split(".")
    node: object = tree
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
    return node.pop(key, _MISSING) if isinstance(node, dict) else _MISSING


def _get(tree: dict, path: str):
    node: object = tree
    for p in path.split("."):
        if not isinstance(node, dict) or p not in node:
            return _MISSING
        node = node[p]
    return node


def _put(tree: dict, path: str, value) -> None:
    *parents, key = path.split(".")
    node = tree
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[key] = value


def migrate(tree: dict, source: str = "a configuration", *, announce: bool = True) -> dict:
    """``tree`` (a run configuration or an overlay, nested tables) with every setting named by an
    old path (:data:`MOVED`) moved to its new path; a new dict, ``tree`` itself is not changed.

    Args:
        tree: the configuration.
        source: what it is, for the notice (``"runs/a/config.json"``).
        announce: warn (:class:`MovedSettingsWarning`, one line naming the moved settings) when
            something moved.

    Returns:
        The configuration of the current shape (``tree`` itself when nothing moved).

    Raises:
        ValueError: a setting named by its old and its new path with different values.
    """
    if not isinstance(tree, dict) or not any(_get(tree, old) is not _MISSING for old in MOVED):
        return tree
    out = copy.deepcopy(tree)
    moved = []
    for old, new in MOVED.items():
        value = _pop(out, old)
        if value is _MISSING:
            continue
        present = _get(out, new)
        if present is not _MISSING and present != value:
            raise ValueError(
                f"{source} sets {new} = {present!r} and, by its old name, {old} = {value!r}: keep {new} only"
            )
        _put(out, new, value)
        moved.append((old, new))
    groups: dict[str, list[str]] = {}  # "train.meta -> objective": [entropy_weight, ...]
    for old, new in moved:
        (old_section, name), (new_section, new_name) = old.rsplit(".", 1), new.rsplit(".", 1)
        groups.setdefault(f"{old_section} -> {new_section}", []).append(
            name if name == new_name else f"{name} (as {new_name})"
        )
    notice = f"{source} names settings by their old paths, read at the new ones: " + "; ".join(
        f"{move}: {', '.join(names)}" for move, names in groups.items()
    )
    if announce and notice not in _ANNOUNCED:  # once per process (a command reads its file more than once)
        _ANNOUNCED.add(notice)
        warnings.warn(notice, MovedSettingsWarning, stacklevel=2)
    return out


#: Settings added after runs were written whose default computes something else than those runs did:
#: ``{dotted path: the value that reproduces a run written before the setting existed}``. A resumed
#: run's ``config.json`` that lacks one continues as it started (issue 27: the batch-level data path
#: draws other crops and flips than the per-image transforms of earlier runs).
ADDED: dict[str, object] = {"data.loader": "per-image"}


def complete_run_record(tree: dict) -> dict:
    """A run's stored configuration (its ``config.json``, current shape) with each :data:`ADDED`
    setting it lacks set to the value that reproduces how it was run; a new dict. Only for a run's
    own record (``maxl train --resume``): an overlay or a user's settings file that leaves a setting
    out means its default.

    Args:
        tree: the run's configuration, nested tables.

    Returns:
        The configuration with the missing :data:`ADDED` settings filled in.
    """
    out = copy.deepcopy(tree)
    for path, value in ADDED.items():
        if _get(out, path) is _MISSING:
            _put(out, path, value)
    return out
