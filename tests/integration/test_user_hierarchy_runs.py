"""The user's own hierarchy end to end: a two-level ImageFolder and a flat ImageFolder with a
hierarchy file each train ``--method human`` and ``--method maxl`` for one epoch on tiny PNGs
written here, and ``maxl visualise`` names the figures' classes with the user's names."""

import json

import numpy as np
import pytest
from PIL import Image

from maxl.cli.commands import main

pytestmark = pytest.mark.integration

TREE = {"fruit": ["apple", "pear", "plum"], "tool": ["hammer", "saw"]}
FAST = [
    "--backbone",
    "tiny-cnn",
    "--hidden",
    "16",
    "--batch-size",
    "10",
    "--epochs",
    "1",
    "--no-progress",
    "--device",
    "cpu",
    "--ae-epochs",
    "1",
]


def write_pngs(root, class_paths, per_class=(6, 3), size=8):
    """Each class a different mean colour, so the classes are learnable and distinguishable."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        for k, path in enumerate(class_paths):
            (root / split / path).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(40 * k + 30, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / path / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("trees")
    two_level = write_pngs(base / "two-level", [f"{p}/{a}" for p, aux in TREE.items() for a in aux])
    flat = write_pngs(base / "flat", [a for aux in TREE.values() for a in aux])
    groups = base / "groups.toml"
    groups.write_text("".join(f"{p} = {json.dumps(aux)}\n" for p, aux in TREE.items()))
    return {"two-level": (two_level, []), "file": (flat, ["--hierarchy", str(groups)])}


@pytest.mark.parametrize("kind", ["two-level", "file"])
def test_human_and_maxl_run_on_the_users_hierarchy(trees, tmp_path, kind):
    root, hierarchy = trees[kind]
    out = tmp_path / "runs"
    assert (
        main(
            [
                "train",
                "--dataset",
                "imagefolder",
                "--data-root",
                str(root),
                *hierarchy,
                "--method",
                "human",
                "maxl",
                *FAST,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    for method in ("human", "maxl"):
        config = json.loads((out / method / "config.json").read_text())
        assert config["model"]["psi"] == [3, 2] and config["model"]["num_primary"] == 2
        assert config["data"]["num_train"] == 30 and (out / method / "summary.json").is_file()
    if kind == "two-level":  # the figures name the user's classes
        assert (
            main(["visualise", str(out / "maxl"), "--out", str(tmp_path / "v"), "--top-k", "2", "--max-points", "15"])
            == 0
        )
        agreement = json.loads((tmp_path / "v" / "figures" / "agreement.json").read_text())
        assert agreement["primary_names"] == ["fruit", "tool"]
        assert agreement["human_names"] == ["apple", "pear", "plum", "hammer", "saw"]
        report = (tmp_path / "v" / "report.html").read_text()
        assert "<td>fruit</td>" in report and "<td>tool</td>" in report  # the agreement table


def test_method_human_needs_a_hierarchy(trees, tmp_path):
    root, _ = trees["file"]
    assert (
        main(
            [
                "train",
                "--dataset",
                "imagefolder",
                "--data-root",
                str(root),
                "--method",
                "human",
                *FAST,
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
