"""The data-set registry: one :class:`DatasetSpec` per data set, the one place that states its facts.

A spec says what a data set's files are and where they lie under ``--data-root``, which function
reads them, the image size and channels, the normalisation, its human hierarchies (named
groupings of its classes), the backbone and preset a run takes by default, and one line for the
docs. :func:`maxl.data.load_dataset` dispatches on the spec's ``reader``; the error messages of
the readers, the command line's ``--hierarchy`` help (:func:`hierarchy_help`), the docs' table of
data sets (:func:`datasets_table_markdown`), :func:`maxl.train.presets.preset_settings` and the
default backbone of :func:`maxl.train.build.build` all read it.

A user adds a data set with :func:`register_dataset`::

    from maxl.data.registry import TRAINING_SPLIT, DatasetSpec, register_dataset

    def read_mine(root, *, download, cache_dir):
        ...  # -> ((images uint8 [N, C, H, W], labels int64 [N]), (test images, test labels), class names)

    register_dataset(DatasetSpec(
        name="mine", description="my 32x32 RGB pictures", reader=read_mine, layout="mine.npz",
        files="`mine.npz`", channels=3, image_size=32, normalisation=TRAINING_SPLIT, class_names=None,
        hierarchies={}, default_backbone="cnn3", preset="rgb32"))

The built-in readers live in :mod:`maxl.data.readers` (the torchvision data sets) and
:mod:`maxl.data.datasets` (digits, CIFAR, ImageFolder); the specs below reach them through thin
wrappers that import them when called, because those modules read this registry.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import torchvision

from maxl.data import cifar100
from maxl.data.user_hierarchy import Groups, parent_of_classes

__all__ = [
    "DatasetSpec",
    "Reader",
    "TRAINING_SPLIT",
    "DATASETS",
    "DATASET_NAMES",
    "register_dataset",
    "dataset_spec",
    "hierarchy_help",
    "datasets_table_markdown",
]

#: ``DatasetSpec.normalisation`` of a data set normalised with the pixel mean / std of its training split.
TRAINING_SPLIT = "training split"

#: ``reader(root, *, download, cache_dir) -> (train, test, class_names)`` or ``(train, test, class_names,
#: groups)``: ``root`` the ``--data-root`` folder (a ``Path``, None for a data set without files),
#: ``download`` whether it may fetch missing files, ``cache_dir`` where it may cache decoded images
#: (None: its own default); ``train`` and ``test`` are ``(images uint8 [N, C, H, W], labels int64 [N])``,
#: ``class_names`` the names of the labels in label order, ``groups`` a :class:`Groups` hierarchy that
#: the files themselves give (a two-level ImageFolder's folders) or None.
Reader = Callable[..., tuple]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything maxl knows about one data set.

    Attributes:
        name: the ``--dataset`` / ``load_dataset`` name (no ``:`` or blanks).
        description: one line for the docs.
        reader: reads the files, see :data:`Reader`.
        layout: what the ``--data-root`` folder holds, plain text for error messages; ``""`` for a
            data set without files (it needs no root).
        files: the same for the docs' table, Markdown.
        channels: image channels C, None if they depend on the files (an ImageFolder).
        image_size: image height H = width W in pixels as stored, None if it depends on the files.
        normalisation: per-channel ``(mean, std)`` of the [0, 1]-scaled pixels, the same for every
            channel, or :data:`TRAINING_SPLIT` (the pixel mean / std of the training split,
            computed at load).
        class_names: the class names in label order when known without the files (to check the
            hierarchies and for the docs), else None.
        hierarchies: the human hierarchies by name (``--hierarchy NAME``), each a :class:`Groups`
            of the class names; read-only.
        default_backbone: the backbone a run takes without ``--backbone`` (a key of
            ``maxl.nn.BACKBONES``).
        preset: the preset ``--preset auto`` takes (a key of ``maxl.train.presets.PRESETS``).
        default_hierarchy: the hierarchy taken without ``--hierarchy`` (None: no hierarchy).
        parse_hierarchy: for hierarchies named by a pattern rather than listed (CIFAR-100's levels
            ``'P-A'``): name -> the value :func:`maxl.data.load_dataset` understands (a
            :class:`Groups`, or CIFAR-100's ``(P, A or None)``); raises ValueError for a bad name.
            None: only ``hierarchies``.
        hierarchy_note: other hierarchies it takes, Markdown, for the docs and the help (code
            spans become quotes there), e.g. CIFAR-100's levels or a two-level ImageFolder's
            folders; ``""`` if none.
    """

    name: str
    description: str
    reader: Reader
    layout: str
    files: str
    channels: int | None
    image_size: int | None
    normalisation: tuple[float, float] | str
    class_names: tuple[str, ...] | None
    hierarchies: Mapping[str, Groups]
    default_backbone: str
    preset: str
    default_hierarchy: str | None = None
    parse_hierarchy: Callable[[str], object] | None = None
    hierarchy_note: str = ""

    def __post_init__(self):
        object.__setattr__(self, "hierarchies", types.MappingProxyType(dict(self.hierarchies)))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def needs_root(self) -> bool:
        """Whether the data set has files (under ``--data-root``)."""
        return bool(self.layout)

    def hierarchy(self, name: str | None):
        """The hierarchy called ``name`` (None: the default), as :func:`maxl.data.load_dataset` applies it.

        Returns:
            A :class:`Groups`, what ``parse_hierarchy`` returns, or None for no hierarchy.

        Raises:
            ValueError: a name the data set does not know (the message lists the allowed ones).
        """
        name = self.default_hierarchy if name is None else name
        if name is None:
            return None
        if name in self.hierarchies:
            return self.hierarchies[name]
        if self.parse_hierarchy is not None:
            return self.parse_hierarchy(name)
        raise ValueError(
            f"bad hierarchy {name!r} for {self.name}: allowed {(None, *self.hierarchies)}, or a "
            "hierarchy file (.json / .toml: primary class -> list of class names)"
        )


#: name -> spec of every data set :func:`maxl.data.load_dataset` reads, in the order of the docs.
DATASETS: dict[str, DatasetSpec] = {}


class _Names(Sequence):
    """The names of :data:`DATASETS` as a tuple-like sequence that follows later registrations."""

    def __getitem__(self, index):
        return tuple(DATASETS)[index]

    def __len__(self) -> int:
        return len(DATASETS)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(DATASETS))

    def __contains__(self, name) -> bool:
        return name in DATASETS

    def __repr__(self) -> str:
        return repr(tuple(DATASETS))


#: The registered names, in order (a live view: ``name in DATASET_NAMES``, ``", ".join(DATASET_NAMES)``).
DATASET_NAMES: Sequence[str] = _Names()


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add a data set to the registry: ``load_dataset(spec.name, ...)``, ``maxl train --dataset``,
    :func:`hierarchy_help` and :func:`datasets_table_markdown` then know it.

    Args:
        spec: the data set.
        replace: allow replacing a registered data set of the same name.

    Returns:
        ``spec``.

    Raises:
        ValueError: the name is taken (without ``replace``) or not a plain word; an empty
            description or one of several lines; a reader that is not callable; a bad channel
            count, image size or normalisation; a hierarchy that is not a :class:`Groups`, or
            (with ``class_names``) not a partition of the class names; a default hierarchy it
            does not know; an empty backbone or preset name.
    """
    problems = _problems(spec)
    if not replace and spec.name in DATASETS:
        problems.insert(0, f"the name {spec.name!r} is taken (pass replace=True to replace it)")
    if problems:
        raise ValueError(f"data set {spec.name!r}: " + "; ".join(problems))
    DATASETS[spec.name] = spec
    return spec


def _problems(spec: DatasetSpec) -> list[str]:
    found = []
    if not isinstance(spec.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", spec.name):
        found.append("the name must be a word of letters, digits and _ . + - (no ':' or blanks)")
    if not isinstance(spec.description, str) or not spec.description.strip() or "\n" in spec.description:
        found.append("the description must be one non-empty line")
    if not callable(spec.reader):
        found.append(f"the reader {spec.reader!r} is not callable")
    if not isinstance(spec.layout, str) or not isinstance(spec.files, str) or not spec.files.strip():
        found.append("layout must be a string and files a non-empty string")
    for what in ("channels", "image_size"):
        value = getattr(spec, what)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            found.append(f"{what} must be None or an int >= 1, got {value!r}")
    norm = spec.normalisation
    if norm != TRAINING_SPLIT and not (
        isinstance(norm, tuple) and len(norm) == 2 and all(isinstance(v, (int, float)) for v in norm) and norm[1] > 0
    ):
        found.append(f"normalisation must be (mean, std > 0) or {TRAINING_SPLIT!r}, got {norm!r}")
    if spec.class_names is not None and len(set(spec.class_names)) != len(spec.class_names):
        found.append("class_names repeat a name")
    for key, groups in spec.hierarchies.items():
        if not isinstance(groups, Groups):
            found.append(f"hierarchy {key!r} is a {type(groups).__name__}, not a maxl.data.user_hierarchy.Groups")
        elif spec.class_names is not None:
            try:
                parent_of_classes(groups, spec.class_names, spec.name)
            except ValueError as err:
                found.append(str(err))
    if spec.default_hierarchy is not None:
        try:
            spec.hierarchy(spec.default_hierarchy)
        except ValueError as err:
            found.append(f"the default hierarchy: {err}")
    if spec.parse_hierarchy is not None and not callable(spec.parse_hierarchy):
        found.append("parse_hierarchy must be callable")
    for what in ("default_backbone", "preset"):
        if not isinstance(getattr(spec, what), str) or not getattr(spec, what):
            found.append(f"{what} must be a non-empty name")
    return found


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a registered data set.

    Raises:
        ValueError: an unknown name (the message lists the registered ones).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


# --------------------------------------------------------------------------- docs and help
def _psi(groups: Groups) -> list[int]:
    return [len(m) for m in groups.members]


def _hierarchy_help_text(spec: DatasetSpec) -> str:
    parts = [" or ".join(f"'{k}'" for k in spec.hierarchies)] if spec.hierarchies else []
    if spec.hierarchy_note:
        parts.append(re.sub(r"`([^`]*)`", r"'\1'", spec.hierarchy_note))
    text = " or ".join(parts)
    if text and spec.default_hierarchy is not None:
        text += f" (default '{spec.default_hierarchy}')"
    return text


def hierarchy_help() -> str:
    """The help text of ``--hierarchy``: per data set its named hierarchies (data sets with the
    same ones together), then the hierarchy files that every data set takes. One line, plain text."""
    together: dict[str, list[str]] = {}
    for spec in DATASETS.values():
        text = _hierarchy_help_text(spec)
        if text:
            together.setdefault(text, []).append(spec.name)
    per_dataset = "; ".join(f"{'/'.join(names)} {text}" for text, names in together.items())
    return (
        f"class hierarchy: {per_dataset}; or a FILE.json / FILE.toml mapping each primary class to its class "
        "names (any data set)"
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def datasets_table_markdown() -> str:
    """The docs' table of data sets, Markdown: one row per registered data set with its
    ``--dataset`` name, its files under ``--data-root`` and its human hierarchies (with ψ, the
    auxiliary classes per primary class). No trailing newline."""
    rows = ["| `--dataset` | files under `--data-root` | human hierarchies (`--hierarchy`) |", "| --- | --- | --- |"]
    for spec in DATASETS.values():
        named = [f"`{k}` (ψ = {_psi(g)})" for k, g in spec.hierarchies.items()]
        hierarchies = "; ".join([*([", ".join(named)] if named else []), *filter(None, [spec.hierarchy_note])])
        if spec.default_hierarchy is not None:
            hierarchies += f" (default `{spec.default_hierarchy}`)"
        rows.append(f"| `{spec.name}` | {_cell(spec.files)} | {_cell(hierarchies or 'none')} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- the built-in readers
def _read_digits(root, *, download, cache_dir):
    from maxl.data.datasets import _load_digits

    return _load_digits()


def _idx_reader(name: str) -> Reader:
    def read(root, *, download, cache_dir):
        from maxl.data.readers import read_idx_dataset

        return read_idx_dataset(root, name, download)

    read.__name__ = read.__qualname__ = f"read_{name.replace('-', '_')}"
    return read


def _read_svhn(root, *, download, cache_dir):
    from maxl.data.readers import read_svhn

    return read_svhn(root, download)


def _read_stl10(root, *, download, cache_dir):
    from maxl.data.readers import read_stl10

    return read_stl10(root, download)


def _read_cifar10(root, *, download, cache_dir):
    from maxl.data.datasets import _load_cifar

    return _load_cifar(root, torchvision.datasets.CIFAR10, download)


def _read_cifar100(root, *, download, cache_dir):
    from maxl.data.datasets import _load_cifar100

    return _load_cifar100(root, download)


def _read_image_folder(root, *, download, cache_dir):
    from maxl.data.datasets import _load_image_folder

    return _load_image_folder(root, cache_dir)


def _cifar100_levels(text: str) -> tuple[int, int | None]:
    """CIFAR-100's ``'P-A'`` (primary level P, auxiliary level A) or ``'P'`` -> ``(P, A or None)``."""
    parts = str(text).split("-")
    valid = (
        1 <= len(parts) <= 2
        and all(p.isdigit() and int(p) in cifar100.LEVELS for p in parts)
        and (len(parts) == 1 or int(parts[0]) < int(parts[1]))
    )
    if not valid:
        raise ValueError(
            f"bad cifar100 hierarchy {text!r}: use 'P-A' (primary level P, auxiliary level A, P < A) "
            f"or 'P' (primary only), with levels in {cifar100.LEVELS}, e.g. '20-100' or '3-10'"
        )
    return int(parts[0]), (int(parts[1]) if len(parts) == 2 else None)


# --------------------------------------------------------------------------- the built-in data sets
def _grouping(name: str, primary: Sequence[str], members: Sequence[Sequence[str]], source: str | None = None):
    return {name: Groups(tuple(primary), tuple(tuple(m) for m in members), source or name)}


def _digit_groupings(names: Sequence[str]) -> dict[str, Groups]:
    """The two human hierarchies of the ten digits, ``names[d]`` being digit d."""
    return {
        **_grouping("even-odd", ("even", "odd"), (names[0::2], names[1::2])),
        **_grouping("low-high", ("0-4", "5-9"), (names[:5], names[5:])),
    }


_DIGITS = tuple(str(d) for d in range(10))
_ANIMAL_VEHICLE = _grouping(
    "animal-vehicle",
    cifar100.ANIMAL_VEHICLE_NAMES,
    (
        [n for n, v in zip(cifar100.CIFAR10_NAMES, cifar100.ANIMAL_VEHICLE_OF_CIFAR10) if v == 0],
        [n for n, v in zip(cifar100.CIFAR10_NAMES, cifar100.ANIMAL_VEHICLE_OF_CIFAR10) if v == 1],
    ),
    "animal-vehicle (the 10 CIFAR-10 classes)",
)
#: STL-10's classes in label order (the official class_names.txt).
STL10_NAMES: tuple[str, ...] = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
_IDX_FILES = "{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)"


class _Defaults(TypedDict):
    """DatasetSpec fields that several data sets share (a plain dict at run time)."""

    default_backbone: str
    preset: str


class _Images(_Defaults):
    channels: int
    image_size: int


_SMALL_GREY = _Images(channels=1, image_size=28, default_backbone="small-cnn", preset="mnist")
_RGB = _Defaults(default_backbone="vgg16", preset="rgb32")


def _emnist(split: str) -> DatasetSpec:
    names = tuple(torchvision.datasets.EMNIST.classes_split_dict[split])
    names = names[1:] if split == "letters" else names  # class 0, "N/A", has no images
    kinds = tuple(tuple(c for c in names if kind(c)) for kind in (str.isdigit, str.isupper, str.islower))
    hierarchies = (
        _digit_groupings(names)
        if split in ("digits", "mnist")
        else _grouping("digit-upper-lower", ("digit", "uppercase", "lowercase"), kinds)
        if all(kinds)
        else {}
    )
    files = f"EMNIST/raw/emnist-{split}-{{train,test}}-{{images-idx3,labels-idx1}}-ubyte(.gz)"
    return DatasetSpec(
        name=f"emnist-{split}",
        description=f"EMNIST's {split} split: {len(names)} classes of handwritten characters, 28×28 grey",
        reader=_idx_reader(f"emnist-{split}"),
        layout=files,
        files=f"`{files}` (images turned upright)",
        normalisation=TRAINING_SPLIT,
        class_names=names,
        hierarchies=hierarchies,
        **_SMALL_GREY,
    )


for _spec in [
    DatasetSpec(
        name="digits",
        description="scikit-learn's 1797 handwritten digits, 8×8 grey, split 1347 / 450; no files",
        reader=_read_digits,
        layout="",
        files="none (scikit-learn's 8×8 digits)",
        channels=1,
        image_size=8,
        normalisation=(0.3053, 0.3760),  # pixel mean / std of all 1797 images, values / 16
        class_names=_DIGITS,
        hierarchies=_digit_groupings(_DIGITS),
        default_backbone="tiny-cnn",
        preset="digits",
    ),
    DatasetSpec(
        name="mnist",
        description="MNIST handwritten digits, 28×28 grey (LeCun et al. 1998)",
        reader=_idx_reader("mnist"),
        layout=f"MNIST/raw/{_IDX_FILES}",
        files=f"`MNIST/raw/{_IDX_FILES}`",
        normalisation=(0.1307, 0.3081),  # the usual MNIST statistics (torchvision / PyTorch examples)
        class_names=tuple(torchvision.datasets.MNIST.classes),
        hierarchies=_digit_groupings(torchvision.datasets.MNIST.classes),
        **_SMALL_GREY,
    ),
    DatasetSpec(
        name="fashionmnist",
        description="Fashion-MNIST clothing pictures, 28×28 grey (Xiao et al. 2017)",
        reader=_idx_reader("fashionmnist"),
        layout=f"FashionMNIST/raw/{_IDX_FILES}",
        files=f"`FashionMNIST/raw/{_IDX_FILES}`",
        normalisation=TRAINING_SPLIT,
        class_names=tuple(torchvision.datasets.FashionMNIST.classes),
        hierarchies=_grouping(
            "clothes-shoes-bags",
            ("clothes", "shoes", "bags"),
            (
                ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Shirt"),
                ("Sandal", "Sneaker", "Ankle boot"),
                ("Bag",),
            ),
        ),
        **_SMALL_GREY,
    ),
    DatasetSpec(
        name="kmnist",
        description="Kuzushiji-MNIST cursive Japanese characters, 28×28 grey (Clanuwat et al. 2018)",
        reader=_idx_reader("kmnist"),
        layout=f"KMNIST/raw/{_IDX_FILES}",
        files=f"`KMNIST/raw/{_IDX_FILES}`",
        normalisation=TRAINING_SPLIT,
        class_names=tuple(torchvision.datasets.KMNIST.classes),
        hierarchies={},
        **_SMALL_GREY,
    ),
    *(_emnist(split) for split in torchvision.datasets.EMNIST.splits),
    DatasetSpec(
        name="svhn",
        description="SVHN's cropped house-number digits, 32×32 RGB (Netzer et al. 2011)",
        reader=_read_svhn,
        layout="train_32x32.mat and test_32x32.mat (the official cropped-digits files)",
        files="`train_32x32.mat`, `test_32x32.mat`",
        channels=3,
        image_size=32,
        normalisation=TRAINING_SPLIT,
        class_names=_DIGITS,
        hierarchies=_digit_groupings(_DIGITS),
        **_RGB,
    ),
    DatasetSpec(
        name="cifar10",
        description="CIFAR-10's 10 classes of small pictures, 32×32 RGB (Krizhevsky 2009)",
        reader=_read_cifar10,
        layout="cifar-10-batches-py/ (the official python version)",
        files="`cifar-10-batches-py/` (the official python version)",
        channels=3,
        image_size=32,
        normalisation=(0.5, 0.2),  # MAXL's reference implementation
        class_names=cifar100.CIFAR10_NAMES,
        hierarchies=_ANIMAL_VEHICLE,
        **_RGB,
    ),
    DatasetSpec(
        name="cifar100",
        description="CIFAR-100's 100 classes in 20 superclasses, 32×32 RGB (Krizhevsky 2009)",
        reader=_read_cifar100,
        layout="cifar-100-python/ (the official python version)",
        files="`cifar-100-python/` (the official python version)",
        channels=3,
        image_size=32,
        normalisation=(0.5, 0.2),
        class_names=cifar100.FINE_NAMES,
        hierarchies={},
        default_hierarchy="20-100",
        parse_hierarchy=_cifar100_levels,
        hierarchy_note="levels `P-A` (primary P, auxiliary A) or `P` of 3/10/20/100 classes",
        **_RGB,
    ),
    DatasetSpec(
        name="stl10",
        description="STL-10's 10 classes of labelled pictures, 96×96 RGB (Coates et al. 2011)",
        reader=_read_stl10,
        layout="stl10_binary/ with train_X.bin, train_y.bin, test_X.bin, test_y.bin, "
        "unlabeled_X.bin, class_names.txt (the official binary release, extracted)",
        files="`stl10_binary/` (train, test, unlabeled_X.bin, class_names.txt), 96×96; `--resize 32` to shrink",
        channels=3,
        image_size=96,
        normalisation=TRAINING_SPLIT,
        class_names=STL10_NAMES,
        hierarchies=_grouping(
            "animal-vehicle",
            cifar100.ANIMAL_VEHICLE_NAMES,
            (("bird", "cat", "deer", "dog", "horse", "monkey"), ("airplane", "car", "ship", "truck")),
        ),
        **_RGB,
    ),
    DatasetSpec(
        name="imagefolder",
        description="your own pictures in class folders, one image size throughout",
        reader=_read_image_folder,
        layout="train/<class>/*.jpg|png and test/<class>/*.jpg|png, or train/<primary>/<auxiliary>/*.jpg|png "
        "and test/<primary>/<auxiliary>/*.jpg|png",
        files="`train/<class>/*`, `test/<class>/*`, or two-level `train/<primary>/<auxiliary>/*`",
        channels=None,
        image_size=None,
        normalisation=(0.5, 0.2),
        class_names=None,
        hierarchies=_ANIMAL_VEHICLE,
        hierarchy_note="a two-level tree's folders (`train/<primary>/<auxiliary>/`)",
        **_RGB,
    ),
]:
    register_dataset(_spec)
del _spec
