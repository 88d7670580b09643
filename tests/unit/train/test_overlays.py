"""Config overlays (maxl.train.overlays) and grid files (maxl.train.grid): merging, resolution,
the built-in grids' settings, and grid files that are refused."""

import pytest

from maxl.cli.grid import parse_set
from maxl.data.user_hierarchy import read_hierarchy_file
from maxl.train.build import RunConfig
from maxl.train.grid import Grid, grid_names, load_grid
from maxl.train.migrate import MovedSettingsWarning
from maxl.train.overlays import dotted, merge_overlays, nested, resolve


def test_merge_overlays_merges_tables_and_replaces_everything_else():
    base = {
        "data": {"dataset": "mnist", "normalisation": [0.1, 0.3]},
        "train": {"lr": 0.1, "meta": {"order": "second"}},
    }
    merged = merge_overlays(
        base,
        {"train": {"meta": {"engine": "jvp"}}, "data": {"normalisation": [0.5]}},
        {"train": {"lr": 0.2}, "out": "x"},
    )
    assert merged == {
        "data": {"dataset": "mnist", "normalisation": [0.5]},
        "out": "x",
        "train": {"lr": 0.2, "meta": {"order": "second", "engine": "jvp"}},
    }
    assert base["train"] == {"lr": 0.1, "meta": {"order": "second"}}  # the arguments are not changed
    assert merge_overlays({"data": {"x": 1}}, {"data": 3}) == {"data": 3}  # the configuration refuses that later
    assert nested({"train.meta.engine": "jvp", "train.lr": 0.1}) == {"train": {"meta": {"engine": "jvp"}, "lr": 0.1}}
    assert dotted(nested({"train.meta.engine": "jvp", "out": "o"})) == {"train.meta.engine": "jvp", "out": "o"}


def test_resolve_puts_the_preset_under_the_overlays():
    run = resolve({"data": {"dataset": "mnist"}}, {"train": {"lr": 0.2}})
    assert (run.preset, run.train.lr, run.model.backbone, run.train.epochs) == ("mnist", 0.2, "small-cnn", 5)
    paper = resolve({"preset": "paper", "data": {"dataset": "mnist"}})
    assert (paper.preset, paper.train.lr, paper.model.backbone) == ("paper", RunConfig().train.lr, None)
    assert resolve({"data": {"dataset": "mnist"}}, preset="paper").preset == "paper"
    with pytest.raises(ValueError, match="unknown run settings"):
        resolve({"nonsense": 1})
    with pytest.raises(ValueError, match="epochs"):
        resolve({"train": {"epochs": "3"}})


def test_set_values_are_read_as_toml():
    assert parse_set("train.epochs=3") == {"train": {"epochs": 3}}
    assert parse_set("data.normalisation=[0.5, 0.25]") == {"data": {"normalisation": [0.5, 0.25]}}
    assert parse_set("model.backbone=cnn3") == {"model": {"backbone": "cnn3"}}  # bare text: a string
    assert parse_set('data.hierarchy="even-odd"') == {"data": {"hierarchy": "even-odd"}}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_set("train.epochs")


def test_the_built_in_grids_resolve_to_their_settings():
    assert {
        "paper-cifar100",
        "cifar10-animal-vehicle",
        "mnist",
        "digits",
        "protocol-cifar10",
        "protocol-mnist",
        "protocol-mnist-long",
        "protocol-cifar10-val3000",
        "protocol-cifar10-pairs",
    } == set(grid_names())
    for name in grid_names():
        grid = load_grid(name)
        assert len(grid.methods) == 5 and len(grid.seeds) in (3, 5) and grid.description and grid.note
        run = grid.resolve(grid.methods[-1], grid.seeds[-1])
        assert run.preset == "paper" and (run.train.method, run.train.seed) == ("maxl", grid.seeds[-1])
    paper = load_grid("paper-cifar100").resolve("maxl", 0)
    assert (
        paper.data.dataset,
        paper.data.hierarchy,
        paper.data.data_root,
        paper.model.backbone,
        paper.train.epochs,
        paper.train.lr,
        paper.train.momentum,
    ) == ("cifar100", "20-100", "data", "vgg16", 200, 0.01, 0.0)
    mnist = load_grid("mnist").resolve("human", 2)
    assert (
        mnist.data.dataset,
        mnist.data.hierarchy,
        mnist.data.train_subset,
        mnist.data.test_subset,
        mnist.model.backbone,
        mnist.model.hidden,
        mnist.train.epochs,
        mnist.train.batch_size,
        mnist.train.lr,
        mnist.train.momentum,
        mnist.train.lr_step,
    ) == ("mnist", "even-odd", 3000, 2000, "tiny-cnn", 128, 10, 100, 0.03, 0.9, 3)
    # the protocol: 3-layer CNN, linear heads, (x - 0.5) / 0.25, reflect padding, one-cycle lr 0.1
    small, large = (load_grid(n).resolve("single", 0) for n in ("protocol-cifar10", "protocol-cifar10-val3000"))
    assert (
        small.model.backbone,
        small.model.hidden,
        small.data.normalisation,
        small.data.padding_mode,
        small.train.lr,
        small.train.momentum,
        small.train.lr_schedule,
        small.train.warmup,
        small.train.epochs,
        small.objective.record_parts,
    ) == ("cnn3", 0, [0.5, 0.25], "reflect", 0.1, 0.0, "onecycle", 0.15, 15, True)
    assert small.data.train_subset - small.data.val_subset == large.data.train_subset - large.data.val_subset == 4000
    assert (small.data.val_subset, large.data.val_subset, small.data.data_root) == (1000, 3000, "data/cifar10-jpeg")
    assert load_grid("protocol-mnist-long").resolve("maxl", 0).train.epochs == 60
    pairs = read_hierarchy_file(load_grid("protocol-cifar10-pairs").resolve("single", 0).data.hierarchy)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert [len(m) for m in pairs.members] == [2] * 5 and sorted(c for m in pairs.members for c in m) == classes


def test_the_variants_of_the_built_in_grids():
    grid = load_grid("protocol-mnist-long")
    assert len(grid.variants) == 31 and grid.variant_methods("single") == ["single"]
    assert grid.variant_methods("ps-adam-mi") == ["maxl"]
    v = grid.resolve("maxl", 3, "ps-features-adam-iic-mi-implicit")
    assert (
        v.generator.schedule,
        v.generator.optimizer,
        v.generator.weight_decay,
        v.generator.network,
        v.generator.every,
        v.objective.consistency_weight,
        v.objective.image_entropy_weight,
        v.train.meta.order,
        v.train.meta.neumann_terms,
        v.train.meta.inner_lr,
        v.train.epochs,
    ) == ("per-step", "adam", 0.0, "features", 4, 1.0, 0.2, "implicit", 10, 0.03, 60)
    rot = grid.resolve("maxl", 0, "ps-features-adam-iic-mi-rot15")
    assert (rot.objective.consistency_flip, rot.objective.consistency_rotation) == (False, 15.0)
    paper = grid.resolve("maxl", 0, "paper")
    assert paper.to_dict() == grid.resolve("maxl", 0).to_dict()  # the paper's MAXL: the protocol as it is
    meta = load_grid("mnist")
    assert list(meta.variants) == ["single", "maxl", "maxl-fused-jvp", "maxl-every4"]
    every4 = meta.resolve("maxl", 0, "maxl-every4")
    assert (every4.generator.schedule, every4.train.meta.engine, every4.generator.every) == ("per-step", "jvp", 4)


def test_grid_files_that_are_refused(tmp_path):
    def grid(text, name="g"):
        (tmp_path / f"{name}.toml").write_text(text)
        return load_grid(tmp_path / f"{name}.toml")

    with pytest.raises(ValueError, match="unknown entries"):
        grid("method = ['maxl']")
    with pytest.raises(ValueError, match="may not set"):
        grid("[base]\ntrain.seed = 3")
    with pytest.raises(ValueError, match="may not set"):
        grid("[base]\ntrain.method = 'maxl'")
    with pytest.raises(ValueError, match="unknown methods"):
        grid("methods = ['magic']")
    with pytest.raises(ValueError, match="seeds"):
        grid("seeds = [1, 1]")
    with pytest.raises(ValueError, match="sets train.method 'magic'"):
        grid("[variants.v]\ntrain.method = 'magic'")
    with pytest.raises(ValueError, match="cannot parse"):
        grid("[base")
    with pytest.raises(FileNotFoundError, match="no grid 'nothing-like-this'"):
        load_grid("nothing-like-this")
    (tmp_path / "loop.toml").write_text("include = ['g']")
    with pytest.raises(ValueError, match="includes itself"):
        grid("include = ['loop']")
    with pytest.raises(ValueError, match="unknown run settings"):  # an overlay the configuration refuses
        grid("[base]\nnonsense = 1").resolve("single", 0)
    with pytest.raises(ValueError, match="methods"):
        Grid(name="x", methods=())


def test_included_files_lie_underneath_and_hierarchy_files_are_read_next_to_their_grid(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "h.toml").write_text('even = ["0", "2"]\nodd = ["1", "3"]\n')
    (tmp_path / "shared" / "_common.toml").write_text(
        'seeds = [4, 5]\nmethods = ["single", "maxl"]\nnote = "common"\n[base]\npreset = "paper"\n'
        'data.dataset = "digits"\ndata.hierarchy = "h.toml"\ntrain.lr = 0.5\ntrain.epochs = 7\n'
        "[variants.a]\ntrain.meta.entropy_weight = 0.1\n"  # the old path of objective.entropy_weight: migrated
    )
    (tmp_path / "g.toml").write_text(
        'include = ["shared/_common"]\nmethods = ["maxl"]\n[base]\ntrain.lr = 0.25\n'
        '[variants.a]\ngenerator.lr = 0.01\n[variants.b]\ntrain.method = "single"\n'
    )
    g = load_grid(tmp_path / "g.toml")
    assert (g.methods, g.seeds, g.note) == (("maxl",), (4, 5), "common")  # lists replaced, the rest inherited
    with pytest.warns(MovedSettingsWarning, match="train.meta -> objective: entropy_weight"):
        run = g.resolve("maxl", 4, "a")
    assert (run.train.lr, run.train.epochs, run.generator.lr, run.objective.entropy_weight) == (0.25, 7, 0.01, 0.1)
    assert run.data.hierarchy == str((tmp_path / "shared" / "h.toml").resolve())
    assert g.variant_methods("a") == ["maxl"] and g.variant_methods("b") == ["single"]


def test_the_presets_are_overlay_files():
    from maxl.train.presets import PRESETS, PRESETS_DIR

    files = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))
    assert files == ["digits", "mnist", "rgb32"] == sorted(set(PRESETS) - {"paper"})
    assert PRESETS["rgb32"] == {
        "model.backbone": "cnn3",
        "train.epochs": 10,
        "train.batch_size": 128,
        "train.lr": 0.1,
        "train.momentum": 0.9,
        "train.weight_decay": 5e-4,
        "train.lr_schedule": "onecycle",
    }
    run = resolve({"data": {"dataset": "digits"}})
    assert (run.preset, run.model.backbone, run.model.hidden, run.train.epochs, run.train.lr_step) == (
        "digits",
        "tiny-cnn",
        64,
        15,
        1000,
    )
