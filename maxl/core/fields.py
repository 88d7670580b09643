"""Settings dataclasses checked against their own annotations.

A run's settings come from TOML / JSON files and from ``config.json`` of earlier runs, where a
value of the wrong type (``epochs = "3"``, ``tasks = "rotation"``, ``lr = inf``) would
otherwise surface much later as a ``TypeError`` deep inside the code, or not at all.
:func:`check_field_types` refuses such a value up front with a ``ValueError`` that names the
setting, its value and what was expected; :func:`check_keys` refuses unknown settings.

Each field is declared with :func:`setting`, which holds what the command line shows of it
(help text, flag name, choices): the dataclasses are the one description of a setting, and
``maxl train``'s options are generated from them (:mod:`maxl.cli.schema`).

Known annotations: ``int`` (no bools), ``float`` (ints too; finite), ``str``, ``bool``,
``list[X]`` (or a tuple), ``dict[K, V]``, a dataclass, and unions of these with ``None``.
Anything else is left to the class's own checks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Callable
from functools import cache

__all__ = ["setting", "check_field_types", "check_keys", "fits", "describe", "refuse_moved_settings"]


def setting(
    default=dataclasses.MISSING,
    help: str | Callable[[], str] = "",
    *,
    flag: str | None = None,
    choices=None,
    metavar=None,
    nargs=None,
    default_factory=dataclasses.MISSING,
):
    """A settings field (:func:`dataclasses.field`) with its command-line description.

    Args:
        default, default_factory: as for :func:`dataclasses.field`.
        help: one or two sentences for ``--help`` (the default is appended there), or a function of
            no arguments that returns them (read when the parser is made: text from a registry).
        flag: the option's name where it is not the field's (``--`` + the name with dashes;
            ``--no-`` + the name for a bool that is True by default).
        choices: the allowed values, a sequence or a function of no arguments that returns one
            (read when the parser is made: registries that users extend).
        metavar, nargs: as for :meth:`argparse.ArgumentParser.add_argument`.
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "nargs": nargs}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _union_args(tp) -> tuple | None:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else None


def fits(value, tp) -> bool:
    """Whether ``value`` is of the annotation ``tp`` (see the module's docstring)."""
    args = _union_args(tp)
    if args is not None:
        return any(fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp) or (object,)
        return isinstance(value, (list, tuple)) and all(fits(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(tp) or (object, object)
        return isinstance(value, dict) and all(fits(k, key) and fits(v, item) for k, v in value.items())
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):  # an annotation is a class, not an instance
        return isinstance(value, tp)
    return True  # an annotation not known here: the class's own checks judge the value


_NAMES = {
    int: "an integer",
    float: "a finite number",
    str: "a string",
    bool: "true or false",
    type(None): "None (leave the setting out)",
}
_PLURAL = {int: "integers", float: "finite numbers", str: "strings", bool: "true / false"}


def describe(tp) -> str:
    """The annotation ``tp`` in words, e.g. ``"an integer or None (leave the setting out)"``."""
    args = _union_args(tp)
    if args is not None:
        words = [describe(a) for a in args]
        return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]
    if tp in _NAMES:
        return _NAMES[tp]
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp) or (object,)
        return f"a list of {_PLURAL.get(item, 'values')}"
    if origin is dict:
        key, item = typing.get_args(tp) or (object, object)
        return f"a table of {_PLURAL.get(key, 'keys')} -> {_PLURAL.get(item, 'values')}"
    if dataclasses.is_dataclass(tp):
        return "a table of settings"
    return str(tp)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_field_types(obj, section: str) -> None:
    """Raise ValueError for the first field of the dataclass ``obj`` whose value does not fit
    its annotation.

    Args:
        obj: a dataclass instance.
        section: where its settings live, for the message (e.g. ``"train"``, ``"meta"``).

    Raises:
        ValueError: e.g. ``train.epochs = '3' (str): expected an integer``.
    """
    # ignore: typeshed's lru_cache wrapper takes Hashable arguments and mypy does not count a class as one
    hints = _hints(type(obj))  # type: ignore[arg-type]
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), hints[f.name]
        if not fits(value, tp):
            where = f"{section}.{f.name}" if section else f.name
            raise ValueError(f"{where} = {_show(value)} ({type(value).__name__}): expected {describe(tp)}")


def check_keys(values, cls: type, section: str) -> dict:
    """Check that ``values`` is a table whose keys are fields of the dataclass ``cls``; returns it.

    Raises:
        ValueError: ``values`` is not a dict (``section [data] must be a table ...``), or it has
            keys that are not settings of ``cls`` (named, with the known ones).
    """
    if not isinstance(values, dict):
        raise ValueError(
            f"section [{section}] must be a table of settings, got {_show(values)} ({type(values).__name__})"
        )
    allowed = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(values) - allowed, key=str)
    if bad:
        raise ValueError(f"unknown settings {bad} in section [{section}]; expected some of {sorted(allowed)}")
    return values


def refuse_moved_settings(cls: type, moved: dict[str, str]) -> None:
    """Make ``cls(name=...)`` for a setting ``name`` that moved to another class raise a
    ``TypeError`` that says where it went (instead of Python's "unexpected keyword argument").

    Args:
        cls: a settings dataclass (its ``__init__`` is wrapped in place).
        moved: ``{old field name: where it is now}``, e.g. ``{"entropy_weight":
            "maxl.ObjectiveConfig(entropy_weight=...)"}``.
    """
    init = cls.__init__  # type: ignore[misc]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        gone = [name for name in kwargs if name in moved]
        if gone:
            raise TypeError(
                f"{cls.__name__} has no setting {', '.join(map(repr, gone))} any more: "
                + "; ".join(f"{name} moved to {moved[name]}" for name in gone)
            )
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]
