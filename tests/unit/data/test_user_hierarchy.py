"""Tests of maxl.data.user_hierarchy through load_dataset: hierarchy files (JSON, TOML) and
two-level ImageFolder trees written as small PNG files, and the errors that name the problem."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from maxl.data.datasets import load_dataset
from maxl.data.user_hierarchy import read_hierarchy_file

# a two-level tree: primary -> auxiliary classes
TREE = {"fruit": ["apple", "pear", "plum"], "tool": ["hammer", "saw"]}


def write_tree(root, tree, per_class=(2, 1), size=(8, 8)):
    """root/{train,test}/<path>/<i>.png for each class path (``a/b`` for two levels)."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        for path in tree:
            (root / split / path).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / path / f"{i}.png")
    return root


def two_level(root, tree=TREE, **kwargs):
    return write_tree(root, [f"{p}/{a}" for p, aux in tree.items() for a in aux], **kwargs)


def test_two_level_image_folder_gives_the_hierarchy(tmp_path):
    root = two_level(tmp_path / "tree")
    b = load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    assert b.psi == [3, 2] and b.primary_names == ["fruit", "tool"] and b.name == "imagefolder:folders"
    assert b.aux_names == ["apple", "pear", "plum", "hammer", "saw"]
    # ImageFolder order: sorted class paths fruit/apple, fruit/pear, fruit/plum, tool/hammer, tool/saw
    assert b.train.labels.tolist() == [0] * 6 + [1] * 4 and b.aux_train.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    png = np.array(Image.open(root / "train" / "tool" / "saw" / "1.png"))
    assert torch.equal(b.train.images[9], torch.from_numpy(png).permute(2, 0, 1))


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_hierarchy_file_groups_a_flat_image_folder(tmp_path, suffix):
    root = write_tree(tmp_path / "flat", ["apple", "hammer", "pear", "saw"])
    path = tmp_path / f"groups{suffix}"
    groups = {"tool": ["saw", "hammer"], "fruit": ["pear", "apple"]}
    path.write_text(
        json.dumps(groups)
        if suffix == ".json"
        else "\n".join(f"{k} = {json.dumps(v)}" for k, v in groups.items()) + "\n"
    )
    b = load_dataset("imagefolder", root, hierarchy=str(path), cache_dir=tmp_path / "cache")
    assert b.primary_names == ["tool", "fruit"] and b.psi == [2, 2]  # the file's order
    assert b.aux_names == ["hammer", "saw", "apple", "pear"]  # block order: by primary, then class index
    assert b.train.labels.tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    assert [b.aux_names[a] for a in b.aux_test.tolist()] == ["apple", "hammer", "pear", "saw"]


def test_hierarchy_file_on_digits(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"round": ["0", "6", "8", "9"], "straight": ["1", "4", "7"], "curly": ["2", "3", "5"]}))
    b = load_dataset("digits", hierarchy=str(path))
    assert b.psi == [4, 3, 3]
    digit = torch.tensor([int(n) for n in b.aux_names])[b.aux_train]
    expected = torch.tensor([0, 1, 2, 2, 1, 2, 0, 1, 0, 0])[digit]
    assert torch.equal(b.train.labels, expected)


@pytest.mark.parametrize(
    "groups, message",
    [
        ({"a": ["apple", "pear"], "b": ["saw"]}, r"\['hammer'\] of imagefolder .* are in no group"),
        ({"a": ["apple", "pear", "saw"], "b": ["saw", "hammer"]}, r"class 'saw' is in two groups, 'a' and 'b'"),
        ({"a": ["apple", "pear", "kiwi"], "b": ["saw", "hammer"]}, r"\['kiwi'\] \(under 'a'\) match no class"),
        ({"a": ["apple", "pear"], "b": []}, r"primary class 'b' has no classes"),
        ({"a": "apple"}, r"'a' maps to 'apple', not a list"),
    ],
)
def test_hierarchy_file_errors_name_the_problem(tmp_path, groups, message):
    root = write_tree(tmp_path / "flat", ["apple", "hammer", "pear", "saw"])
    path = tmp_path / "g.json"
    path.write_text(json.dumps(groups))
    with pytest.raises(ValueError, match=message):
        load_dataset("imagefolder", root, hierarchy=str(path), cache_dir=tmp_path / "cache")


def test_hierarchy_file_unreadable_or_missing(tmp_path):
    bad = tmp_path / "g.toml"
    bad.write_text("a = [")
    with pytest.raises(ValueError, match=re.escape(f"hierarchy file {bad}: cannot parse")):
        read_hierarchy_file(bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_dataset("digits", hierarchy=str(tmp_path / "nope.json"))
    with pytest.raises(ValueError, match=r"must end in \.json or \.toml"):
        load_dataset("digits", hierarchy=str(tmp_path / "groups.yaml"))


def test_primary_class_without_images(tmp_path):
    root = two_level(tmp_path / "tree")
    for png in (root / "train" / "tool").rglob("*.png"):
        png.unlink()
    with pytest.raises(ValueError, match=r"primary class 'tool' .* has no images"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    (root / "train" / "tool" / "saw").rmdir()
    (root / "train" / "tool" / "hammer").rmdir()
    with pytest.raises(ValueError, match=r"primary class 'tool' .* has no images"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")


def test_train_and_test_trees_with_different_classes(tmp_path):
    root = two_level(tmp_path / "tree")
    (root / "test" / "fruit" / "plum").rename(root / "test" / "fruit" / "cherry")
    with pytest.raises(ValueError, match=r"only in train \['fruit/plum'\], only in test \['fruit/cherry'\]"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")


def test_mixed_and_overridden_two_level_trees(tmp_path):
    root = two_level(tmp_path / "tree")
    with pytest.raises(ValueError, match="takes no --hierarchy"):
        load_dataset("imagefolder", root, hierarchy="animal-vehicle", cache_dir=tmp_path / "cache")
    Image.new("RGB", (8, 8)).save(root / "train" / "fruit" / "loose.png")
    with pytest.raises(ValueError, match="holds both images"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    (root / "train" / "fruit" / "loose.png").unlink()
    write_tree(root, ["stone"])
    with pytest.raises(ValueError, match=r"mixes two-level class folders \['fruit', 'tool'\] .* flat ones \['stone'\]"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
