"""Tests of maxl.data.datasets on small files written in the real on-disk formats (no network, no shared data).

- MNIST: gzipped IDX files (magic 0x0803 images, 0x0801 labels, big-endian sizes), as on
  yann.lecun.com, under root/MNIST/raw.
- CIFAR-10 / -100: the "python version" pickles, as torchvision reads them (``pickle.load(f,
  encoding="latin1")``, so str keys ``data``, ``labels`` / ``fine_labels``, ``coarse_labels``).
  torchvision checks the official md5 of every CIFAR file; our files cannot match it, so the
  tests that load them replace torchvision's md5 comparison by an existence check (the fixture
  ``no_md5``), and one test shows what a user gets without it.
- ImageFolder: a tree of JPEG and PNG files.
"""

import gzip
import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader

from maxl.data import cifar100
from maxl.data.datasets import DATASETS, ImageTensorDataset, load_dataset, stratified_subset


def block_bounds(psi):
    ends = torch.tensor(psi).cumsum(0)
    return ends - torch.tensor(psi), ends


def assert_in_blocks(primary, aux, psi):
    start, end = block_bounds(psi)
    assert ((start[primary] <= aux) & (aux < end[primary])).all()


# --------------------------------------------------------------------------- writers
def write_idx(path, array: np.ndarray):
    """Gzipped IDX file: 0x00 0x00, type 0x08 (ubyte), number of dims, then big-endian sizes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_root(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 20), ("t10k", 10)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.fixture
def cifar100_root(tmp_path):
    """2 train and 1 test image per fine class."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split, per_class in (("train", 2), ("test", 1)):
        fine = np.tile(np.arange(100), per_class)
        write_pickle(
            folder / split,
            {
                "filenames": [f"img_{i}.png" for i in range(len(fine))],
                "batch_label": f"{split} batch",
                "fine_labels": fine.tolist(),
                "coarse_labels": [cifar100.COARSE_OF_FINE[k] for k in fine],
                "data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8),
            },
        )
    meta = {"fine_label_names": list(cifar100.FINE_NAMES), "coarse_label_names": list(cifar100.COARSE_NAMES)}
    write_pickle(folder / "meta", meta)
    return tmp_path


@pytest.fixture
def cifar10_root(tmp_path):
    """5 batches of 10 train images and 10 test images, one per class each."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (10, 3072), dtype=np.uint8)
        write_pickle(folder / name, {"batch_label": name, "labels": list(range(10)), "data": data, "filenames": []})
    write_pickle(folder / "batches.meta", {"label_names": list(cifar100.CIFAR10_NAMES), "num_cases_per_batch": 10})
    return tmp_path


@pytest.fixture
def no_md5(monkeypatch):
    """Let torchvision's CIFAR readers accept our files: check existence, not the official md5."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def write_image_folder(root, classes, per_split=(3, 2), size=(8, 8), mode="RGB"):
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_split):
        for k, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                shape = (*size, 3) if mode == "RGB" else size
                image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
                ext = "png" if (i + k) % 2 else "jpg"  # exercise both the batched JPEG path and decode_image
                image.save(root / split / cls / f"{i:04d}.{ext}")
    return root


# --------------------------------------------------------------------------- general
def test_unknown_name_lists_valid_names():
    with pytest.raises(
        ValueError,
        match="digits, mnist, fashionmnist, kmnist, emnist-byclass, .*, svhn, cifar10, cifar100, stl10, imagefolder",
    ):
        load_dataset("imagenet", "/nonexistent")
    assert {
        "digits",
        "mnist",
        "fashionmnist",
        "kmnist",
        "emnist-balanced",
        "emnist-letters",
        "svhn",
        "cifar10",
        "cifar100",
        "stl10",
        "imagefolder",
    } <= set(DATASETS)


def test_root_required():
    with pytest.raises(ValueError, match="root"):
        load_dataset("mnist")


def test_image_tensor_dataset_items_and_collate():
    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    ds = ImageTensorDataset(images, torch.arange(6) % 2)
    image, label, index = ds[4]
    assert image.dtype == torch.float32 and image.shape == (3, 4, 4)
    assert torch.allclose(image, images[4].float() / 255) and label == 0 and index == 4
    x, y, idx = next(iter(DataLoader(ds, batch_size=6)))
    assert x.shape == (6, 3, 4, 4) and y.dtype == idx.dtype == torch.int64 and idx.tolist() == list(range(6))
    with pytest.raises(ValueError, match="uint8"):
        ImageTensorDataset(images.float(), torch.arange(6))


def test_stratified_subset():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    keep = stratified_subset(labels, 10, seed=0)
    assert keep.dtype == torch.int64 and len(keep) == 10 and len(keep.unique()) == 10
    assert torch.equal(keep, keep.sort().values)
    assert labels[keep].bincount().tolist() == [5, 3, 2]
    assert torch.equal(keep, stratified_subset(labels, 10, seed=0))  # deterministic
    assert not torch.equal(keep, stratified_subset(labels, 10, seed=1))
    assert labels[stratified_subset(labels, 7)].bincount(minlength=3).tolist() == [4, 2, 1]  # largest remainder
    for bad in (0, 101):
        with pytest.raises(ValueError, match="1..100"):
            stratified_subset(labels, bad)


# --------------------------------------------------------------------------- digits
def test_digits():
    b = load_dataset("digits", augment=False)
    assert (len(b.train), len(b.test)) == (1347, 450)
    assert b.num_primary == 10 and b.primary_names == [str(d) for d in range(10)]
    assert (b.in_channels, b.image_size, b.psi, b.aux_train, b.name) == (1, 8, None, None, "digits")
    assert b.train.images.dtype == torch.uint8 and b.train.images.max() == 255
    counts = torch.stack([b.train.labels.bincount(), b.test.labels.bincount()])
    assert ((counts[1] - counts.sum(0) * 450 / 1797).abs() <= 1).all()  # stratified split
    image, label, index = b.train[3]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and 0 <= label < 10 and index == 3
    assert torch.equal(load_dataset("digits").test.images, b.test.images)  # fixed split
    small = load_dataset("digits", train_subset=100, test_subset=50)
    assert (len(small.train), len(small.test)) == (100, 50)
    assert small.train.labels.bincount().tolist() == [10] * 10


def test_hierarchy_rejected_for_flat_datasets():
    with pytest.raises(ValueError, match="animal-vehicle"):
        load_dataset("digits", hierarchy="animal-vehicle")


# --------------------------------------------------------------------------- MNIST
def test_mnist_from_gzipped_idx(mnist_root):
    b = load_dataset("mnist", mnist_root)
    assert (len(b.train), len(b.test), b.in_channels, b.image_size, b.num_primary) == (20, 10, 1, 28, 10)
    assert b.train.images.shape == (20, 1, 28, 28) and b.train.images.dtype == torch.uint8
    assert b.train.labels.tolist() == [i % 10 for i in range(20)]
    image, label, index = b.test[7]
    assert image.shape == (1, 28, 28) and label == 7 and index == 7
    expected = (b.test.images[7].float() / 255 - 0.1307) / 0.3081  # no augmentation for MNIST
    assert torch.allclose(image, expected, atol=1e-6)
    assert (mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()  # extracted once
    assert torch.equal(load_dataset("mnist", mnist_root).train.images, b.train.images)


def test_mnist_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("mnist", tmp_path)
    message = str(err.value)
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", str(tmp_path / "MNIST" / "raw"), "download"):
        assert name in message


# --------------------------------------------------------------------------- CIFAR-100
def test_cifar100_default_hierarchy_20_100(cifar100_root, no_md5):
    b = load_dataset("cifar100", cifar100_root)
    assert (len(b.train), len(b.test), b.in_channels, b.image_size) == (200, 100, 3, 32)
    assert b.name == "cifar100:20-100" and b.num_primary == 20 and b.primary_names == list(cifar100.COARSE_NAMES)
    assert b.psi == [5] * 20 and b.aux_names == cifar100.aux_class_names(20, 100)
    fine = torch.arange(100).repeat(2)
    assert torch.equal(b.train.labels, cifar100.level_labels(fine, 20))
    assert b.aux_train.dtype == torch.int64 and b.aux_train.shape == (200,) and b.aux_test.shape == (100,)
    assert_in_blocks(b.train.labels, b.aux_train, b.psi)
    assert [b.aux_names[a] for a in b.aux_train.tolist()] == [cifar100.FINE_NAMES[k] for k in fine.tolist()]
    image, label, index = b.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and index == 0


@pytest.mark.parametrize("hierarchy", ["3-10", "3-20", "3-100", "10-20", "10-100", "20-100"])
def test_cifar100_hierarchies(cifar100_root, no_md5, hierarchy):
    primary_level, aux_level = map(int, hierarchy.split("-"))
    b = load_dataset("cifar100", cifar100_root, hierarchy=hierarchy, augment=False)
    assert b.psi == cifar100.psi_between(primary_level, aux_level) and sum(b.psi) == aux_level
    assert b.num_primary == primary_level and len(b.aux_names) == aux_level
    for ds, aux, per_class in ((b.train, b.aux_train, 2), (b.test, b.aux_test, 1)):
        assert_in_blocks(ds.labels, aux, b.psi)
        # by name: each sample's primary and auxiliary classes are the ancestors of its fine class
        fine = torch.arange(100).repeat(per_class)  # the fixture's fine labels
        own_aux = cifar100.level_names(aux_level)
        assert [b.aux_names[a] for a in aux.tolist()] == [own_aux[k] for k in cifar100.level_labels(fine, aux_level)]
        own_primary = cifar100.level_names(primary_level)
        assert [b.primary_names[p] for p in ds.labels.tolist()] == [
            own_primary[k] for k in cifar100.level_labels(fine, primary_level)
        ]


def test_cifar100_flat_and_subset(cifar100_root, no_md5):
    b = load_dataset("cifar100", cifar100_root, hierarchy="100", train_subset=100, test_subset=40)
    assert b.psi is b.aux_train is b.aux_names is None and b.num_primary == 100
    assert b.train.labels.bincount(minlength=100).tolist() == [1] * 100  # one image per fine class
    assert len(b.test) == 40 and len(b.test.labels.unique()) == 40
    assert [b.train[i][2] for i in (0, 99)] == [0, 99]  # indices count positions in the subset


@pytest.mark.parametrize("bad", ["100-20", "20-50", "20-20", "foo", "20-100-3", "7"])
def test_cifar100_bad_hierarchy(cifar100_root, bad):
    with pytest.raises(ValueError, match="hierarchy"):
        load_dataset("cifar100", cifar100_root, hierarchy=bad)


def test_cifar100_coarse_labels_checked(cifar100_root, no_md5):
    path = cifar100_root / "cifar-100-python" / "test"
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry["coarse_labels"][0] = (entry["coarse_labels"][0] + 1) % 20
    write_pickle(path, entry)
    with pytest.raises(ValueError, match="coarse labels"):
        load_dataset("cifar100", cifar100_root)


def test_cifar100_missing_files_are_named(tmp_path):
    (tmp_path / "cifar-100-python").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar100", tmp_path)
    assert "train, test, meta" in str(err.value) and str(tmp_path / "cifar-100-python") in str(err.value)


def test_cifar_md5_mismatch_is_explained(cifar100_root, capsys):
    # without `no_md5`, torchvision compares every file with the official release
    with pytest.raises(ValueError, match="md5"):
        load_dataset("cifar100", cifar100_root)
    from maxl.cli.commands import main

    assert main(["train", "--dataset", "cifar100", "--data-root", str(cifar100_root), "--epochs", "1"]) == 2
    assert "fail its md5 check" in capsys.readouterr().err  # a message, not a traceback


# --------------------------------------------------------------------------- CIFAR-10
def test_cifar10_flat_and_animal_vehicle(cifar10_root, no_md5):
    flat = load_dataset("cifar10", cifar10_root)
    assert (len(flat.train), len(flat.test), flat.num_primary, flat.psi) == (50, 10, 10, None)
    assert flat.primary_names == list(cifar100.CIFAR10_NAMES) and flat.name == "cifar10"
    b = load_dataset("cifar10", cifar10_root, hierarchy="animal-vehicle")
    assert b.psi == [6, 4] and b.primary_names == ["animal", "vehicle"] and b.name == "cifar10:animal-vehicle"
    assert b.test.labels.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    assert [b.aux_names[a] for a in b.aux_test.tolist()] == list(cifar100.CIFAR10_NAMES)
    assert_in_blocks(b.train.labels, b.aux_train, b.psi)
    with pytest.raises(ValueError, match="hierarchy"):
        load_dataset("cifar10", cifar10_root, hierarchy="20-100")


def test_cifar10_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1.*batches.meta"):
        load_dataset("cifar10", tmp_path)


# --------------------------------------------------------------------------- ImageFolder
def test_imagefolder_animal_vehicle_and_cache(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "tree", cifar100.CIFAR10_NAMES)
    cache = tmp_path / "cache"
    b = load_dataset("imagefolder", root, hierarchy="animal-vehicle", cache_dir=cache)
    assert (len(b.train), len(b.test), b.in_channels, b.image_size) == (30, 20, 3, 8)
    assert b.train.images.dtype == torch.uint8 and b.train.images.shape == (30, 3, 8, 8)
    assert b.psi == [6, 4] and b.num_primary == 2
    assert_in_blocks(b.train.labels, b.aux_train, b.psi)
    assert [b.aux_names[a] for a in b.aux_test.tolist()] == [n for n in cifar100.CIFAR10_NAMES for _ in range(2)]
    png = np.array(Image.open(root / "test" / "airplane" / "0001.png"))  # lossless: pixels round-trip
    assert torch.equal(b.test.images[1], torch.from_numpy(png).permute(2, 0, 1))
    assert len(list(cache.glob("*.pt"))) == 2

    def fail(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr("maxl.data.datasets._decode_images", fail)
    again = load_dataset("imagefolder", root, hierarchy="animal-vehicle", cache_dir=cache)
    assert torch.equal(again.train.images, b.train.images) and torch.equal(again.aux_train, b.aux_train)
    monkeypatch.undo()

    # a new file changes the key: the train split is decoded again, the test split still cached
    Image.new("RGB", (8, 8)).save(root / "train" / "cat" / "extra.png")
    grown = load_dataset("imagefolder", root, cache_dir=cache)
    assert len(grown.train) == 31 and grown.num_primary == 10 and grown.psi is None
    assert len(list(cache.glob("*.pt"))) == 3 and not list(cache.glob("*.tmp"))


def test_imagefolder_default_cache_dir_and_grayscale(tmp_path):
    root = write_image_folder(tmp_path / "digits", ["a", "b"], per_split=(4, 2), size=(6, 6), mode="L")
    b = load_dataset("imagefolder", root, train_subset=2)
    assert b.train.images.shape == (2, 1, 6, 6) and b.train.labels.tolist() == [0, 1]
    assert b.primary_names == ["a", "b"] and len(list((root / ".maxl-cache").glob("*.pt"))) == 2
    image, _, _ = b.train[0]
    assert image.shape == (1, 6, 6)  # no crop / flip for single-channel images
    with pytest.raises(ValueError, match="CIFAR-10 classes"):
        load_dataset("imagefolder", root, hierarchy="animal-vehicle")


def test_imagefolder_errors(tmp_path):
    root = write_image_folder(tmp_path / "tree", ["x", "y"])
    Image.new("RGB", (9, 8)).save(root / "train" / "x" / "odd.png")
    with pytest.raises(ValueError, match="resize"):
        load_dataset("imagefolder", root)
    (root / "test").rename(root / "val")
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / "test"))):
        load_dataset("imagefolder", root)


@pytest.mark.parametrize(
    "grouping, psi, primary_of", [("even-odd", [5, 5], lambda d: d % 2), ("low-high", [5, 5], lambda d: int(d >= 5))]
)
def test_digit_groupings(grouping, psi, primary_of):
    flat = load_dataset("digits")
    grouped = load_dataset("digits", hierarchy=grouping)
    assert grouped.psi == psi and grouped.num_primary == 2
    digits = [int(flat.train[i][1]) for i in range(len(flat.train))]
    for i, d in enumerate(digits):
        primary = int(grouped.train[i][1])
        aux = int(grouped.aux_train[i])
        assert primary == primary_of(d)
        assert 5 * primary <= aux < 5 * primary + 5  # inside the primary's block
        assert grouped.aux_names[aux] == flat.primary_names[d]  # the block position names the digit
