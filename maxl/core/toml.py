"""TOML on every supported Python: the standard library's ``tomllib`` (3.11+), ``tomli`` on 3.10
(a dependency there). The one place that chooses; config, hierarchy and grid files read through it."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

__all__ = ["loads", "TOMLDecodeError"]

loads = tomllib.loads
TOMLDecodeError = tomllib.TOMLDecodeError
