"""Data sets for maxl: real images, held in memory as uint8 tensors, with optional class hierarchies.

Every source (scikit-learn's digits, torchvision's MNIST family / CIFAR-10 / CIFAR-100 / SVHN /
STL-10 readers (:mod:`maxl.data.readers`), any ImageFolder tree) is read once with its usual loading
code and converted to one :class:`ImageTensorDataset`, which yields ``(image float32 [C, H, W], primary label, index)``.
The index is the sample's position in the data set, so that per-sample auxiliary labels can be
kept in a tensor next to it. :func:`load_dataset` returns both splits and the metadata a model
needs in a :class:`DataBundle`, including the human auxiliary labels when the data set has a
class hierarchy (CIFAR-100's 4 levels, CIFAR-10's animal / vehicle, ..., a user's hierarchy file or
two-level ImageFolder, :mod:`maxl.data.user_hierarchy`), block-ordered as MAXL's mask expects
(see :mod:`maxl.data.cifar100`).

Preprocessing follows the MAXL reference implementation for CIFAR (random crop 32 with padding 4,
horizontal flip, normalisation with mean 0.5 and std 0.2 per channel); MNIST uses its usual
mean / std and no augmentation. What each data set is (its files, reader, image size,
normalisation, human hierarchies) is stated once, in :mod:`maxl.data.registry`.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

import torch
import torchvision
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from maxl.data import cifar100
from maxl.data.augment import BatchAugment
from maxl.data.readers import atomic_write
from maxl.data.registry import DATASET_NAMES, TRAINING_SPLIT, DatasetSpec, dataset_spec
from maxl.data.user_hierarchy import (
    Groups,
    TwoLevelImageFolder,
    check_primary_images,
    is_hierarchy_file,
    is_two_level,
    parent_of_classes,
    read_hierarchy_file,
)

try:  # deprecated in torchvision 0.29, to be removed: then images are decoded with PIL
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
except ImportError:  # pragma: no cover
    decode_jpeg = None

__all__ = [
    "DATASETS",
    "DataBundle",
    "ImageTensorDataset",
    "make_transform",
    "stratified_subset",
    "load_dataset",
]

#: Names accepted by :func:`load_dataset`: those of :data:`maxl.data.registry.DATASETS`, in order (a live
#: view: a data set added by :func:`maxl.data.registry.register_dataset` is in it).
DATASETS = DATASET_NAMES
_CACHE_VERSION = 1  # bump when the cache layout changes


@dataclass
class DataBundle:
    """Train and test sets of one data set, with what a model and a trainer need to know.

    Attributes:
        train: training set, yields ``(image float32 [C, H, W], primary label, index)``.
        test: test set, same items.
        num_primary: number of primary classes.
        primary_names: their names, in label order.
        in_channels: image channels C.
        image_size: image height H (= width W for all built-in data sets).
        psi: ψ of the human hierarchy (auxiliary classes per primary class), None if there is none.
        aux_train: int64 [N_train], human auxiliary label of each training sample, block-ordered
            (primary class i owns ``sum(psi[:i]) .. sum(psi[:i+1]) - 1``); None without hierarchy.
        aux_test: int64 [N_test], the same for the test set.
        aux_names: names of the auxiliary classes in block order; None without hierarchy.
        name: data set name (one of ``DATASETS``), with the hierarchy if any, e.g. ``"cifar100:20-100"``.
        val: validation set held out from the training images (``val_subset``), un-augmented;
            None without one.
        aux_val: human auxiliary labels of the validation set, as ``aux_train``.
        weight_set: images held out from the training images for a meta-learned weighting's
            outer loss (Auto-λ, AuxiLearn: :func:`maxl.train.build.hold_out_for_weights`), never
            trained on, un-augmented; None without one (and with ``aux.weight_split = 0``, whose
            outer loss is on the training images themselves).
        weight_index: int64 [N_weight], sorted positions of ``weight_set``'s images among the
            training images before the hold-out; ``train`` is the rest of them, in order (less
            ``arch_set`` if any). None without a held-out split.
        arch_set: split B of an architecture search (AdaShare's policy, MTL-NAS's gates), held out
            from the training images after ``weight_set`` (:func:`maxl.train.build.hold_out_for_architecture`),
            as :func:`maxl.analysis.run.load_run` rebuilds it; None otherwise.
    """

    train: Dataset
    test: Dataset
    num_primary: int
    primary_names: list[str]
    in_channels: int
    image_size: int
    psi: list[int] | None
    aux_train: Tensor | None
    aux_test: Tensor | None
    aux_names: list[str] | None
    name: str
    val: Dataset | None = None
    aux_val: Tensor | None = None
    weight_set: Dataset | None = None
    weight_index: Tensor | None = None
    arch_set: Dataset | None = None


class ImageTensorDataset(Dataset):
    """Images and labels held in memory as tensors.

    Args:
        images: uint8 [N, C, H, W].
        labels: int64 [N], class labels.
        transform: callable on one uint8 [C, H, W] image returning float32 [C, H, W]; None
            scales to [0, 1] only.
        batch_transform: the same transform for whole batches (:class:`maxl.data.augment.BatchAugment`),
            or None. With one, the trainer gathers uint8 batches (:meth:`batch`) and transforms
            them on its device; ``dataset[i]`` keeps the per-image ``transform``.

    Items are ``(image float32 [C, H, W], label int, index int)``, index being the position in
    this data set.

    Raises:
        ValueError: if the dtypes or shapes do not match.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform=None, batch_transform: BatchAugment | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {list(images.shape)}")
        if labels.dim() != 1 or len(labels) != len(images):
            raise ValueError(f"labels must be [N] with N = {len(images)}, got {list(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.transform = transform
        self.batch_transform = batch_transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        image = self.images[index]
        image = self.transform(image) if self.transform is not None else image.float().div(255)
        return image, int(self.labels[index]), index

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The untransformed images of ``indices`` in one gather: ``(uint8 [B, C, H, W], labels
        int64 [B], indices int64 [B])``, for :attr:`batch_transform`."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return self.images.index_select(0, indices), self.labels.index_select(0, indices), indices


def make_transform(
    image_size: int | tuple[int, int], mean, std, augment: bool, padding_mode: str = "constant"
) -> v2.Compose:
    """Transform of one uint8 [C, H, W] image to a normalised float32 [C, H, W] image.

    Args:
        image_size: H (square) or (H, W), the size of the random crop.
        mean: per-channel means of the [0, 1]-scaled images.
        std: per-channel standard deviations.
        augment: add MAXL's CIFAR augmentation: random crop with 4 pixels of padding and a
            random horizontal flip (as in the reference implementation).
        padding_mode: how the crop pads: ``"constant"`` (zeros, the reference) or ``"reflect"``.

    Returns:
        A ``torchvision.transforms.v2.Compose``.
    """
    steps = (
        [v2.RandomCrop(image_size, padding=4, padding_mode=padding_mode), v2.RandomHorizontalFlip()] if augment else []
    )
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def stratified_subset(labels: Tensor, size: int, seed: int = 0) -> Tensor:
    """Deterministic class-stratified random subset.

    Each class gets ``size * n_c / N`` samples, rounded by largest remainder (ties to the lower
    class index), drawn without replacement with a generator seeded by ``seed``.

    Args:
        labels: int64 [N], class labels.
        size: subset size, 1..N.
        seed: random seed.

    Returns:
        int64 [size], sorted indices into ``labels``.

    Raises:
        ValueError: if ``size`` is not in 1..N.
    """
    n = len(labels)
    if not 1 <= size <= n:
        raise ValueError(f"subset size must be in 1..{n} (the data set size), got {size}")
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * size / n
    quota = exact.floor().long()
    short = size - int(quota.sum())
    by_remainder = torch.sort(quota.double() - exact, stable=True).indices  # largest remainder first
    quota[by_remainder[:short]] += 1
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for c, k in zip(classes.tolist(), quota.tolist()):
        members = (labels == c).nonzero().squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(picks).sort().values


# --------------------------------------------------------------------------- sources
class _Split(NamedTuple):
    images: Tensor  # uint8 [N, C, H, W]
    labels: Tensor  # int64 [N], the finest labels of the source


def _load_digits() -> tuple[_Split, _Split, list[str]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # 1797 images, 8x8, values 0..16; shipped with scikit-learn
    images = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    train, test = train_test_split(range(len(labels)), test_size=450, random_state=0, stratify=digits.target)
    train, test = torch.tensor(train), torch.tensor(test)
    names = [str(d) for d in range(10)]
    return _Split(images[train], labels[train]), _Split(images[test], labels[test]), names


def _load_cifar(root: Path, cls, download: bool) -> tuple[_Split, _Split, list[str]]:
    """CIFAR-10 / -100 through torchvision, which checks the official md5 of every file."""
    folder = root / cls.base_folder
    files = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        raise FileNotFoundError(
            f"{cls.__name__} not found: missing {', '.join(missing)} in {folder} (expected files: "
            f"{', '.join(files)}). Pass download=True (--download) to fetch them, or extract the "
            f"official {cls.filename} (python version) into {root}."
        )
    splits = []
    for train in (True, False):
        try:
            ds = cls(root, train=train, download=download)
        except RuntimeError as err:
            raise ValueError(
                f"torchvision rejected the {cls.__name__} files in {folder}: they exist but fail its md5 "
                f"check (corrupted, or not the official python-version release): {err}"
            ) from err
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # [N, H, W, C] -> [N, C, H, W]
        splits.append(_Split(images, torch.tensor(ds.targets, dtype=torch.int64)))
    return splits[0], splits[1], list(ds.classes)


def _load_cifar100(root: Path, download: bool) -> tuple[_Split, _Split, list[str]]:
    """CIFAR-100 through torchvision, its class names and coarse labels checked against :mod:`maxl.data.cifar100`."""
    cls = torchvision.datasets.CIFAR100
    train, test, class_names = _load_cifar(root, cls, download)
    if class_names != list(cifar100.FINE_NAMES):
        raise ValueError(
            f"{root / cls.base_folder / 'meta'}: fine class names differ from maxl.data.cifar100.FINE_NAMES"
        )
    for split, part in (("train", train), ("test", test)):
        _check_cifar100_coarse(root / cls.base_folder, split, part.labels)
    return train, test, class_names


def _check_cifar100_coarse(folder: Path, split: str, fine: Tensor) -> None:
    """torchvision keeps only the fine labels: check the pickle's coarse labels against our table."""
    with open(folder / split, "rb") as f:
        coarse = torch.tensor(pickle.load(f, encoding="latin1")["coarse_labels"], dtype=torch.int64)
    if not torch.equal(coarse, cifar100.level_labels(fine, 20)):
        raise ValueError(f"coarse labels in {folder / split} disagree with maxl.data.cifar100.COARSE_OF_FINE")


def _default_cache_dir(root: Path) -> Path:
    if os.access(root, os.W_OK):
        return root / ".maxl-cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "maxl"


def _load_image_folder(root: Path, cache_dir: Path | None) -> tuple[_Split, _Split, list[str], Groups | None]:
    """An ImageFolder tree, flat (``split/<class>/``) or two-level (``split/<primary>/<aux>/``): the
    splits, the class names (``primary/aux`` for a two-level tree) and the folders' hierarchy
    (None for a flat tree)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir(root)
    for folder in (root / "train", root / "test"):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"imagefolder: {folder} not found; expected <root>/train/<class>/<image> "
                f"and <root>/test/<class>/<image>"
            )
    two_level = [is_two_level(root / split) for split in ("train", "test")]
    if two_level[0] != two_level[1]:
        kinds = ["two-level (<primary>/<auxiliary>/)" if t else "flat (<class>/)" for t in two_level]
        raise ValueError(
            f"imagefolder: {root / 'train'} is {kinds[0]} but {root / 'test'} is {kinds[1]}; "
            "train and test need the same class folders"
        )
    reader = TwoLevelImageFolder if two_level[0] else torchvision.datasets.ImageFolder
    splits, classes = [], None
    for split in ("train", "test"):
        folder = root / split
        ds = reader(folder)  # scans the tree; no image is opened here
        if classes is not None and ds.classes != classes:
            only_train = sorted(set(classes) - set(ds.classes))
            only_test = sorted(set(ds.classes) - set(classes))
            raise ValueError(
                f"imagefolder: train and test have different classes: only in train {only_train}, only "
                f"in test {only_test}; train and test need the same class folders"
            )
        classes = ds.classes
        splits.append(_cached_decode(folder, ds.samples, cache_dir))
    assert classes is not None  # set by the loop
    return splits[0], splits[1], classes, (ds.groups if two_level[0] else None)


def _cached_decode(folder: Path, samples: list[tuple[str, int]], cache_dir: Path) -> _Split:
    """Decode an ImageFolder's images once; later calls read a .pt cache keyed on the files' stats."""
    key = hashlib.sha256(f"{_CACHE_VERSION}\0{folder.resolve()}\0{len(samples)}\n".encode())
    prefix = os.path.join(folder, "")
    for path, label in samples:  # any added, removed, renamed, relabelled or touched file changes the key
        stat = os.stat(path)
        key.update(f"{path.removeprefix(prefix)}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    cache = cache_dir / f"{folder.parent.name}-{folder.name}-{key.hexdigest()[:24]}.pt"
    if cache.is_file():
        try:
            data = torch.load(cache, weights_only=True)
            if len(data["images"]) != len(samples) or len(data["labels"]) != len(samples):
                raise ValueError(f"holds {len(data['labels'])} images, the folder {len(samples)}")
            return _Split(data["images"], data["labels"])
        except Exception as err:  # a damaged cache is rebuilt, never trusted
            warnings.warn(f"ignoring unreadable cache {cache}: {err}", stacklevel=3)
    split = _Split(_decode_images([p for p, _ in samples], folder), torch.tensor([lab for _, lab in samples]))
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda tmp: torch.save({"images": split.images, "labels": split.labels}, tmp))
    except OSError as err:
        warnings.warn(f"could not write the image cache in {cache_dir}: {err}", stacklevel=3)
    return split


def _decode_images(paths: list[str], folder: Path) -> Tensor:
    """Decode image files to uint8 [N, C, H, W]; grey (C=1) if the first image is grey, else RGB."""
    with Image.open(paths[0]) as first:
        grey = first.mode in ("1", "L", "LA", "I", "I;16", "F")
    images: list[Tensor | None] = [None] * len(paths)
    if decode_jpeg is not None:
        # torchvision.io's decoders are deprecated since 0.29 (TorchCodec replaces them) but are
        # ~5x faster than PIL on small JPEGs when given a batch; PIL is the fallback.
        mode = ImageReadMode.GRAY if grey else ImageReadMode.RGB
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
            data = [torch.frombuffer(bytearray(_read_bytes(p)), dtype=torch.uint8) for p in paths]
            jpegs = [i for i, d in enumerate(data) if d[:2].tolist() == [0xFF, 0xD8]]
            for start in range(0, len(jpegs), 4096):
                chunk = jpegs[start : start + 4096]
                try:
                    decoded = decode_jpeg([data[i] for i in chunk], mode=mode)
                except RuntimeError:  # a damaged file in the chunk: decode one by one below
                    decoded = [None] * len(chunk)
                for i, image in zip(chunk, decoded):
                    images[i] = image
            for i in (i for i, image in enumerate(images) if image is None):
                try:
                    images[i] = decode_image(data[i], mode=mode)
                except RuntimeError:  # a format torchvision.io cannot read (BMP, TIFF, ...)
                    pass
    for i in (i for i, image in enumerate(images) if image is None):
        try:
            with Image.open(paths[i]) as pil:
                images[i] = v2.functional.pil_to_tensor(pil.convert("L" if grey else "RGB"))
        except OSError as err:  # PIL's UnidentifiedImageError, truncated files
            raise ValueError(f"imagefolder: cannot decode the image {paths[i]} ({err}): remove or replace it") from err
    decoded_all = cast("list[Tensor]", images)  # cast: every None was decoded above, or it raised
    first_size = decoded_all[0].shape[1:]
    odd = next((i for i, image in enumerate(decoded_all) if image.shape[1:] != first_size), None)
    if odd is not None:
        raise ValueError(
            f"imagefolder: images in {folder} differ in size ({paths[0]} is {tuple(first_size)}, {paths[odd]} is "
            f"{tuple(decoded_all[odd].shape[1:])}); maxl does not resize images: resize the tree to one size first"
        )
    return torch.stack(decoded_all)


def _pixel_stats(images: Tensor, chunk: int = 512) -> tuple[float, float]:
    """Mean and standard deviation of all pixels of uint8 [N, C, H, W] images scaled to [0, 1]
    (over every channel together), accumulated in float64 chunk by chunk."""
    total = squares = 0.0
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].double().div_(255)
        total += float(x.sum())
        squares += float(x.square().sum())
    n = images.numel()
    mean = total / n
    return mean, max((squares / n - mean * mean), 1e-12) ** 0.5


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# --------------------------------------------------------------------------- hierarchy
def _parse_hierarchy(spec: DatasetSpec, hierarchy: str | os.PathLike | None):
    """Validate ``hierarchy`` for the data set ``spec``: a :class:`Groups` for a hierarchy file or a
    named grouping of class names, (P, A or None) levels for CIFAR-100, None for no hierarchy."""
    if is_hierarchy_file(hierarchy):
        return read_hierarchy_file(hierarchy)
    if hierarchy is not None and (os.sep in str(hierarchy) or Path(str(hierarchy)).is_file()):
        raise ValueError(f"hierarchy {hierarchy!r}: a hierarchy file must end in .json or .toml")
    # cast: no file, so a hierarchy's name (a path-like value is passed on unchanged and looked up as one)
    return spec.hierarchy(cast("str | None", hierarchy))


def _apply_hierarchy(spec, labels: Tensor, class_names: list[str], what: str = "the data set"):
    """Source labels -> (primary [N], aux [N] or None, primary_names, psi, aux_names)."""
    if spec is None:
        return labels, None, list(class_names), None, None
    if isinstance(spec, Groups):  # a hierarchy file, a two-level tree's folders, a named grouping
        parent_of = parent_of_classes(spec, class_names, what)
        primary, aux, psi = cifar100.grouped_labels(labels, parent_of)
        aux_names = [class_names[c] for c in cifar100.block_order(parent_of)]
        if spec.short_names:
            aux_names = [n.rsplit("/", 1)[-1] for n in aux_names]
        return primary, aux, list(spec.primary_names), psi, aux_names
    primary_level, aux_level = spec  # CIFAR-100 levels
    if aux_level is None:
        return cifar100.level_labels(labels, primary_level), None, list(cifar100.level_names(primary_level)), None, None
    primary, aux = cifar100.hierarchical_aux_labels(labels, primary_level, aux_level)
    psi = cifar100.psi_between(primary_level, aux_level)
    aux_names = cifar100.aux_class_names(primary_level, aux_level)
    return primary, aux, list(cifar100.level_names(primary_level)), psi, aux_names


# --------------------------------------------------------------------------- entry point
def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    hierarchy: str | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    augment: bool = True,
    seed: int = 0,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    val_subset: int | None = None,
    normalisation: tuple[float, float] | None = None,
    padding_mode: str = "constant",
    resize: int | None = None,
    batch_transforms: bool = True,
) -> DataBundle:
    """Load a data set into memory.

    The data sets, the files each reads under ``root``, their image sizes, normalisations and
    human hierarchies are the specs of :data:`maxl.data.registry.DATASETS`
    (:func:`maxl.data.registry.datasets_table_markdown` prints them as a table, the docs'
    "Data sets" page shows it); :func:`maxl.data.registry.register_dataset` adds one. This
    function calls the spec's reader and applies the hierarchy, the subsets, the resize and the
    normalisation.

    Every data set also takes a hierarchy file (``hierarchy="groups.toml"``, ``.json`` or
    ``.toml``: each primary class -> the names of its classes; see
    :mod:`maxl.data.user_hierarchy`). A data set whose files give a hierarchy (a two-level
    ImageFolder: primary = the top folders, auxiliary = the folders inside them) takes no
    other.

    CIFAR-100 hierarchies name levels of 3, 10, 20 or 100 classes (see :mod:`maxl.data.cifar100`):
    ``'20-100'`` (its default) makes the 20 superclasses the primary task and the 100 fine classes
    the human auxiliary task (ψ = [5] * 20), the paper's main setting; ``'100'`` is the flat
    100-class task. ``'animal-vehicle'`` (CIFAR-10, STL-10, or an ImageFolder of the 10 CIFAR-10
    classes) makes animal / vehicle primary and the 10 classes auxiliary (ψ = [6, 4]).
    ``'even-odd'`` and ``'low-high'`` (digits, MNIST, SVHN, EMNIST digits / mnist) make two groups
    of five digits primary and the digits auxiliary (ψ = [5, 5]).

    Image folders are decoded once and cached as a ``.pt`` file in ``cache_dir`` (default
    ``root/.maxl-cache`` if writable, else ``~/.cache/maxl``); the cache key covers every file's
    path, size and modification time. CIFAR files must pass torchvision's md5 check. Images are
    normalised per channel with the spec's ``normalisation``: fixed constants (digits, MNIST,
    CIFAR, image folders) or the pixel mean / std of the whole training split (computed at load,
    before any subset).

    Args:
        name: one of ``DATASETS``.
        root: folder holding the data set files; not needed for a data set without files (digits).
        hierarchy: class hierarchy, see above; None = the data set's default.
        train_subset: if given, keep a class-stratified subset of this many training images
            (stratified on the finest labels, see :func:`stratified_subset`).
        test_subset: the same for the test set.
        augment: apply the CIFAR training augmentation (RGB images only; never to test images).
        seed: seed of the subsets (the digits split is fixed).
        download: let torchvision download MNIST / CIFAR if missing (needs network).
        cache_dir: where image folders are cached.
        val_subset: hold out a class-stratified validation set of this many images from the
            training images (after ``train_subset``; drawn with ``seed + 1``); they are not
            trained on (``DataBundle.val``).
        normalisation: ``(mean, std)`` for every channel instead of the data set's own.
        padding_mode: padding of the random crop, ``"constant"`` (zeros) or ``"reflect"``.
        resize: resize every image to ``resize`` x ``resize`` pixels once at load (bilinear,
            antialiased), e.g. STL-10's 96 x 96 to 32; None keeps the stored size.
        batch_transforms: give each split a :class:`maxl.data.augment.BatchAugment` of its
            transform (``batch_transform``), so that the trainer crops, flips and normalises
            whole batches on its device; False: the per-image transforms only.

    Returns:
        A :class:`DataBundle`; items are ``(image float32 [C, H, W], primary label, index)``.

    Raises:
        ValueError: unknown ``name``, bad ``hierarchy`` (for a hierarchy file: a class in no
            group or in two, a name matching no class, a primary class without training images),
            missing ``root``, bad subset size, images of different sizes in an image folder, train
            and test trees with different classes; CIFAR / SVHN / STL-10 files present but failing
            torchvision's md5 check; truncated or corrupt IDX files.
        FileNotFoundError: data set files missing; the message names them and the folder.
    """
    spec = dataset_spec(name)
    chosen = _parse_hierarchy(spec, hierarchy)
    if root is None and spec.needs_root:
        raise ValueError(
            f"data set {name!r} needs root (--data-root on the command line), the folder that holds {spec.layout}"
        )
    root = Path(root).expanduser() if root is not None else None
    train, test, class_names, own = _source(spec.reader(root, download=download, cache_dir=cache_dir))
    if own is not None:  # the files give the hierarchy (a two-level ImageFolder's folders)
        if hierarchy is not None:
            raise ValueError(
                f"{name} {root}: its files give the hierarchy ({own.source}, e.g. a two-level "
                f"ImageFolder's <primary>/<auxiliary>/ folders), so it takes no --hierarchy "
                f"({hierarchy!r}); a hierarchy file is for data sets without one, e.g. a flat tree"
            )
        chosen = own
    what = f"{name} {root}" if root is not None else name
    # the data set's own pixel statistics, before any subset
    stats = _pixel_stats(train.images) if normalisation is None and spec.normalisation == TRAINING_SPLIT else None
    if resize is not None:
        if resize < 1:
            raise ValueError(f"resize must be >= 1 pixel, got {resize}")
        train, test = (
            _Split(v2.functional.resize(s.images, [resize, resize], antialias=True), s.labels) for s in (train, test)
        )
    if isinstance(chosen, Groups):  # a primary class without training images cannot be learnt
        check_primary_images(_apply_hierarchy(chosen, train.labels, class_names, what)[0], chosen, "training")
    train, val, test = _subsets(train, test, train_subset, test_subset, val_subset, seed)
    shown = hierarchy if hierarchy is not None else spec.default_hierarchy
    tag = ":folders" if own is not None else "" if shown is None else f":{shown}"
    norm = normalisation or stats or spec.normalisation
    assert not isinstance(norm, str)  # TRAINING_SPLIT: stats holds the training split's
    return _bundle(
        chosen, (train, val, test), class_names, what, norm, augment, padding_mode, f"{name}{tag}", batch_transforms
    )


def _source(read: tuple) -> tuple[_Split, _Split, list[str], Groups | None]:
    """A reader's ``(train, test, class_names[, groups])`` as ``(train, test, class_names, groups or None)``."""
    train, test, class_names, *own = read
    return _Split(*train), _Split(*test), list(class_names), (own[0] if own else None)


def _subsets(
    train: _Split, test: _Split, train_subset: int | None, test_subset: int | None, val_subset: int | None, seed: int
) -> tuple[_Split, _Split | None, _Split]:
    """The class-stratified subsets of :func:`load_dataset`: ``(train, validation or None, test)``."""
    if train_subset is not None:
        keep = stratified_subset(train.labels, train_subset, seed)
        train = _Split(train.images[keep], train.labels[keep])
    if test_subset is not None:
        keep = stratified_subset(test.labels, test_subset, seed)
        test = _Split(test.images[keep], test.labels[keep])
    val = None
    if val_subset is not None:  # held out from the training images: for choosing, never trained on
        if not 1 <= val_subset < len(train.labels):
            raise ValueError(
                f"val_subset must be in 1..{len(train.labels) - 1} (fewer than the {len(train.labels)} "
                f"training images), got {val_subset}"
            )
        held = stratified_subset(train.labels, val_subset, seed + 1)
        rest = torch.ones(len(train.labels), dtype=torch.bool)
        rest[held] = False
        val, train = _Split(train.images[held], train.labels[held]), _Split(train.images[rest], train.labels[rest])
    return train, val, test


def _bundle(
    chosen,
    splits: tuple[_Split, _Split | None, _Split],
    class_names: list[str],
    what: str,
    norm: tuple[float, float],
    augment: bool,
    padding_mode: str,
    name: str,
    batch_transforms: bool = True,
) -> DataBundle:
    """The :class:`DataBundle` of the (train, val or None, test) splits under hierarchy ``chosen``."""
    train, val, test = splits
    primary_train, aux_train, primary_names, psi, aux_names = _apply_hierarchy(chosen, train.labels, class_names, what)
    primary_test, aux_test, *_ = _apply_hierarchy(chosen, test.labels, class_names, what)

    channels, height, width = train.images.shape[1:]
    mean0, std0 = norm
    mean, std = [mean0] * channels, [std0] * channels
    if padding_mode not in ("constant", "reflect"):
        raise ValueError(f"padding_mode must be 'constant' or 'reflect', got {padding_mode!r}")
    train_transform = make_transform(
        (height, width), mean, std, augment=augment and channels == 3, padding_mode=padding_mode
    )
    test_transform = make_transform((height, width), mean, std, augment=False)
    # the same transforms for whole batches on the training device (maxl.data.augment)
    train_batch = BatchAugment(mean, std, augment and channels == 3, 4, padding_mode) if batch_transforms else None
    test_batch = BatchAugment(mean, std, augment=False) if batch_transforms else None
    val_set = aux_val = None
    if val is not None:
        primary_val, aux_val, *_ = _apply_hierarchy(chosen, val.labels, class_names, what)
        val_set = ImageTensorDataset(val.images, primary_val, test_transform, test_batch)
    return DataBundle(
        train=ImageTensorDataset(train.images, primary_train, train_transform, train_batch),
        test=ImageTensorDataset(test.images, primary_test, test_transform, test_batch),
        num_primary=len(primary_names),
        primary_names=primary_names,
        in_channels=int(channels),
        image_size=int(height),
        psi=psi,
        aux_train=aux_train,
        aux_test=aux_test,
        aux_names=aux_names,
        name=name,
        val=val_set,
        aux_val=aux_val,
    )
