"""Tests of the experiment harness (experiments.harness) and its tables and figures (maxl.analysis.results)."""

import csv
import io
import json

import numpy as np
import pytest
import torch

from maxl.cli import commands as cli
from experiments import harness
from experiments.harness import CONFIGS, GridConfig, GridMismatchError, run_argv, run_grid
from maxl.analysis.results import accuracy_curves, aggregate, collect_runs, markdown_table, plot_curves, write_tables

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py

TINY = GridConfig(
    name="tiny", description="tiny digits grid", dataset="digits", hierarchy="even-odd",
    methods=("single", "random"), seeds=(0, 1),
    train_args=("--epochs", "2", "--batch-size", "32", "--hidden", "16", "--train-subset", "128",
                "--test-subset", "64", "--lr", "0.05", "--momentum", "0.9"),
)


def count_training_calls(monkeypatch):
    calls = []
    original = harness.build

    def counting(run, resume=False):
        calls.append((run.train.method, run.train.seed))
        return original(run, resume=resume)

    monkeypatch.setattr(harness, "build", counting)
    return calls


def test_grid_resumes_without_rerunning_finished_runs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "grid"
    calls = count_training_calls(monkeypatch)
    first = run_grid(TINY, out, seeds=[0], device="cpu", log=lambda _: None)  # half of the grid
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()  # the overall bar: runs done, time left
    assert any(line.startswith("grid tiny: 100%") and "2/2" in line and "<00:00" in line for line in bar), bar
    assert any("1/2" in line and "random seed 0" in line for line in bar), bar
    assert calls == [("single", 0), ("random", 0)] and [r["status"] for r in first] == ["ran", "ran"]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/*") if p.is_file()}
    # an interrupted run: its folder and run.json exist, but it never wrote summary.json
    (out / "random" / "seed1").mkdir(parents=True)
    (out / "random" / "seed1" / "run.json").write_text(json.dumps({"argv": run_argv(TINY, "random", 1)}))

    calls.clear()
    second = run_grid(TINY, out, device="cpu", log=lambda _: None)
    assert calls == [("single", 1), ("random", 1)]  # only the missing runs
    assert [(r["method"], r["seed"], r["status"]) for r in second] == [
        ("single", 0, "skipped"), ("random", 0, "skipped"), ("single", 1, "ran"), ("random", 1, "ran")]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished runs untouched
    for r in second:
        assert r["summary"] == json.loads((r["folder"] / "summary.json").read_text())
        spec = json.loads((r["folder"] / "run.json").read_text())
        assert spec["argv"] == run_argv(TINY, r["method"], r["seed"]) and spec["command"].startswith("maxl train")

    calls.clear()
    assert all(r["status"] == "skipped" for r in run_grid(TINY, out, log=lambda _: None)) and calls == []
    with pytest.raises(GridMismatchError, match="--epochs 3"):  # the same folder, other settings: refused
        run_grid(TINY, out, extra_args=["--epochs", "3"], log=lambda _: None)
    assert calls == []

    # tables and figure from the saved files
    runs = collect_runs(out)
    assert [(r.method, r.seed) for r in runs] == [("single", 0), ("single", 1), ("random", 0), ("random", 1)]
    rows = aggregate(runs)
    for row in rows:
        summaries = [json.loads((out / row["method"] / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
        last5 = [s["last5_mean_test_acc"] for s in summaries]
        assert row["last5_mean"] == pytest.approx((last5[0] + last5[1]) / 2)
        assert row["last5_std"] == pytest.approx(abs(last5[0] - last5[1]) / 2 ** 0.5)  # n - 1 std of two values
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


def test_grid_continues_an_interrupted_run_from_its_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "grid"
    folder = out / "random" / "seed0"
    argv = run_argv(TINY, "random", 0)
    # the run was stopped after its first epoch: checkpoint.pt and one metrics line, no summary.json
    assert cli.main(["train", *argv, "--epochs", "1", "--out", str(folder), "--device", "cpu", "--no-progress",
                     "--preset", "paper"]) == 0
    (folder / "summary.json").unlink()
    (folder / "run.json").write_text(json.dumps({"argv": argv}))
    first_epoch = (folder / "metrics.jsonl").read_text()

    resumed = []
    original = harness.build
    monkeypatch.setattr(harness, "build", lambda run, resume=False: resumed.append(resume and run.out)
                        or original(run, resume=resume))
    [result] = run_grid(TINY, out, methods=["random"], seeds=[0], device="cpu", log=lambda _: None)
    assert result["status"] == "resumed" and resumed == [str(folder)]
    metrics = (folder / "metrics.jsonl").read_text()
    assert metrics.startswith(first_epoch) and [json.loads(m)["epoch"] for m in metrics.splitlines()] == [1, 2]
    assert result["summary"]["epochs"] == 2


def test_curves_are_mean_and_std_over_seeds(tmp_path):
    accs = {("maxl", 0): [0.5, 0.6, 0.7], ("maxl", 1): [0.7, 0.6, 0.9], ("single", 0): [0.1, 0.2, 0.3]}
    for (method, seed), acc in accs.items():
        folder = tmp_path / method / f"seed{seed}"
        folder.mkdir(parents=True)
        config = {"train": {"method": method, "seed": seed}, "labels": {"time_s": 2.0} if method == "maxl" else None}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "test_acc": a}) + "\n"
                                                      for e, a in enumerate(acc)))
        (folder / "summary.json").write_text(json.dumps({"final_test_acc": acc[-1], "best_test_acc": max(acc),
                                                         "last5_mean_test_acc": float(np.mean(acc)),
                                                         "wall_time_s": 10.0 + seed}))
    runs = collect_runs(tmp_path)
    curves = accuracy_curves(runs)
    epochs, mean, std = curves["maxl"]
    assert epochs.tolist() == [1, 2, 3]
    assert mean == pytest.approx([0.6, 0.6, 0.8])
    assert std == pytest.approx([0.1 * 2 ** 0.5, 0.0, 0.1 * 2 ** 0.5])  # sample std of two values
    assert curves["single"][2].tolist() == [0.0, 0.0, 0.0]
    rows = {r["method"]: r for r in aggregate(runs)}
    assert rows["single"]["final_std"] == 0.0 and rows["single"]["n_seeds"] == 1
    assert rows["maxl"]["time_s_mean"] == pytest.approx(12.5)  # training 10 / 11 s + 2 s of labels
    assert rows["single"]["maxl_minus_last5_mean"] == pytest.approx(0.6 - 0.2)  # seed 0 only: paired
    assert np.isnan(rows["maxl"]["maxl_minus_last5_mean"])
    assert rows["maxl"]["minus_single_last5_mean"] == pytest.approx(0.6 - 0.2)
    assert rows["maxl"]["minus_single_last5_std"] == 0.0 and np.isnan(rows["single"]["minus_single_last5_mean"])
    with pytest.raises(FileNotFoundError, match="no finished run"):
        collect_runs(tmp_path / "single" / "seed0")


def test_named_configurations():
    assert {"paper-cifar100", "cifar10-animal-vehicle", "mnist"} <= set(CONFIGS)
    for grid in CONFIGS.values():
        [run], _ = cli.run_configs(cli.build_parser().parse_args(["train", *run_argv(grid, grid.methods[0],
                                                                                     grid.seeds[0]), "--preset", "paper"]))
        assert run.data.dataset == grid.dataset and run.data.hierarchy == grid.hierarchy
        assert len(grid.methods) == 5 and len(grid.seeds) in (3, 5)
    [paper], _ = cli.run_configs(cli.build_parser().parse_args(["train", *run_argv(CONFIGS["paper-cifar100"],
                                                                                   "maxl", 0), "--preset", "paper"]))
    assert (paper.model.backbone, paper.train.epochs, paper.train.lr, paper.train.momentum,
            paper.data.hierarchy) == ("vgg16", 200, 0.01, 0.0, "20-100")
    [small, large] = [cli.run_configs(cli.build_parser().parse_args(["train", *run_argv(CONFIGS[name], "single", 0)]))
                      [0][0].data for name in ("protocol-cifar10", "protocol-cifar10-val3000")]
    assert small.train_subset - small.val_subset == large.train_subset - large.val_subset == 4000  # same training size
    assert (small.val_subset, large.val_subset) == (1000, 3000)
    from maxl.data.user_hierarchy import read_hierarchy_file

    pairs = read_hierarchy_file(CONFIGS["protocol-cifar10-pairs"].hierarchy)  # the CIFAR-10 classes, two by two
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert [len(m) for m in pairs.members] == [2] * 5 and sorted(c for m in pairs.members for c in m) == classes
    with pytest.raises(ValueError, match="may not set"):
        GridConfig(name="bad", description="", dataset="digits", train_args=("--seed", "3"))
    with pytest.raises(ValueError, match="unknown methods"):
        GridConfig(name="bad", description="", dataset="digits", methods=("magic",))


def test_markdown_table_of_a_single_seed(tmp_path):
    test_curves_are_mean_and_std_over_seeds(tmp_path)  # writes the run folders
    runs = [r for r in collect_runs(tmp_path) if r.method == "single"]
    for r in runs:
        r.config.update(data={"name": "x", "num_train": 3, "num_test": 2, "train_subset": None},
                        model={"psi": [1], "backbone": "b", "hidden": 4},
                        train={"method": "single", "seed": 0, "epochs": 3, "batch_size": 2, "lr": 0.1,
                               "momentum": 0.0, "weight_decay": 0.0, "loss": "ce", "gen_lr": 0.1, "lr_step": 5, "lr_gamma": 0.5,
                               "schedule": "alternate", "meta": {"order": "second", "entropy_weight": 0.2}})
    text = markdown_table(runs, "t")
    assert "| single | 0 | 30.00 ± 0.00 | 30.00 ± 0.00 | 20.00 ± 0.00 | — | — | 10 ± 0 |" in text


def test_every_experiment_reader_skips_a_torn_last_line_of_metrics_jsonl(tmp_path):
    from experiments import aux_cifar10, compare_runs
    from maxl.analysis.run import TornLineWarning

    record = {"epoch": 1, "test_acc": 0.5, "epoch_time_s": 1.0, "train_weight_rotation": 1.0}
    config = {"train": {"method": "single", "seed": 0}, "data": {"num_train": 10, "num_test": 5}}
    folders = [tmp_path / "grid" / "single" / "seed0", aux_cifar10.run_folder(tmp_path / "aux", "cifar10", "single", 0)]
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "summary.json").write_text(json.dumps({"final_test_acc": 0.5}))
        (folder / "metrics.jsonl").write_text(json.dumps(record) + '\n{"epoch": 2, "test_')  # killed mid-append
    readers = {"collect_runs": lambda: collect_runs(tmp_path / "grid")[0].metrics,
               "compare_runs": lambda: compare_runs.records(folders[0]),
               "aux_cifar10": lambda: aux_cifar10.load_runs(tmp_path / "aux")[0]["test_acc"]}
    expected = {"collect_runs": [record], "compare_runs": [{"epoch": 1, "test_acc": 0.5, "train_weight_rotation": 1.0}],
                "aux_cifar10": [0.5]}
    for name, read in readers.items():
        with pytest.warns(TornLineWarning, match="skipping the truncated last line 2"):
            assert read() == expected[name], name
