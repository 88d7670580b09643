"""maxl visualise / compare on tiny real runs (embedded digits, even/odd hierarchy), the
top-k selection against a naive loop, and the figures' pixel sizes and true colours."""

import base64
import html as html_module
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from maxl.analysis import plots
from maxl.analysis.run import TornLineWarning, load_run
from maxl.analysis.visualise import collect_outputs, top_k_per_aux_class
from maxl.cli.commands import main
from maxl.core.hierarchy import masked_softmax

FAST = [
    "--batch-size",
    "32",
    "--lr",
    "0.05",
    "--momentum",
    "0.9",
    "--hidden",
    "32",
    "--no-progress",
    "--gen-lr",
    "0.05",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-epoch maxl run and a 2-epoch single-task run on 300 digits, even/odd primary."""
    out = tmp_path_factory.mktemp("runs")
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--hierarchy",
                "even-odd",
                "--method",
                "maxl",
                "single",
                "--train-subset",
                "300",
                "--test-subset",
                "150",
                "--epochs",
                "2",
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    return out / "maxl", out / "single"


def png_size(path):
    with Image.open(path) as image:
        return image.size  # (width, height)


# --------------------------------------------------------------------------- top-k selection
def test_top_k_picks_the_k_most_probable_images_of_the_class():
    gen = torch.Generator().manual_seed(0)
    psi = [3, 2]
    primary = torch.randint(0, 2, (40,), generator=gen)
    logits = torch.randn(40, 5, generator=gen).round(decimals=1)  # rounding makes ties
    soft = masked_softmax(logits, primary, psi).numpy()
    k = 4
    picks = top_k_per_aux_class(soft, primary.numpy(), psi, k)
    owner = [0, 0, 0, 1, 1]
    for c in range(5):  # naive: every image of the owning class, sorted by (-p, index)
        candidates = [i for i in range(40) if primary[i] == owner[c]]
        expected = sorted(candidates, key=lambda i: (-soft[i, c], i))[:k]
        assert picks[c].tolist() == expected


def test_top_k_pads_classes_with_few_images():
    soft = np.array([[0.3, 0.7, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])
    picks = top_k_per_aux_class(soft, np.array([0, 0, 1]), [2, 1], 3)
    assert picks.tolist() == [[1, 0, -1], [0, 1, -1], [2, -1, -1]]
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k_per_aux_class(soft, np.array([0, 0, 1]), [2, 1], 0)


# --------------------------------------------------------------------------- figures
def test_top_k_grid_draws_images_in_their_true_colours(tmp_path):
    red, blue = (200, 30, 40), (10, 60, 220)
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    images[0] = torch.tensor(red, dtype=torch.uint8)[:, None, None]
    images[1] = torch.tensor(blue, dtype=torch.uint8)[:, None, None]
    fig = plots.topk_grid(images, np.array([[0, 1]]), np.array([[0.9, 0.8]]), ["class"], "t")
    path = plots.save_png(fig, tmp_path / "grid.png")
    assert png_size(path) == (plots.GRID_LABEL_PX + 2 * plots.GRID_CELL_PX, plots.TITLE_PX + plots.GRID_CELL_PX)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    centre_y = plots.TITLE_PX + 2 + (plots.GRID_CELL_PX - 8 - 14) // 2
    for column, colour in enumerate((red, blue)):
        centre_x = plots.GRID_LABEL_PX + column * plots.GRID_CELL_PX + plots.GRID_CELL_PX // 2
        assert tuple(pixels[centre_y, centre_x]) == colour


def test_grey_images_stay_grey(tmp_path):
    images = torch.full((1, 1, 6, 6), 77, dtype=torch.uint8)
    path = plots.save_png(plots.topk_grid(images, np.array([[0]]), np.array([[1.0]]), ["c"], "t"), tmp_path / "g.png")
    pixels = np.asarray(Image.open(path).convert("RGB"))
    centre = pixels[plots.TITLE_PX + 2 + (plots.GRID_CELL_PX - 22) // 2, plots.GRID_LABEL_PX + plots.GRID_CELL_PX // 2]
    assert tuple(centre) == (77, 77, 77)


# --------------------------------------------------------------------------- run loading
@pytest.mark.integration
def test_load_run_rebuilds_the_trained_networks(runs):
    maxl_dir, single_dir = runs
    config, data, net, generator, metrics = load_run(maxl_dir)
    assert config["train"]["method"] == "maxl" and generator is not None and len(metrics) == 2
    outputs = collect_outputs(net, generator, data.test)
    # the reloaded network reproduces the test accuracy the trainer logged
    accuracy = float(np.mean(outputs.primary_pred == outputs.primary))
    assert accuracy == pytest.approx(metrics[-1]["test_acc"], abs=1e-9)
    assert outputs.soft_labels.shape == (150, 10)
    np.testing.assert_allclose(outputs.soft_labels.sum(1), 1, atol=1e-5)
    single = load_run(single_dir)
    assert single.generator is None and single.net.aux_head is None


def test_load_run_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_run(tmp_path)


# --------------------------------------------------------------------------- commands
@pytest.mark.integration
def test_visualise_writes_every_figure_and_a_self_contained_report(runs, tmp_path, capsys):
    maxl_dir, single_dir = runs
    out = tmp_path / "vis"
    assert (
        main(
            [
                "visualise",
                str(maxl_dir),
                "--against",
                str(single_dir),
                "--out",
                str(out),
                "--top-k",
                "3",
                "--max-points",
                "80",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "NMI" in printed and "purity" in printed
    figures = out / "figures"
    k, psi = 3, 5
    expected = {
        "curves.png": plots.CURVES_SIZE_PX,
        "topk-0.png": (plots.GRID_LABEL_PX + k * plots.GRID_CELL_PX, plots.TITLE_PX + psi * plots.GRID_CELL_PX),
        "topk-1.png": (plots.GRID_LABEL_PX + k * plots.GRID_CELL_PX, plots.TITLE_PX + psi * plots.GRID_CELL_PX),
        "label-usage.png": (plots.USAGE_WIDTH_PX, plots.TITLE_PX + 70 + 10 * 22),  # 10 classes, 22 px rows
        "contingency.png": (2 * plots.HEATMAP_PX[0], plots.TITLE_PX + plots.HEATMAP_PX[1]),
        # 1 row by primary class + 2 primary classes; 2 runs x (generated, human) columns
        "embedding.png": (
            4 * (plots.EMBED_PANEL_PX + plots.EMBED_LEGEND_PX),
            plots.TITLE_PX + 3 * plots.EMBED_PANEL_PX,
        ),
    }
    assert sorted(p.name for p in figures.glob("*.png")) == sorted(expected)
    for name, size in expected.items():
        path = figures / name
        assert path.stat().st_size > 1000 and png_size(path) == size, name
        with Image.open(path) as image:  # not a blank canvas
            assert len(image.convert("L").getcolors(1 << 16)) > 2, name
    html = (out / "report.html").read_text()
    for name in expected:  # every figure embedded, byte for byte
        data = base64.b64encode((figures / name).read_bytes()).decode("ascii")
        assert f'alt="{name}" src="data:image/png;base64,{data}"' in html
    assert 'src="http' not in html and "href=" not in html  # nothing external
    assert html_module.escape('"method": "maxl"') in html  # the config
    agreement = json.loads((figures / "agreement.json").read_text())
    assert [c["primary_name"] for c in agreement["per_class"]] == ["even", "odd"]
    assert sum(c["num_images"] for c in agreement["per_class"]) == 150
    for c in agreement["per_class"]:  # the table's rows are the generated labels of the class
        assert np.array(c["table"]).shape == (5, 5) and np.array(c["table"]).sum() == c["num_images"]
        assert f"{c['purity']:.4g}" in html


@pytest.mark.integration
def test_visualise_refuses_runs_on_different_test_sets(runs, tmp_path, capsys):
    other = tmp_path / "other"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--hierarchy",
                "even-odd",
                "--method",
                "single",
                "--train-subset",
                "100",
                "--test-subset",
                "100",
                "--epochs",
                "1",
                "--out",
                str(other),
                *FAST,
            ]
        )
        == 0
    )
    assert main(["visualise", str(runs[0]), "--against", str(other), "--out", str(tmp_path / "v")]) == 2
    assert "different test sets" in capsys.readouterr().err


@pytest.mark.integration
def test_compare_draws_several_runs(runs, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    assert png_size(out) == plots.CURVES_SIZE_PX and out.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "maxl (" in printed and "single (" in printed and "wrote" in printed


@pytest.mark.integration
@pytest.mark.parametrize("command", ["visualise", "compare"])
def test_a_torn_last_line_of_metrics_jsonl_is_skipped_with_a_warning(runs, tmp_path, command):
    run = tmp_path / "single"
    shutil.copytree(runs[1], run)
    with open(run / "metrics.jsonl", "a") as f:  # the run was killed while appending its third epoch
        f.write('{"epoch": 3, "train_lo')
    out = (
        ["--out", str(tmp_path / "v"), "--max-points", "60", "--threads", "1"]
        if command == "visualise"
        else ["--out", str(tmp_path / "cmp.png")]
    )
    with pytest.warns(TornLineWarning) as caught:
        assert main([command, str(run), *out]) == 0
    [torn] = caught
    assert warnings.formatwarning(torn.message, torn.category, torn.filename, torn.lineno) == (
        f"maxl: warning: {run / 'metrics.jsonl'}: skipping the truncated last line 3 (the run stopped while "
        "writing it)\n"
    )


@pytest.mark.integration
def test_visualise_a_single_task_run_alone(runs, tmp_path):
    """No generator: the curves and the embedding (by primary and human labels) only."""
    out = tmp_path / "single"
    assert main(["visualise", str(runs[1]), "--out", str(out), "--max-points", "60", "--threads", "1"]) == 0
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["curves.png", "embedding.png"]
    # 1 row by primary class + 2 primary classes by human label, 1 column
    assert png_size(out / "figures" / "embedding.png") == (
        plots.EMBED_PANEL_PX + plots.EMBED_LEGEND_PX,
        plots.TITLE_PX + 3 * plots.EMBED_PANEL_PX,
    )
    html = (out / "report.html").read_text()
    assert "Generated vs human" not in html and html.count("<img ") == 2


def test_embed_2d_checks_its_input():
    from maxl.analysis.visualise import embed_2d

    with pytest.raises(ValueError, match="at least 5 points"):
        embed_2d(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="unknown embedding"):
        embed_2d(np.zeros((10, 3)), "pca")
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="umap-learn"):
            embed_2d(np.random.default_rng(0).normal(size=(10, 3)), "umap")
    xy = embed_2d(np.random.default_rng(0).normal(size=(20, 3)), "tsne", threads=1)
    assert xy.shape == (20, 2) and np.isfinite(xy).all()


def test_a_long_topk_title_shrinks_to_fit_the_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    images = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    fig = plots.topk_grid(images, np.array([[0, 1]]), np.array([[0.9, 0.8]]), ["class"], "a long run path " * 10)
    heading = fig.texts[0]
    assert heading.get_fontsize() < 13
    assert heading.get_window_extent(FigureCanvasAgg(fig).get_renderer()).width <= fig.bbox.width
    short = plots.topk_grid(images, np.array([[0, 1]]), np.array([[0.9, 0.8]]), ["class"], "t")
    assert short.texts[0].get_fontsize() == 13


@pytest.mark.integration
def test_load_run_sees_the_images_the_run_saw_with_its_normalisation_and_validation_split(tmp_path):
    """Training and the analysis load a run's images with the same call: the normalisation and
    the validation split of the run's data section are not dropped (they once were, so the
    analysis of the generated-labels protocols fed the networks other pixels than training)."""
    from maxl.train.build import RunConfig, build

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--hierarchy",
                "even-odd",
                "--method",
                "single",
                "--train-subset",
                "200",
                "--val-subset",
                "60",
                "--test-subset",
                "100",
                "--epochs",
                "1",
                "--normalisation",
                "0.5",
                "0.25",
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    run = load_run(out)
    config = json.loads((out / "config.json").read_text())
    trainer = build(RunConfig.from_dict({**config, "out": str(tmp_path / "again")}), log=lambda *a, **k: None)
    assert len(run.data.train) == len(trainer.train_set) == 140 and len(run.data.val) == 60
    assert run.data.weight_set is None and run.data.weight_index is None  # no meta-learned weighting: no split
    for loaded, trained in ((run.data.test, trainer.test_set), (run.data.val, trainer.val_set)):
        for i in (0, 7, len(loaded) - 1):
            torch.testing.assert_close(loaded[i][0], trained[i][0])
    pixels = run.data.test[0][0] * 0.25 + 0.5  # (x - 0.5) / 0.25 undone: pixels in [0, 1]
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6 and pixels.max() > 0.5


@pytest.mark.integration
def test_load_run_rebuilds_the_training_images_less_the_task_weights_held_out_split(tmp_path, capsys):
    """A meta-learned weighting (Auto-λ) trains on the training images less a held-out split for
    its outer loss: the reloaded run's training set is the trainer's (same size, same images at
    the same positions), the held-out images are exposed apart and are none of them, and the
    report counts both."""
    from maxl.train.build import RunConfig, build, load_data

    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--hierarchy", "even-odd", "--method", "single", "--aux", "rotation"]
    args += ["--weighting", "auto-lambda", "--weight-split", "30", "--train-subset", "200", "--val-subset", "40"]
    args += ["--test-subset", "100", "--epochs", "1", "--threads", "1", "--out", str(out), *FAST]
    assert main(args) == 0
    run = load_run(out)
    config = json.loads((out / "config.json").read_text())
    trainer = build(RunConfig.from_dict({**config, "out": str(tmp_path / "again")}), log=lambda *a, **k: None)
    assert len(run.data.train) == len(trainer.train_set) == config["data"]["num_train"] == 200 - 40 - 30
    assert torch.equal(run.data.train.images, trainer.train_set.images)
    assert torch.equal(run.data.train.labels, trainer.train_set.labels)
    assert len(run.data.weight_set) == 30 and torch.equal(run.data.weight_set.images, trainer.weight_set.images)
    assert len(run.data.val) == 40  # the validation split is carved first, as in training
    # the held-out positions among the loaded training images; the training set is the rest, in order
    settings = RunConfig.from_dict(config)
    full = load_data(settings.data, settings.train.seed, augment=False).train
    held = run.data.weight_index.tolist()
    assert len(set(held)) == 30 and all(0 <= i < len(full) for i in held)
    kept = [i for i in range(len(full)) if i not in set(held)]
    assert torch.equal(full.images[held], run.data.weight_set.images)
    assert torch.equal(full.images[kept], run.data.train.images)
    # the networks are the trained ones: the reloaded network reproduces the logged test accuracy
    outputs = collect_outputs(run.net, run.generator, run.data.test)
    assert float(np.mean(outputs.primary_pred == outputs.primary)) == pytest.approx(run.metrics[-1]["test_acc"])
    vis = tmp_path / "vis"
    assert main(["visualise", str(out), "--out", str(vis), "--max-points", "60", "--threads", "1"]) == 0
    report = (vis / "report.html").read_text()
    assert "130 training (+ 30 held out for the task weights) / 100 test images" in report
