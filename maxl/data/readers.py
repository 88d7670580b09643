"""Readers of torchvision's small-image data sets in their real on-disk formats.

Each reader checks that the files are where torchvision looks for them (naming every missing
file and the expected layout), lets torchvision's own data set class read them, and returns
``(images uint8 [N, C, H, W], labels int64 [N])`` per split and the class names.

========== ============================================================
reader     data sets
========== ============================================================
IDX        mnist, fashionmnist, kmnist, emnist-SPLIT (SPLIT byclass, bymerge,
           balanced, letters, digits, mnist): ``<Folder>/raw/`` IDX files
SVHN       svhn: ``{train,test}_32x32.mat`` (read with scipy.io)
STL-10     stl10: ``stl10_binary/``
========== ============================================================

The files each data set needs, and the layout its messages name, are in its spec in
:mod:`maxl.data.registry` (``DatasetSpec.layout``).

The IDX files may be gzipped as distributed: they are extracted next to the ``.gz`` once (as
torchvision's own ``download`` would, but without its network access). SVHN and STL-10 files
must pass torchvision's md5 check of the official files; STL-10's check includes
``unlabeled_X.bin``, which maxl does not otherwise use.

References:
    LeCun, Cortes, Burges. The MNIST database of handwritten digits, 1998.
    Xiao, Rasul, Vollgraf. "Fashion-MNIST". arXiv:1708.07747, 2017.
    Clanuwat et al. "Deep Learning for Classical Japanese Literature" (KMNIST). arXiv:1812.01718, 2018.
    Cohen, Afshar, Tapson, van Schaik. "EMNIST: an extension of MNIST to handwritten letters".
    arXiv:1702.05373, 2017.
    Netzer et al. "Reading Digits in Natural Images with Unsupervised Feature Learning" (SVHN).
    NIPS Workshop 2011.
    Coates, Lee, Ng. "An Analysis of Single-Layer Networks in Unsupervised Feature Learning"
    (STL-10). AISTATS 2011.
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import shutil
import uuid
import zlib
from pathlib import Path

import torch
import torchvision
from torch import Tensor

from maxl.data.registry import DATASETS, STL10_NAMES

__all__ = [
    "IDX_DATASETS",
    "EMNIST_SPLITS",
    "read_idx_dataset",
    "read_svhn",
    "read_stl10",
    "atomic_write",
    "WriteError",
    "gunzip",
]

EMNIST_SPLITS: tuple[str, ...] = torchvision.datasets.EMNIST.splits
#: Data sets stored as IDX files, as torchvision's MNIST family reads them.
IDX_DATASETS: tuple[str, ...] = ("mnist", "fashionmnist", "kmnist", *(f"emnist-{s}" for s in EMNIST_SPLITS))
_IDX_CLASS = {
    "mnist": torchvision.datasets.MNIST,
    "fashionmnist": torchvision.datasets.FashionMNIST,
    "kmnist": torchvision.datasets.KMNIST,
}
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

Split = tuple[Tensor, Tensor]  # images uint8 [N, C, H, W], labels int64 [N]


class WriteError(OSError):
    """A file could not be written (disk full, read-only folder, ...); its previous version, if
    any, is untouched. ``errno`` and ``strerror`` are the operating system's, ``path`` the file."""

    @property
    def path(self) -> Path:
        return Path(self.filename)

    def __str__(self) -> str:
        reason = self.strerror
        if self.errno is not None and self.errno in errno.errorcode:
            reason = f"{self.strerror} ({errno.errorcode[self.errno]})"
        kept = f"; the previous {self.path.name} is intact" if self.path.exists() else ""
        return f"could not write {self.path}: {reason}{kept}"


_ERRNO_OF_STRERROR = {os.strerror(code): code for code in errno.errorcode}


def _os_error(err: Exception, folder: Path) -> OSError | None:
    """The operating system's error behind a failed write, or None if it was none.

    ``torch.save`` to a path raises a RuntimeError without errno ("file write failed",
    "unexpected pos ..."): then the strerror it names, else what the folder shows (gone,
    read-only, full), stands in.
    """
    for e in (err, err.__cause__, err.__context__):
        if isinstance(e, OSError) and e.errno is not None:
            return e
    if not isinstance(err, RuntimeError):
        return None
    named = re.search(r"strerror: (.+?)\s*$", str(err))
    if named and named.group(1) in _ERRNO_OF_STRERROR:
        code = _ERRNO_OF_STRERROR[named.group(1)]
    else:
        try:
            fs = os.statvfs(folder)
        except OSError as gone:
            return gone
        if fs.f_flag & os.ST_RDONLY:
            code = errno.EROFS
        elif not os.access(folder, os.W_OK):
            code = errno.EACCES
        elif fs.f_bavail * fs.f_frsize < 1 << 20:  # the failed temporary file still fills it
            code = errno.ENOSPC
        else:
            return None
    return OSError(code, os.strerror(code))


def atomic_write(dst: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``dst``, then rename it to ``dst``.

    The rename is atomic, so a concurrent reader sees either no file or the whole file. On
    any failure the temporary file is removed and ``dst`` is left as it was.

    Raises:
        WriteError: the operating system refused the write or the rename (e.g. no space
            left, read-only folder), also where ``write`` (``torch.save``) reported it as a
            RuntimeError; it names ``dst`` and the OS error. Other errors of ``write``
            propagate unchanged.
    """
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, dst)
    except (OSError, RuntimeError) as err:
        cause = _os_error(err, dst.parent)
        if cause is None or isinstance(err, WriteError):
            raise
        raise WriteError(cause.errno, cause.strerror, str(dst)) from err
    finally:
        if os.path.lexists(tmp):  # (unlink of a missing file fails in a read-only file system)
            tmp.unlink()


def gunzip(src: Path, dst: Path) -> None:
    """Extract ``src`` (gzip) to ``dst`` atomically."""

    def write(tmp: Path) -> None:
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)

    atomic_write(dst, write)


def _layout(name: str) -> str:
    """What ``<root>`` holds for data set ``name``, from its spec (:mod:`maxl.data.registry`)."""
    return DATASETS[name].layout


def _idx_files(name: str) -> tuple[str, str, tuple[str, ...]]:
    """(torchvision folder, display name, the four IDX file names) of an IDX data set."""
    if name.startswith("emnist-"):
        split = name.removeprefix("emnist-")
        files = tuple(
            f"emnist-{split}-{s}-{k}-ubyte" for s in ("train", "test") for k in ("images-idx3", "labels-idx1")
        )
        return "EMNIST", f"EMNIST ({split})", files
    folder = _IDX_CLASS[name].__name__
    return folder, folder, _MNIST_FILES


def read_idx_dataset(root: Path, name: str, download: bool = False) -> tuple[Split, Split, list[str]]:
    """Read MNIST, Fashion-MNIST, KMNIST or an EMNIST split with torchvision's class.

    Args:
        root: the folder that holds ``<Folder>/raw/`` (see the module's table).
        name: one of :data:`IDX_DATASETS`.
        download: let torchvision download missing files (needs network).

    Returns:
        ``(train, test, class_names)``; train and test are ``(images uint8 [N, 1, 28, 28],
        labels int64 [N])``. EMNIST images are transposed to upright (its files store them
        transposed, Cohen et al. 2017); EMNIST ``letters`` labels 1..26 become 0..25 (its class
        0, "N/A", has no images).

    Raises:
        FileNotFoundError: files missing (the message names them, the folder and the layout).
        ValueError: truncated or corrupt files.
        OSError: a .gz cannot be extracted next to itself (read-only folder).
    """
    folder, shown, files = _idx_files(name)
    raw = root / folder / "raw"
    # torchvision reads the uncompressed IDX files and would only gunzip them inside download(),
    # after an md5 check. Extract any .gz ourselves so that download=False works offline.
    for base in files:
        if not (raw / base).is_file() and (raw / f"{base}.gz").is_file():
            try:
                gunzip(raw / f"{base}.gz", raw / base)
            except (EOFError, gzip.BadGzipFile, zlib.error) as err:  # before OSError: BadGzipFile is one
                raise ValueError(
                    f"{raw / base}.gz is truncated or corrupt ({err}): replace it with the official file"
                ) from err
            except OSError as err:
                message = f"cannot extract {base}.gz in {raw} ({err}); copy the {folder} folder somewhere writable"
                raise OSError(message) from err
    missing = [f"{b}(.gz)" for b in files if not (raw / b).is_file()]
    if missing and not download:
        raise FileNotFoundError(
            f"{shown} not found: missing {', '.join(missing)} in {raw}. maxl expects <root>/{_layout(name)}, i.e. "
            f"{', '.join(f'{b}(.gz)' for b in files)}. Pass download=True (--download) to fetch them, or copy "
            f"the official files into {raw}."
        )
    splits = []
    for train in (True, False):
        try:
            if name.startswith("emnist-"):
                ds = torchvision.datasets.EMNIST(
                    root, split=name.removeprefix("emnist-"), train=train, download=download
                )
            else:
                ds = _IDX_CLASS[name](root, train=train, download=download)
        except (RuntimeError, ValueError, AssertionError) as err:  # what torchvision's IDX reader raises
            names = ", ".join(files[:2] if train else files[2:])
            raise ValueError(
                f"cannot read {shown}'s {names} in {raw}: truncated or corrupt ({err!r}); "
                "replace them with the official files"
            ) from err
        images, labels = ds.data.unsqueeze(1), ds.targets.long()  # [N, 28, 28] -> [N, 1, 28, 28]
        if name.startswith("emnist-"):
            images = images.transpose(2, 3)
        splits.append((images.contiguous(), labels))
    classes = [str(c) for c in ds.classes]
    if name == "emnist-letters":  # class 0 is "N/A" and holds no image
        if any(int(labels.min()) < 1 for _, labels in splits):
            raise ValueError(f"EMNIST letters: label 0 ('N/A') found in {raw}; expected labels 1..26")
        splits = [(images, labels - 1) for images, labels in splits]
        classes = classes[1:]
    return splits[0], splits[1], classes


def _open_splits(cls, root: Path, folder: Path, download: bool) -> list:
    """torchvision's ``cls(root, split=...)`` for ``"train"`` then ``"test"``.

    Raises:
        ValueError: torchvision rejects the files in ``folder`` (its md5 check).
    """
    splits = []
    for split in ("train", "test"):
        try:
            splits.append(cls(root, split=split, download=download))
        except RuntimeError as err:
            raise ValueError(
                f"torchvision rejected the {cls.__name__} files in {folder}: they exist but fail its "
                f"md5 check (corrupted, or not the official release): {err}"
            ) from err
    return splits


def read_svhn(root: Path, download: bool = False) -> tuple[Split, Split, list[str]]:
    """Read SVHN's cropped digits (``train_32x32.mat``, ``test_32x32.mat``) with torchvision's class.

    Returns:
        ``(train, test, class_names)``, images uint8 [N, 3, 32, 32]; the digit 0 (label 10 in
        the files) has label 0, as torchvision maps it.

    Raises:
        FileNotFoundError: a file is missing (named, with the expected layout).
        ValueError: the files fail torchvision's md5 check.
    """
    cls = torchvision.datasets.SVHN
    files = [cls.split_list[s][1] for s in ("train", "test")]
    missing = [f for f in files if not (root / f).is_file()]
    if missing and not download:
        raise FileNotFoundError(
            f"SVHN not found: missing {', '.join(missing)} in {root}. maxl expects <root>/"
            f"{_layout('svhn')}. Pass download=True (--download) to fetch them."
        )
    splits = [
        (torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels).long())
        for ds in _open_splits(cls, root, root, download)
    ]
    return splits[0], splits[1], [str(d) for d in range(10)]


def read_stl10(root: Path, download: bool = False) -> tuple[Split, Split, list[str]]:
    """Read STL-10's labelled images (``stl10_binary/``) with torchvision's class.

    Returns:
        ``(train, test, class_names)``, images uint8 [N, 3, 96, 96] (5000 train, 8000 test in
        the official release), names from ``class_names.txt`` (the official ten if absent).

    Raises:
        FileNotFoundError: a file is missing (named, with the expected layout).
        ValueError: the files fail torchvision's md5 check.
    """
    cls = torchvision.datasets.STL10
    folder = root / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        raise FileNotFoundError(
            f"STL-10 not found: missing {', '.join(missing)} in {folder}. maxl expects <root>/{_layout('stl10')} "
            f"(torchvision's STL10 checks unlabeled_X.bin too). Pass download=True (--download) to fetch them."
        )
    opened = _open_splits(cls, root, folder, download)
    splits = [(torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels.astype("int64"))) for ds in opened]
    names = [n.strip() for n in getattr(opened[-1], "classes", STL10_NAMES) if n.strip()]
    return splits[0], splits[1], names
