"""``maxl train``'s options, generated from the settings dataclasses.

The run configuration (:class:`maxl.train.build.RunConfig`, its sections ``data``, ``model``,
``generator``, ``train`` with ``train.meta``, ``objective``, ``aux``, ``baselines``) is the one
description of a setting: each field is declared with :func:`maxl.core.fields.setting`, which holds
its help text, choices and, where it is not ``--field-name``, its flag. This module walks the
fields and makes one option per field: the type from the annotation, a switch for a bool
(``--name`` for a False default, ``--no-name`` for a True one), ``action="append"`` for a list or a
table (``--aux rotation --aux colourisation``, ``--aux-weight rotation=0.5``), and the default in
the help text. A new setting is one field in one file; its option, its ``config.json`` entry and
its place in ``--config`` files follow from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass

__all__ = ["Option", "options", "add_options", "option_table", "cli_reference_markdown", "SECTION_TITLES"]

#: The titles of the sections in ``--help`` (a section not named here is shown by its path).
SECTION_TITLES = {
    "data": "data",
    "model": "model",
    "generator": "label-generation network (maxl): network, optimiser, schedule",
    "train": "optimisation",
    "train.meta": "meta-gradient (maxl)",
    "objective": "objective J of the label-generation network (maxl)",
    "aux": "auxiliary tasks (auxtasks) on the shared backbone",
    "baselines": "baselines (kmeans)",
    "": "run",
}


@dataclass(frozen=True)
class Option:
    """One command-line option: ``flag`` sets the setting at the dotted ``path`` (in ``section``),
    with the :meth:`argparse.ArgumentParser.add_argument` keywords ``kwargs``."""

    flag: str
    path: str
    section: str
    default: object
    kwargs: dict


def _plain(tp):
    """The annotation without its ``None``: ``int | None`` -> ``int``; a union with ``str`` is ``str``
    (the command line gives text, e.g. ψ as ``"6,4"``)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return str if str in args or len(args) != 1 else args[0]
    return tp


def _kwargs(f: dataclasses.Field, tp, default) -> tuple[str, dict]:
    meta = f.metadata
    kind = _plain(tp)
    kwargs: dict = {}
    if kind is bool:
        kwargs["action"] = "store_false" if default else "store_true"
        flag = f"--{'no-' if default else ''}{f.name.replace('_', '-')}"
    else:
        flag = f"--{f.name.replace('_', '-')}"
        origin = typing.get_origin(kind)
        if origin in (list, dict) and meta.get("nargs") is None:
            kwargs["action"] = "append"  # repeated: a list of items, or KEY=VALUE entries of a table
            item = typing.get_args(kind)[0] if origin is list and typing.get_args(kind) else str
            if item in (int, float):
                kwargs["type"] = item
        elif origin is list:
            item = typing.get_args(kind)[0] if typing.get_args(kind) else str
            if item in (int, float):
                kwargs["type"] = item
        elif kind in (int, float):
            kwargs["type"] = kind
    choices = meta.get("choices")
    if choices is not None:
        kwargs["choices"] = list(choices() if callable(choices) else choices)
    for key in ("metavar", "nargs"):
        if meta.get(key) is not None:
            kwargs[key] = meta[key]
    shown = (
        ""
        if kwargs.get("action") in ("store_true", "store_false") or default in (None, [], {})
        else f" (default: {default})"
    )
    text = meta.get("help")
    kwargs["help"] = ((text() if callable(text) else text) or f.name.replace("_", " ")) + shown
    return meta.get("flag") or flag, kwargs


def options(root: type | None = None) -> list[Option]:
    """Every option of ``root`` (default :class:`~maxl.train.build.RunConfig`), in field order,
    a section's fields where the section's field stands.

    Raises:
        ValueError: two settings would take the same flag (give one of them ``flag=``).
    """
    if root is None:
        from maxl.train.build import RunConfig

        root = RunConfig
    out: list[Option] = []

    def walk(config, prefix: str) -> None:  # the defaults of a default instance: a section's own defaults
        hints = typing.get_type_hints(type(config))
        for f in dataclasses.fields(config):
            tp, default = hints[f.name], getattr(config, f.name)
            if dataclasses.is_dataclass(tp):  # a section
                walk(default, f"{prefix}{f.name}.")
                continue
            flag, kwargs = _kwargs(f, tp, default)
            out.append(Option(flag, prefix + f.name, prefix[:-1], default, kwargs))

    walk(root(), "")
    seen: dict[str, str] = {}
    for o in out:
        if o.flag in seen:
            raise ValueError(
                f"settings {seen[o.flag]} and {o.path} would both be {o.flag}: give one a flag= of its own"
            )
        seen[o.flag] = o.path
    return out


def add_options(parser: argparse.ArgumentParser, root: type | None = None) -> dict[str, argparse._ArgumentGroup]:
    """Add every option of ``root`` to ``parser``, one argument group per section (``dest`` is the
    dotted path); returns the groups by section."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for o in options(root):
        if o.section not in groups:
            groups[o.section] = parser.add_argument_group(SECTION_TITLES.get(o.section, o.section or "run"))
        groups[o.section].add_argument(o.flag, dest=o.path, **o.kwargs)
    return groups


def option_table(root: type | None = None) -> dict[str, tuple[str, dict]]:
    """``{flag: (path, kwargs)}`` of every option (what the command line knows of each flag)."""
    return {o.flag: (o.path, o.kwargs) for o in options(root)}


def cli_reference_markdown(root: type | None = None) -> str:
    """The CLI reference of ``maxl train``'s settings, as Markdown: one table per section with each
    flag, its setting (the key in ``config.json`` / ``--config`` files), its default and its help."""
    lines = [
        "# `maxl train` settings",
        "",
        "Generated from the settings dataclasses (`python -m maxl.cli.schema > docs/reference/cli.md`; a test",
        "checks that this page is up to date). Every flag sets the setting named beside it; a `--config` TOML",
        "file sets the same settings by section (`[train]`, `[train.meta]`, ...).",
        "",
    ]
    section = None
    for o in options(root):
        if o.section != section:
            section = o.section
            title = f"## {SECTION_TITLES.get(section, section or 'run')}" + (f" (`[{section}]`)" if section else "")
            lines += ["", title, "", "| flag | setting | default | what |", "| --- | --- | --- | --- |"]
        help_text = o.kwargs["help"].replace("|", "\\|")
        if " (default: " in help_text:
            help_text = help_text[: help_text.rindex(" (default: ")]
        choices = f" One of: {', '.join(f'`{c}`' for c in o.kwargs['choices'])}." if "choices" in o.kwargs else ""
        lines.append(f"| `{o.flag}` | `{o.path}` | `{o.default!r}` | {help_text}.{choices} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m maxl.cli.schema > docs/reference/cli.md
    print(cli_reference_markdown(), end="")
