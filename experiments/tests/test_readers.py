"""The experiment scripts' metrics.jsonl readers skip a torn last line (a run killed mid-append)."""

import json

import pytest

from experiments import aux_cifar10, compare_runs
from maxl.analysis.run import TornLineWarning


def test_every_experiment_reader_skips_a_torn_last_line_of_metrics_jsonl(tmp_path):
    record = {"epoch": 1, "test_acc": 0.5, "epoch_time_s": 1.0, "train_weight_rotation": 1.0}
    config = {"train": {"method": "single", "seed": 0}, "data": {"num_train": 10, "num_test": 5}}
    folders = [tmp_path / "grid" / "single" / "seed0", aux_cifar10.run_folder(tmp_path / "aux", "cifar10", "single", 0)]
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "summary.json").write_text(json.dumps({"final_test_acc": 0.5}))
        (folder / "metrics.jsonl").write_text(json.dumps(record) + '\n{"epoch": 2, "test_')  # killed mid-append
    readers = {
        "compare_runs": lambda: compare_runs.records(folders[0]),
        "aux_cifar10": lambda: aux_cifar10.load_runs(tmp_path / "aux")[0]["test_acc"],
    }
    expected = {"compare_runs": [{"epoch": 1, "test_acc": 0.5, "train_weight_rotation": 1.0}], "aux_cifar10": [0.5]}
    for name, read in readers.items():
        with pytest.warns(TornLineWarning, match="skipping the truncated last line 2"):
            assert read() == expected[name], name
