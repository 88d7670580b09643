"""Tests of the results tables and figures of a grid's run folders (maxl.analysis.results); the grid
runner itself is tested in test_grid.py."""

import json

import numpy as np
import pytest

from maxl.analysis.results import accuracy_curves, aggregate, collect_runs, markdown_table

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py


def test_curves_are_mean_and_std_over_seeds(tmp_path):
    accs = {("maxl", 0): [0.5, 0.6, 0.7], ("maxl", 1): [0.7, 0.6, 0.9], ("single", 0): [0.1, 0.2, 0.3]}
    for (method, seed), acc in accs.items():
        folder = tmp_path / method / f"seed{seed}"
        folder.mkdir(parents=True)
        config = {"train": {"method": method, "seed": seed}, "labels": {"time_s": 2.0} if method == "maxl" else None}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e + 1, "test_acc": a}) + "\n" for e, a in enumerate(acc))
        )
        (folder / "summary.json").write_text(
            json.dumps(
                {
                    "final_test_acc": acc[-1],
                    "best_test_acc": max(acc),
                    "last5_mean_test_acc": float(np.mean(acc)),
                    "wall_time_s": 10.0 + seed,
                }
            )
        )
    runs = collect_runs(tmp_path)
    curves = accuracy_curves(runs)
    epochs, mean, std = curves["maxl"]
    assert epochs.tolist() == [1, 2, 3]
    assert mean == pytest.approx([0.6, 0.6, 0.8])
    assert std == pytest.approx([0.1 * 2**0.5, 0.0, 0.1 * 2**0.5])  # sample std of two values
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


def test_markdown_table_of_a_single_seed(tmp_path):
    test_curves_are_mean_and_std_over_seeds(tmp_path)  # writes the run folders
    runs = [r for r in collect_runs(tmp_path) if r.method == "single"]
    for r in runs:
        r.config.update(
            data={"name": "x", "num_train": 3, "num_test": 2, "train_subset": None},
            model={"psi": [1], "backbone": "b", "hidden": 4},
            train={
                "method": "single",
                "seed": 0,
                "epochs": 3,
                "batch_size": 2,
                "lr": 0.1,
                "momentum": 0.0,
                "weight_decay": 0.0,
                "loss": "ce",
                "gen_lr": 0.1,
                "lr_step": 5,
                "lr_gamma": 0.5,
                "schedule": "alternate",
                "meta": {"order": "second", "entropy_weight": 0.2},
            },
        )
    text = markdown_table(runs, "t")
    assert "| single | 0 | 30.00 ± 0.00 | 30.00 ± 0.00 | 20.00 ± 0.00 | — | — | 10 ± 0 |" in text


def test_collect_runs_skips_a_torn_last_line_of_metrics_jsonl(tmp_path):
    from maxl.analysis.run import TornLineWarning

    record = {"epoch": 1, "test_acc": 0.5, "epoch_time_s": 1.0}
    folder = tmp_path / "grid" / "single" / "seed0"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train": {"method": "single", "seed": 0}}))
    (folder / "summary.json").write_text(json.dumps({"final_test_acc": 0.5}))
    (folder / "metrics.jsonl").write_text(json.dumps(record) + '\n{"epoch": 2, "test_')  # killed mid-append
    with pytest.warns(TornLineWarning, match="skipping the truncated last line 2"):
        assert collect_runs(tmp_path / "grid")[0].metrics == [record]
