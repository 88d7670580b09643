"""Hyperparameters of a weighting given by name, as ``--weighting-option KEY=VALUE`` gives them.

A weighting class lists what it takes in ``OPTIONS = {name: (type, help)}``; the default is its
``__init__``'s. :func:`weighting_options` checks the names against that list and converts each
value (text from the command line, or a number from a TOML file) to its type, so that a typo
stops the run before it starts instead of being ignored.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping

__all__ = ["weighting_options", "describe_options"]

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _convert(cls_name: str, key: str, value: object, kind: type) -> object:
    where = f"{cls_name} option {key}={value!r}"
    if isinstance(value, bool) and kind is not bool:
        raise ValueError(f"{where}: expected {kind.__name__}, got a boolean")
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"{where}: expected true or false")
    if kind is int:
        try:
            number = float(value)  # type: ignore[arg-type]  # text or a number; refused below if neither
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected an integer") from None
        if not number.is_integer():
            raise ValueError(f"{where}: expected an integer")
        return int(number)
    if kind is float:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{where}: expected a finite number")
        return number
    return str(value)


def weighting_options(cls: type, given: Mapping[str, object]) -> dict[str, object]:
    """``given`` checked against ``cls.OPTIONS`` and converted to each option's type.

    Args:
        cls: a :class:`~auxtasks.weighting.Weighting` subclass (its ``OPTIONS`` may be absent:
            then it takes none).
        given: ``{name: value}``, values as text (the command line) or numbers (a config file).

    Returns:
        ``{name: value}`` of the right types, ready for ``cls(**options)``.

    Raises:
        ValueError: an option ``cls`` does not take (the message lists those it does), or a
            value that is not of the option's type.
    """
    known: Mapping[str, tuple[type, str]] = getattr(cls, "OPTIONS", {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        raise ValueError(f"unknown option(s) {unknown} for the weighting {cls.__name__}; {takes}")
    return {key: _convert(cls.__name__, key, value, known[key][0]) for key, value in given.items()}


def describe_options(cls: type) -> str:
    """One line per option of ``cls``: ``name (type, default): help``."""
    known: Mapping[str, tuple[type, str]] = getattr(cls, "OPTIONS", {})
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
    return "\n".join(
        f"{key} ({kind.__name__}, default {defaults.get(key, inspect.Parameter.empty)!r}): {text}"
        for key, (kind, text) in known.items()
    )
