"""Tests of maxl.data.readers: torchvision's MNIST family, SVHN and STL-10 read from small files
written in their real on-disk formats (no network, no shared data).

- IDX (MNIST, Fashion-MNIST, KMNIST, EMNIST): gzipped, magic 0x0803 (images) / 0x0801 (labels),
  big-endian sizes, under root/<Class>/raw with torchvision's file names.
- SVHN: MATLAB files with X uint8 [32, 32, 3, N] and y [N, 1], the digit 0 stored as 10.
- STL-10: raw uint8 binaries, each image 3 x 96 x 96 in column-major order (the official
  release is written from MATLAB), labels 1..10, under root/stl10_binary.
torchvision checks the official md5 of SVHN and STL-10 files; our files cannot match it, so the
fixture ``no_md5`` replaces that check by an existence check, and one test shows what a user
gets without it.
"""

import gzip
import os
import re
import struct

import numpy as np
import pytest
import scipy.io
import torch
import torchvision

from maxl.data.datasets import load_dataset
from maxl.data.readers import EMNIST_SPLITS


def write_idx(path, array: np.ndarray):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_idx_set(root, folder, names, num_classes, first_label=0, sizes=(2, 1)):
    """Images whose pixel [0, 1] holds the index and pixel [1, 0] 0 (asymmetric, to see a
    transposition); labels cycle over the classes."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for (images_file, labels_file), per_class in zip(names, sizes):
        n = per_class * num_classes
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 0, 1] = np.arange(n) % 256
        images[:, 5:20, 5:20] = 200
        labels = first_label + np.arange(n) % num_classes
        write_idx(raw / f"{images_file}.gz", images)
        write_idx(raw / f"{labels_file}.gz", labels)
        out[images_file] = (images, labels)
    return out


MNIST_NAMES = [
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
]


def emnist_names(split):
    return [
        (f"emnist-{split}-{s}-images-idx3-ubyte", f"emnist-{split}-{s}-labels-idx1-ubyte") for s in ("train", "test")
    ]


@pytest.fixture
def no_md5(monkeypatch):
    """Let torchvision's SVHN and STL10 accept our files: check existence, not the official md5."""
    for module in (torchvision.datasets.svhn, torchvision.datasets.stl10):
        monkeypatch.setattr(module, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def write_svhn(root, n=(20, 10)):
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), n):
        digits = np.arange(count) % 10
        scipy.io.savemat(
            root / f"{split}_32x32.mat",
            {
                "X": rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8),
                "y": np.where(digits == 0, 10, digits).reshape(-1, 1).astype(np.uint8),
            },
        )
    return root


STL_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def write_stl10(root, n=(10, 10)):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}
    for split, count in zip(("train", "test"), n):
        chw = rng.integers(0, 256, (count, 3, 96, 96), dtype=np.uint8)
        chw.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # column-major, as the release
        (np.arange(count) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        images[split] = chw
    rng.integers(0, 256, (1, 3, 96, 96), dtype=np.uint8).tofile(folder / "unlabeled_X.bin")
    (folder / "class_names.txt").write_text("\n".join(STL_NAMES) + "\n")
    return images


# --------------------------------------------------------------------------- the MNIST family
@pytest.mark.parametrize("name, folder", [("fashionmnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_mnist_family_reads_idx(tmp_path, name, folder):
    written = write_idx_set(tmp_path, folder, MNIST_NAMES, 10)
    b = load_dataset(name, tmp_path)
    assert (len(b.train), len(b.test), b.in_channels, b.image_size, b.num_primary) == (20, 10, 1, 28, 10)
    images, labels = written["train-images-idx3-ubyte"]
    assert torch.equal(b.train.images[:, 0], torch.from_numpy(images)) and b.train.labels.tolist() == labels.tolist()
    cls = {"fashionmnist": torchvision.datasets.FashionMNIST, "kmnist": torchvision.datasets.KMNIST}[name]
    assert b.primary_names == list(cls.classes)
    # normalised with the training split's own pixel statistics
    x = torch.from_numpy(images).double() / 255
    image, _, _ = b.test[0]
    expected = (b.test.images[0].double() / 255 - x.mean()) / x.std(unbiased=False)
    assert torch.allclose(image.double(), expected, atol=1e-5)


def test_fashion_mnist_hierarchy(tmp_path):
    write_idx_set(tmp_path, "FashionMNIST", MNIST_NAMES, 10)
    b = load_dataset("fashionmnist", tmp_path, hierarchy="clothes-shoes-bags")
    assert b.psi == [6, 3, 1] and b.primary_names == ["clothes", "shoes", "bags"]
    assert b.aux_names[6:] == ["Sandal", "Sneaker", "Ankle boot", "Bag"]
    names = torchvision.datasets.FashionMNIST.classes
    labels = np.arange(20) % 10  # written by write_idx_set
    assert [b.aux_names[a] for a in b.aux_train.tolist()] == [names[y] for y in labels]
    group = {"Sandal": 1, "Sneaker": 1, "Ankle boot": 1, "Bag": 2}
    assert b.train.labels.tolist() == [group.get(names[y], 0) for y in labels]


def test_emnist_balanced_is_transposed_and_has_a_kind_hierarchy(tmp_path):
    written = write_idx_set(tmp_path, "EMNIST", emnist_names("balanced"), 47, sizes=(1, 1))
    b = load_dataset("emnist-balanced", tmp_path, hierarchy="digit-upper-lower")
    assert b.psi == [10, 26, 11] and b.primary_names == ["digit", "uppercase", "lowercase"]
    images, labels = written["emnist-balanced-train-images-idx3-ubyte"]
    assert torch.equal(b.train.images[:, 0], torch.from_numpy(images).transpose(1, 2))  # upright
    classes = torchvision.datasets.EMNIST.classes_split_dict["balanced"]
    kind = [0 if c.isdigit() else 1 if c.isupper() else 2 for c in classes]
    assert b.train.labels.tolist() == [kind[y] for y in labels]
    assert [b.aux_names[a] for a in b.aux_train.tolist()] == [classes[y] for y in labels]


def test_emnist_letters_drop_the_empty_class(tmp_path):
    write_idx_set(tmp_path, "EMNIST", emnist_names("letters"), 26, first_label=1)
    b = load_dataset("emnist-letters", tmp_path)
    assert b.num_primary == 26 and b.primary_names[0] == "a" and b.train.labels.tolist() == list(range(26)) * 2


def test_emnist_missing_files_name_the_layout(tmp_path):
    assert "digits" in EMNIST_SPLITS
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("emnist-digits", tmp_path)
    for text in (
        "emnist-digits-train-images-idx3-ubyte",
        "emnist-digits-test-labels-idx1-ubyte",
        str(tmp_path / "EMNIST" / "raw"),
        "download",
    ):
        assert text in str(err.value)


def test_kmnist_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "KMNIST" / "raw"))):
        load_dataset("kmnist", tmp_path)


# --------------------------------------------------------------------------- SVHN
def test_svhn_reads_mat_files(tmp_path, no_md5):
    write_svhn(tmp_path)
    mat = scipy.io.loadmat(tmp_path / "train_32x32.mat")
    b = load_dataset("svhn", tmp_path, hierarchy="even-odd")
    assert (len(b.train), len(b.test), b.in_channels, b.image_size) == (20, 10, 3, 32)
    assert torch.equal(b.train.images[3], torch.from_numpy(mat["X"][..., 3]).permute(2, 0, 1))
    assert b.psi == [5, 5] and b.train.labels.tolist() == [d % 2 for d in np.arange(20) % 10]  # 10 -> digit 0
    assert b.aux_names == ["0", "2", "4", "6", "8", "1", "3", "5", "7", "9"]


def test_svhn_md5_and_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_32x32.mat, test_32x32.mat"):
        load_dataset("svhn", tmp_path)
    write_svhn(tmp_path)
    with pytest.raises(ValueError, match="md5"):
        load_dataset("svhn", tmp_path)


# --------------------------------------------------------------------------- STL-10
def test_stl10_reads_binaries_resized(tmp_path, no_md5):
    images = write_stl10(tmp_path)
    b = load_dataset("stl10", tmp_path, hierarchy="animal-vehicle")
    assert (len(b.train), len(b.test), b.in_channels, b.image_size) == (10, 10, 3, 96)
    assert torch.equal(b.train.images, torch.from_numpy(images["train"]))
    assert b.psi == [6, 4] and b.primary_names == ["animal", "vehicle"]
    assert b.train.labels.tolist() == [1, 0, 1, 0, 0, 0, 0, 0, 1, 1]
    small = load_dataset("stl10", tmp_path, resize=32)
    assert small.train.images.shape == (10, 3, 32, 32) and small.train.images.dtype == torch.uint8
    assert small.image_size == 32 and small.train[0][0].shape == (3, 32, 32)


def test_stl10_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("stl10", tmp_path)
    for text in ("train_X.bin", "unlabeled_X.bin", "test_y.bin", str(tmp_path / "stl10_binary")):
        assert text in str(err.value)


def test_hierarchy_file_on_a_builtin_data_set(tmp_path, no_md5):
    write_svhn(tmp_path)
    groups = tmp_path / "groups.toml"
    groups.write_text('small = ["0", "1", "2"]\nlarge = ["3", "4", "5", "6", "7", "8", "9"]\n')
    b = load_dataset("svhn", tmp_path, hierarchy=str(groups))
    assert b.psi == [3, 7] and b.primary_names == ["small", "large"] and b.name.endswith("groups.toml")
    assert b.train.labels.tolist() == [int(d >= 3) for d in np.arange(20) % 10]
