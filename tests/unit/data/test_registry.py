"""The data-set registry (maxl.data.registry): every spec complete and consistent, the facts that moved
into it unchanged, the docs' table and the --hierarchy help made from it, and a data set added by
register_dataset loadable like a built-in one."""

import dataclasses
from pathlib import Path

import pytest
import torch

from maxl.data import datasets as datasets_module
from maxl.data import load_dataset
from maxl.data.readers import IDX_DATASETS
from maxl.data.registry import (
    DATASETS,
    TRAINING_SPLIT,
    DatasetSpec,
    dataset_spec,
    datasets_table_markdown,
    hierarchy_help,
    register_dataset,
)
from maxl.data.user_hierarchy import Groups, parent_of_classes
from maxl.nn import BACKBONES
from maxl.train.presets import PRESET_OF, PRESETS, preset_settings

ROOT = Path(__file__).resolve().parents[3]
SPECS = list(DATASETS.values())
IDS = [s.name for s in SPECS]
# fields that may be None by design: they depend on the files (an ImageFolder), or the data set has none
MAY_BE_NONE = {"channels", "image_size", "class_names", "default_hierarchy", "parse_hierarchy"}
TABLE_HEADER = "| `--dataset` | files under `--data-root`"


@pytest.fixture
def registry():
    """Restore the registry after a test that adds to it."""
    before = dict(DATASETS)
    yield DATASETS
    DATASETS.clear()
    DATASETS.update(before)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_spec_is_complete(spec):
    assert DATASETS[spec.name] is spec and dataset_spec(spec.name) is spec
    for field in dataclasses.fields(spec):
        if field.name not in MAY_BE_NONE:
            assert getattr(spec, field.name) is not None, field.name
    assert spec.description.strip() and "\n" not in spec.description
    assert callable(spec.reader) and spec.files.strip()
    assert spec.needs_root == (spec.name != "digits") == bool(spec.layout)
    assert spec.default_backbone in BACKBONES
    assert spec.preset in PRESETS and preset_settings("auto", spec.name)[0] == spec.preset == PRESET_OF[spec.name]
    assert spec.normalisation == TRAINING_SPLIT or (len(spec.normalisation) == 2 and spec.normalisation[1] > 0)
    if spec.name != "imagefolder":  # an ImageFolder's images and classes are the user's
        assert spec.channels in (1, 3) and spec.image_size >= 8 and len(spec.class_names) >= 10
    assert spec.hierarchies or spec.parse_hierarchy or spec.name in ("kmnist", "emnist-letters")


@pytest.mark.parametrize("spec", [s for s in SPECS if s.hierarchies], ids=[s.name for s in SPECS if s.hierarchies])
def test_human_hierarchies_are_partitions_of_the_class_names(spec):
    for name, groups in spec.hierarchies.items():
        assert isinstance(groups, Groups) and spec.hierarchy(name) is groups
        assert len(groups.primary_names) == len(groups.members) >= 2 and all(groups.members)
        if spec.class_names is not None:
            members = [c for m in groups.members for c in m]
            assert sorted(members) == sorted(spec.class_names), name  # every class exactly once
            parent_of_classes(groups, spec.class_names, spec.name)  # raises on a bad grouping


def test_default_hierarchies_resolve():
    assert dataset_spec("cifar100").hierarchy(None) == (20, 100)
    assert dataset_spec("cifar100").hierarchy("3") == (3, None)
    assert all(s.hierarchy(None) is None for s in SPECS if s.name != "cifar100")
    with pytest.raises(ValueError, match="bad cifar100 hierarchy '100-20'"):
        dataset_spec("cifar100").hierarchy("100-20")
    with pytest.raises(ValueError, match=r"bad hierarchy 'x' for cifar10: allowed \(None, 'animal-vehicle'\)"):
        dataset_spec("cifar10").hierarchy("x")


def test_the_facts_moved_unchanged():
    """What datasets.py, readers.py, build.py and presets.py held before the registry."""
    names = ("digits", *IDX_DATASETS, "svhn", "cifar10", "cifar100", "stl10", "imagefolder")
    assert tuple(DATASETS) == names and tuple(datasets_module.DATASETS) == names
    backbone = {
        "digits": "tiny-cnn",
        **{d: "small-cnn" for d in IDX_DATASETS},
        "cifar10": "vgg16",
        "cifar100": "vgg16",
        "svhn": "vgg16",
        "stl10": "vgg16",
        "imagefolder": "vgg16",
    }
    preset = {
        "digits": "digits",
        **{d: "mnist" for d in IDX_DATASETS},
        "cifar10": "rgb32",
        "cifar100": "rgb32",
        "svhn": "rgb32",
        "stl10": "rgb32",
        "imagefolder": "rgb32",
    }
    norm = {
        "digits": (0.3053, 0.3760),
        "mnist": (0.1307, 0.3081),
        "cifar10": (0.5, 0.2),
        "cifar100": (0.5, 0.2),
        "imagefolder": (0.5, 0.2),
    }
    for spec in SPECS:
        assert spec.default_backbone == backbone[spec.name] and spec.preset == preset[spec.name], spec.name
        assert spec.normalisation == norm.get(spec.name, TRAINING_SPLIT), spec.name
    hierarchies = {
        **{d: {"even-odd", "low-high"} for d in ("digits", "mnist", "svhn", "emnist-digits", "emnist-mnist")},
        "fashionmnist": {"clothes-shoes-bags"},
        "cifar10": {"animal-vehicle"},
        "stl10": {"animal-vehicle"},
        "imagefolder": {"animal-vehicle"},
        **{f"emnist-{s}": {"digit-upper-lower"} for s in ("byclass", "bymerge", "balanced")},
    }
    assert {s.name: set(s.hierarchies) for s in SPECS if s.hierarchies} == hierarchies
    even = dataset_spec("mnist").hierarchies["even-odd"]
    assert even.primary_names == ("even", "odd") and even.members[0][:2] == ("0 - zero", "2 - two")
    assert [len(m) for m in dataset_spec("fashionmnist").hierarchies["clothes-shoes-bags"].members] == [6, 3, 1]
    assert dataset_spec("mnist").layout == "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)"


def tables_in_the_docs() -> dict[str, str]:
    """file -> the data-set table it holds (README.md or a page under docs/, wherever it lives now)."""
    found = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        for i, line in enumerate(lines):
            if line.startswith(TABLE_HEADER):
                end = next((j for j in range(i, len(lines)) if not lines[j].startswith("|")), len(lines))
                found[str(path.relative_to(ROOT))] = "\n".join(lines[i:end])
    return found


def test_the_docs_table_is_made_from_the_registry():
    tables = tables_in_the_docs()
    assert tables, f"no data-set table (a line starting {TABLE_HEADER!r}) in README.md or docs/"
    generated = datasets_table_markdown()
    for spec in SPECS:
        assert f"\n| `{spec.name}` |" in generated
    for path, table in tables.items():
        assert table == generated, (
            f"{path}'s data-set table differs from maxl.data.registry.datasets_table_markdown()"
            "; paste its output in place of the table"
        )


def test_hierarchy_help_names_every_hierarchy():
    text = hierarchy_help()
    assert text.startswith("class hierarchy: ") and "\n" not in text
    for spec in SPECS:
        for name in spec.hierarchies:
            assert f"'{name}'" in text
        if spec.hierarchies or spec.hierarchy_note:
            assert spec.name in text
    assert "cifar100 levels 'P-A'" in text and "(default '20-100')" in text
    assert "FILE.json / FILE.toml" in text and "two-level" in text and "train/<primary>/<auxiliary>/" in text
    assert "digits/mnist/emnist-digits/emnist-mnist/svhn 'even-odd' or 'low-high'" in text


def read_toy(root, *, download, cache_dir):
    """A data set without files: 3 x 6 x 6 images of four classes, two per class in the test split."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 6, 6), dtype=torch.uint8, generator=generator)
    labels = torch.arange(20) % 4
    return (images[:12], labels[:12]), (images[12:], labels[12:]), ["ant", "bee", "cod", "eel"]


def toy_spec(**changes) -> DatasetSpec:
    spec = DatasetSpec(
        name="toy",
        description="four classes of random pictures",
        reader=read_toy,
        layout="",
        files="none",
        channels=3,
        image_size=6,
        normalisation=TRAINING_SPLIT,
        class_names=("ant", "bee", "cod", "eel"),
        hierarchies={"insect-fish": Groups(("insect", "fish"), (("ant", "bee"), ("cod", "eel")), "insect-fish")},
        default_backbone="cnn3",
        preset="rgb32",
    )
    return dataclasses.replace(spec, **changes)


def test_register_dataset_makes_it_loadable(registry):
    assert "toy" not in datasets_module.DATASETS
    register_dataset(toy_spec())
    assert "toy" in datasets_module.DATASETS and datasets_module.DATASETS[-1] == "toy"
    assert "toy 'insect-fish'" in hierarchy_help()
    assert "| `toy` | none | `insect-fish` (ψ = [2, 2]) |" in datasets_table_markdown()
    assert preset_settings("auto", "toy")[0] == "rgb32"
    b = load_dataset("toy", hierarchy="insect-fish", augment=False)
    assert (len(b.train), len(b.test), b.in_channels, b.image_size) == (12, 8, 3, 6)
    assert b.name == "toy:insect-fish" and b.psi == [2, 2] and b.primary_names == ["insect", "fish"]
    assert b.train.labels.tolist() == [0, 0, 1, 1] * 3 and b.aux_names == ["ant", "bee", "cod", "eel"]
    images = read_toy(None, download=False, cache_dir=None)[0][0].double() / 255
    image, _, _ = b.train[0]
    assert torch.allclose(image, ((images[0] - images.mean()) / images.std(unbiased=False)).float(), atol=1e-5)
    flat = load_dataset("toy", augment=False)
    assert flat.name == "toy" and flat.psi is None and flat.num_primary == 4
    with pytest.raises(ValueError, match="bad hierarchy 'animal-vehicle' for toy"):
        load_dataset("toy", hierarchy="animal-vehicle")


def test_register_dataset_with_files_needs_root(registry, tmp_path):
    seen = []

    def read(root, *, download, cache_dir):
        seen.append(root)
        return read_toy(root, download=download, cache_dir=cache_dir)

    register_dataset(toy_spec(reader=read, layout="toy.bin", files="`toy.bin`", normalisation=(0.5, 0.25)))
    with pytest.raises(ValueError, match="needs root .* holds toy.bin"):
        load_dataset("toy")
    b = load_dataset("toy", tmp_path, augment=False)
    assert seen == [tmp_path] and b.train[0][0].max() <= (1 - 0.5) / 0.25


def test_register_dataset_refuses_bad_specs(registry):
    with pytest.raises(ValueError, match="the name 'mnist' is taken"):
        register_dataset(toy_spec(name="mnist"))
    register_dataset(dataset_spec("mnist"), replace=True)
    bad = {
        "not callable": toy_spec(reader="read_toy"),
        "'cat'.*match no class": toy_spec(
            hierarchies={"x": Groups(("a",), (("ant", "bee", "cod", "eel", "cat"),), "x")}
        ),
        "in no group": toy_spec(hierarchies={"x": Groups(("a",), (("ant", "bee"),), "x")}),
        "not a maxl.data.user_hierarchy.Groups": toy_spec(hierarchies={"x": {"a": ["ant"]}}),
        "the default hierarchy": toy_spec(default_hierarchy="nope"),
        "no ':'": toy_spec(name="toy:x"),
        "one non-empty line": toy_spec(description="two\nlines"),
        "normalisation": toy_spec(normalisation=(0.5, 0.0)),
        "channels": toy_spec(channels=0),
    }
    for message, spec in bad.items():
        with pytest.raises(ValueError, match=message):
            register_dataset(spec)
    assert "toy" not in DATASETS and "toy:x" not in DATASETS
