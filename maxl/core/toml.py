"""TOML on every supported Python: the standard library's ``tomllib`` (3.11+), ``tomli`` on 3.10
(a dependency there). The one place that chooses; config, hierarchy and grid files read through it
(:func:`read_file`, which also reads their JSON form)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

__all__ = ["loads", "TOMLDecodeError", "read_file"]

loads = tomllib.loads
TOMLDecodeError = tomllib.TOMLDecodeError


def read_file(path: Path, label: str, *, allow_json: bool = True, object_pairs_hook=None) -> object:
    """The parsed contents of a UTF-8 settings file: JSON where ``allow_json`` and the suffix is
    ``.json`` (with ``object_pairs_hook`` for :func:`json.loads`), TOML otherwise. The one reader of
    config, hierarchy, grid and preset files; each caller checks that the file exists and what it holds.

    Raises:
        ValueError: not UTF-8 text, or not parsable; the message starts with ``label``.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")  # TOML and JSON files are UTF-8
    except UnicodeDecodeError as err:
        raise ValueError(f"{label}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})") from None
    try:
        if allow_json and path.suffix.lower() == ".json":
            return json.loads(text, object_pairs_hook=object_pairs_hook)
        return loads(text)
    except ValueError as err:  # json.JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ValueError(f"{label}: cannot parse it ({err})") from None
