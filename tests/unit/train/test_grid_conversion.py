"""Temporary (issue 24, part 4): the TOML grids of maxl/grids resolve every run to exactly the
RunConfig the old argv forms (experiments/harness.py CONFIGS, the VARIANTS of
experiments/generated_labels.py and experiments/meta_variants.py) gave through `maxl train`'s
parsing. Goes with the old forms."""

from pathlib import Path

import pytest

from experiments import generated_labels, harness, meta_variants
from maxl.cli import commands as cli
from maxl.train.grid import grid_names, load_grid


@pytest.fixture(autouse=True)
def no_inert_check(monkeypatch):
    """The command line now refuses flags without effect (the implicit variant's --meta-engine): a
    refusal, not another resolution; the comparison is with what the flags resolved to."""
    from maxl.train.build import RunConfig

    if hasattr(RunConfig, "inert_settings"):
        monkeypatch.setattr(RunConfig, "inert_settings", lambda self: {})


def old_run(grid, method, seed, extra=(), data_root=None):
    """A run as experiments.harness.run_grid made it (a new run: --preset paper)."""
    root = data_root if data_root is not None else grid.data_root
    argv = ["train", *harness.run_argv(grid, method, seed), *extra,
            *(["--data-root", root] if root is not None else []), "--out", "runs/x", "--device", "cpu",
            "--preset", "paper", "--no-progress", "--threads", "1"]
    [run], _ = cli.run_configs(cli.build_parser().parse_args(argv))
    return run.to_dict()


def new_run(grid, method, seed, variant=None, data_root=None):
    where = {"train": {"device": "cpu", "progress": False}, "threads": 1, "out": "runs/x"}
    if data_root is not None:
        where["data"] = {"data_root": data_root}
    return grid.resolve(method, seed, variant, where).to_dict()


def same(old: dict, new: dict) -> None:
    old_h, new_h = old["data"].pop("hierarchy"), new["data"].pop("hierarchy")
    if old_h and old_h.endswith(".toml"):  # the hierarchy file moved into the package, unchanged
        assert Path(new_h).name == Path(old_h).name and Path(new_h).read_text() == Path(old_h).read_text()
    else:
        assert old_h == new_h
    assert new == old


def test_the_same_grids_by_name():
    assert grid_names() == sorted(harness.CONFIGS)


@pytest.mark.parametrize("name", sorted(harness.CONFIGS))
def test_every_run_of_every_grid_resolves_as_before(name):
    old, new = harness.CONFIGS[name], load_grid(name)
    assert (new.methods, new.seeds, new.description.replace("maxl/grids/", "experiments/"), new.note) == \
        (old.methods, old.seeds, old.description, old.note)
    for seed in old.seeds:
        for method in old.methods:
            same(old_run(old, method, seed), new_run(new, method, seed))
    same(old_run(old, "maxl", 0, data_root="/elsewhere"), new_run(new, "maxl", 0, data_root="/elsewhere"))


@pytest.mark.parametrize("name", [n for n in sorted(harness.CONFIGS) if n.startswith("protocol-")])
def test_every_generated_labels_variant_resolves_as_before(name):
    old, new = harness.CONFIGS[name], load_grid(name)
    assert list(new.variants) == list(generated_labels.VARIANTS)
    for variant, (method, flags) in generated_labels.VARIANTS.items():
        assert new.variant_methods(variant) == [method]
        for seed in (0, 4):
            same(old_run(old, method, seed, flags), new_run(new, method, seed, variant))


def test_every_meta_variant_resolves_as_before():
    old, new = harness.CONFIGS[meta_variants.GRID], load_grid(meta_variants.GRID)
    assert list(new.variants) == list(meta_variants.VARIANTS)
    for variant, (method, flags) in meta_variants.VARIANTS.items():
        assert new.variant_methods(variant) == [method]
        same(old_run(old, method, 1, flags), new_run(new, method, 1, variant))
