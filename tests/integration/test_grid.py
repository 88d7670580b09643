"""The grid runner (maxl.train.grid, `maxl grid`): tiny digits grids from TOML files, resumed,
continued from a checkpoint, refused on other settings; its results tables."""

import csv
import io
import json

import numpy as np
import pytest

import maxl.train.build
from maxl.analysis.results import aggregate, collect_runs, plot_curves, write_tables
from maxl.cli import commands as cli
from maxl.train.grid import GridMismatchError, load_grid, run_folder, run_grid

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py

TINY = """\
description = "tiny digits grid"
methods = ["single", "random"]
seeds = [0, 1]

[base]
preset = "paper"
data.dataset = "digits"
data.hierarchy = "even-odd"
data.train_subset = 128
data.test_subset = 64
model.hidden = 16
train.epochs = 2
train.batch_size = 32
train.lr = 0.05
train.momentum = 0.9

[variants.single]
train.method = "single"

[variants.every4]
train.method = "maxl"
generator.schedule = "per-step"
train.meta.engine = "jvp"
generator.every = 4
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return load_grid(path)


def count_training_calls(monkeypatch):
    calls = []
    original = maxl.train.build.build

    def counting(run, resume=False):
        calls.append((run.train.method, run.train.seed, resume))
        return original(run, resume=resume)

    monkeypatch.setattr(maxl.train.build, "build", counting)
    return calls


def test_grid_resumes_without_rerunning_finished_runs(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "grid"
    calls = count_training_calls(monkeypatch)
    first = run_grid(tiny, out, seeds=[0], device="cpu", log=lambda _: None)  # half of the grid
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()  # the overall bar: runs done, time left
    assert any(line.startswith("grid tiny: 100%") and "2/2" in line and "<00:00" in line for line in bar), bar
    assert any("1/2" in line and "random seed 0" in line for line in bar), bar
    assert calls == [("single", 0, False), ("random", 0, False)] and [r["status"] for r in first] == ["ran", "ran"]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/*") if p.is_file()}
    # an interrupted run: its folder and run.json exist, but it never wrote config.json or summary.json
    (out / "random" / "seed1").mkdir(parents=True)
    (out / "random" / "seed1" / "run.json").write_text("{}")

    calls.clear()
    second = run_grid(tiny, out, device="cpu", log=lambda _: None)
    assert calls == [("single", 1, False), ("random", 1, False)]  # only the missing runs
    assert [(r["method"], r["seed"], r["status"]) for r in second] == [
        ("single", 0, "skipped"),
        ("random", 0, "skipped"),
        ("single", 1, "ran"),
        ("random", 1, "ran"),
    ]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished runs untouched
    for r in second:
        assert r["summary"] == json.loads((r["folder"] / "summary.json").read_text())
        spec = json.loads((r["folder"] / "run.json").read_text())
        assert spec["grid"] == "tiny" and spec["overlay"]["train.seed"] == r["seed"]
        config = json.loads((r["folder"] / "config.json").read_text())
        assert (config["train"]["epochs"], config["train"]["lr"], config["preset"]) == (2, 0.05, "paper")

    calls.clear()
    assert all(r["status"] == "skipped" for r in run_grid(tiny, out, log=lambda _: None)) and calls == []
    # the same folder, other settings: refused, naming them, before anything runs
    with pytest.raises(GridMismatchError, match=r"train.epochs \(folder: 2, grid: 3\)"):
        run_grid(tiny, out, overlays=[{"train": {"epochs": 3}}], log=lambda _: None)
    with pytest.raises(GridMismatchError, match="train.lr"):
        run_grid(load_grid(tmp_path / "tiny.toml"), out, overlays=[{"train": {"lr": 0.1}}], log=lambda _: None)
    assert calls == []
    # where a run is computed is not what it computes: another device or data folder is the same run
    assert all(
        r["status"] == "skipped"
        for r in run_grid(tiny, out, device="cpu", threads=1, data_root=str(tmp_path), log=lambda _: None)
    )

    # tables and figure from the saved files
    runs = collect_runs(out)
    assert [(r.method, r.seed) for r in runs] == [("single", 0), ("single", 1), ("random", 0), ("random", 1)]
    rows = aggregate(runs)
    for row in rows:
        summaries = [json.loads((out / row["method"] / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
        last5 = [s["last5_mean_test_acc"] for s in summaries]
        assert row["last5_mean"] == pytest.approx((last5[0] + last5[1]) / 2)
        assert row["last5_std"] == pytest.approx(abs(last5[0] - last5[1]) / 2**0.5)  # n - 1 std of two values
        assert row["final_mean"] == pytest.approx(np.mean([s["final_test_acc"] for s in summaries]))
        assert row["n_seeds"] == 2 and row["seeds"] == "0 1"
    md, cs = write_tables(runs, tmp_path / "figs" / "tiny-results", "tiny", note="a note")
    text = md.read_text()
    assert "digits:even-odd, psi = [5, 5], backbone tiny-cnn" in text and "a note" in text
    assert f"| random | 0 1 | {100 * rows[1]['final_mean']:.2f} ± {100 * rows[1]['final_std']:.2f}" in text
    parsed = list(csv.DictReader(io.StringIO(cs.read_text())))
    assert [p["method"] for p in parsed] == ["single", "random"]
    assert float(parsed[0]["best_mean"]) == pytest.approx(rows[0]["best_mean"])
    figure = plot_curves(runs, tmp_path / "figs" / "tiny.png", "tiny")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_continues_an_interrupted_run_from_its_checkpoint(tiny, tmp_path, monkeypatch):
    out = tmp_path / "grid"
    folder = run_folder(out, "random", 0)
    # the run was stopped after its first epoch: checkpoint.pt and one metrics line, no summary.json
    first = tiny.resolve(
        "random", 0, None, {"train": {"epochs": 1, "device": "cpu", "progress": False}, "out": str(folder)}
    )
    maxl.train.build.build(first).fit()
    (folder / "summary.json").unlink()
    first_epoch = (folder / "metrics.jsonl").read_text()

    calls = count_training_calls(monkeypatch)
    [result] = run_grid(tiny, out, methods=["random"], seeds=[0], device="cpu", log=lambda _: None)
    assert result["status"] == "resumed" and calls == [("random", 0, True)]
    metrics = (folder / "metrics.jsonl").read_text()
    assert metrics.startswith(first_epoch) and [json.loads(m)["epoch"] for m in metrics.splitlines()] == [1, 2]
    assert result["summary"]["epochs"] == 2
    assert json.loads((folder / "config.json").read_text())["train"]["epochs"] == 2


def test_maxl_grid_runs_variants_and_writes_one_row_per_variant(tiny, tmp_path, capsys):
    out = tmp_path / "variants"
    grid = str(tmp_path / "tiny.toml")
    assert (
        cli.main(
            [
                "grid",
                grid,
                "--variants",
                "all",
                "--seeds",
                "0",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--no-progress",
                "--set",
                "train.epochs=1",
            ]
        )
        == 0
    )
    for variant, method in (("single", "single"), ("every4", "maxl")):
        config = json.loads((run_folder(out, method, 0, variant) / "config.json").read_text())
        assert (config["train"]["method"], config["train"]["epochs"]) == (method, 1)
    config = json.loads((run_folder(out, "maxl", 0, "every4") / "config.json").read_text())
    assert (config["generator"]["schedule"], config["generator"]["every"], config["train"]["meta"]["engine"]) == (
        "per-step",
        4,
        "jvp",
    )
    table = (out / "results.md").read_text()
    assert "| single | 0 |" in table and "| every4 | 0 |" in table and "tiny digits grid" in table
    capsys.readouterr()
    # resumed with other settings: one error line, exit 2
    assert cli.main(["grid", grid, "--variants", "single", "--seeds", "0", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maxl: error: ") and "train.epochs (folder: 1, grid: 2)" in err and err.count("\n") == 1
    assert cli.main(["grid", grid, "--variants", "nothing", "--out", str(out)]) == 2
    assert "has no variant 'nothing'" in capsys.readouterr().err
    assert cli.main(["grid", "--list"]) == 0 and "protocol-mnist-long" in capsys.readouterr().out
    assert cli.main(["grid", grid, "--dry-run", "--out", str(tmp_path / "dry")]) == 0
    assert "would run" in capsys.readouterr().out and not (tmp_path / "dry").exists()
