"""Two-level class hierarchies given by the user: a file, or the folders of a two-level ImageFolder.

A hierarchy groups a data set's classes under primary classes: the primary task is to tell
the groups apart and the human auxiliary task to tell the classes inside each group apart
(MAXL's ψ[i] is the size of group i; Liu, Davison, Johns, NeurIPS 2019, Sec. 3.2).

* A **hierarchy file** (``--hierarchy FILE``, ``.json`` or ``.toml``) maps each primary class to
  the names of its classes, e.g. in TOML::

      animal = ["bird", "cat", "deer", "dog", "frog", "horse"]
      vehicle = ["airplane", "automobile", "ship", "truck"]

  The primary classes keep the file's order. Every class of the data set must be in exactly one
  group, and every name must be one of the data set's classes (an ImageFolder's folder names,
  or the built-in data set's class names).
* A **two-level ImageFolder** ``train/<primary>/<auxiliary>/<image>`` (and the same tree under
  ``test/``) defines the hierarchy by its folders: :class:`TwoLevelImageFolder` is torchvision's
  ``ImageFolder`` whose classes are the ``<primary>/<auxiliary>`` folders.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import torch
import torchvision
from torch import Tensor

from maxl.core import toml

__all__ = [
    "Groups",
    "HIERARCHY_SUFFIXES",
    "is_hierarchy_file",
    "read_hierarchy_file",
    "parent_of_classes",
    "check_primary_images",
    "is_two_level",
    "TwoLevelImageFolder",
]

HIERARCHY_SUFFIXES = (".json", ".toml")


@dataclass(frozen=True)
class Groups:
    """A two-level hierarchy by class name.

    Attributes:
        primary_names: the primary classes, in label order.
        members: for each primary class, the names of its classes.
        source: where it came from, for error messages (a file, a folder, a built-in name).
        short_names: name the auxiliary classes by the part after the last ``/`` (the
            auxiliary folder of a two-level ImageFolder, whose classes are ``primary/aux``).
    """

    primary_names: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]
    source: str
    short_names: bool = False


def is_hierarchy_file(value) -> TypeGuard[str | os.PathLike]:
    """Whether a ``hierarchy`` setting names a file (it ends in ``.json`` or ``.toml``)."""
    return isinstance(value, (str, os.PathLike)) and str(value).lower().endswith(HIERARCHY_SUFFIXES)


def read_hierarchy_file(path: str | os.PathLike) -> Groups:
    """Read a hierarchy file: a JSON object or TOML table, primary class -> list of class names.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not UTF-8 text, not parsable, not a mapping of names to non-empty lists of
            names, a primary class given twice (JSON), or a name listed twice within a group (the
            message names the file and the problem).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"hierarchy file {path} not found (expected a .json or .toml file mapping each "
            "primary class to the names of its classes)"
        )
    table = toml.read_file(path, f"hierarchy file {path}", object_pairs_hook=_no_repeated_keys)
    example = 'e.g. {"animal": ["cat", "dog"], "vehicle": ["car", "ship"]}'
    if not isinstance(table, dict) or not table:
        raise ValueError(
            f"hierarchy file {path}: expected a non-empty mapping of primary class -> list of class names, {example}"
        )
    for primary, names in table.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(
                f"hierarchy file {path}: primary class {primary!r} maps to {names!r}, not a list of "
                f"class names; {example}"
            )
        if not names:
            raise ValueError(f"hierarchy file {path}: primary class {primary!r} has no classes (an empty list)")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"hierarchy file {path}: primary class {primary!r} lists {twice} more than once")
    return Groups(tuple(table), tuple(tuple(v) for v in table.values()), str(path))


def _no_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object as a dict, refusing a key given twice (json keeps the last one silently)."""
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"the keys {twice} are given more than once")
    return dict(pairs)


def parent_of_classes(groups: Groups, class_names: Sequence[str], what: str) -> list[int]:
    """The primary class of each of the data set's classes.

    Args:
        groups: the hierarchy.
        class_names: the data set's class names, in label order.
        what: the data set, for messages (e.g. ``"imagefolder data/pets"``).

    Returns:
        ``parent_of`` with ``parent_of[c]`` = index in ``groups.primary_names`` of class ``c``.

    Raises:
        ValueError: a name that matches no class, a class in two groups, or classes in no
            group (each message names them and the hierarchy's source).
    """
    known = set(class_names)
    owner: dict[str, str] = {}
    for primary, names in zip(groups.primary_names, groups.members):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"hierarchy {groups.source}: {unknown} (under {primary!r}) match no class of {what}; "
                f"its classes are {list(class_names)}"
            )
        for n in names:
            if n in owner:
                raise ValueError(
                    f"hierarchy {groups.source}: class {n!r} is in two groups, {owner[n]!r} and "
                    f"{primary!r}; each class belongs to exactly one primary class"
                )
            owner[n] = primary
    orphans = [c for c in class_names if c not in owner]
    if orphans:
        raise ValueError(
            f"hierarchy {groups.source}: the classes {orphans} of {what} are in no group; every class "
            "must belong to exactly one primary class"
        )
    index = {p: i for i, p in enumerate(groups.primary_names)}
    return [index[owner[c]] for c in class_names]


def check_primary_images(primary: Tensor, groups: Groups, split: str) -> None:
    """Raise ValueError naming each primary class without images in ``split``.

    Args:
        primary: int64 [N], the primary labels of the split.
        groups: the hierarchy.
        split: the split's name, for the message.
    """
    counts = torch.bincount(primary, minlength=len(groups.primary_names))
    empty = [(groups.primary_names[i], list(groups.members[i])) for i in (counts == 0).nonzero().flatten().tolist()]
    if empty:
        listed = "; ".join(f"{p!r} (classes {m})" for p, m in empty)
        raise ValueError(f"hierarchy {groups.source}: primary class(es) {listed} have no {split} images")


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: Path) -> list[str]:
    ext = torchvision.datasets.folder.IMG_EXTENSIONS
    return [e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(ext)]


def is_two_level(folder: str | os.PathLike) -> bool:
    """Whether an ImageFolder split (``train/`` or ``test/``) is two-level, ``<primary>/<aux>/<image>``.

    It is when its class folders hold folders rather than images.

    Raises:
        ValueError: some class folders hold folders and others images (a mixed tree), or a class
            folder holds both.
    """
    folder = Path(folder)
    nested: list[str] = []
    flat: list[str] = []
    for name in _subfolders(folder):
        subs, images = _subfolders(folder / name), _image_files(folder / name)
        if subs and images:
            raise ValueError(
                f"imagefolder: {folder / name} holds both images ({images[0]}, ...) and folders "
                f"({subs[0]}, ...); a two-level tree puts every image in <primary>/<auxiliary>/, a "
                "flat tree in <class>/"
            )
        if subs or images:  # an empty class folder fits either kind; the reader reports it
            (nested if subs else flat).append(name)
    if nested and flat:
        raise ValueError(
            f"imagefolder: {folder} mixes two-level class folders {nested} (holding folders) with flat "
            f"ones {flat} (holding images); use <primary>/<auxiliary>/<image> throughout, or a flat "
            "tree with --hierarchy FILE"
        )
    return bool(nested)


class TwoLevelImageFolder(torchvision.datasets.ImageFolder):
    """torchvision's ``ImageFolder`` over ``root/<primary>/<auxiliary>/<image>``.

    Its classes are the ``"<primary>/<auxiliary>"`` folders (sorted), so ``samples`` holds
    ``(path, class index)`` as usual; :attr:`groups` is the hierarchy the folders give.

    Raises:
        ValueError: a primary folder without auxiliary folders, or a primary or auxiliary
            folder without images (named).
    """

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        directory = Path(directory)
        classes = []
        for primary in _subfolders(directory):
            subs = _subfolders(directory / primary)
            if not subs:
                raise ValueError(
                    f"two-level imagefolder: primary class {primary!r} ({directory / primary}) has no "
                    "images: it holds no <auxiliary>/ folders"
                )
            counts = {a: sum(len(_image_files(Path(d))) for d, _, _ in os.walk(directory / primary / a)) for a in subs}
            if not any(counts.values()):
                raise ValueError(
                    f"two-level imagefolder: primary class {primary!r} ({directory / primary}) has no "
                    f"images in its folders {subs}"
                )
            empty = [a for a, n in counts.items() if n == 0]
            if empty:
                raise ValueError(
                    f"two-level imagefolder: the auxiliary class folders {empty} of {directory / primary}"
                    " hold no images; fill or remove them"
                )
            classes += [f"{primary}/{a}" for a in subs]
        if not classes:
            raise ValueError(f"two-level imagefolder: {directory} has no class folders")
        return classes, {c: i for i, c in enumerate(classes)}

    @property
    def groups(self) -> Groups:
        primaries = list(dict.fromkeys(c.split("/")[0] for c in self.classes))
        members = tuple(tuple(c for c in self.classes if c.split("/")[0] == p) for p in primaries)
        return Groups(tuple(primaries), members, f"of the folders of {self.root}", short_names=True)
