"""A short MAXL run under ``--precision bf16`` learns on the CPU (bfloat16 autocast, maxl.core.precision)."""

import json

import pytest

from maxl.cli.commands import main

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


def test_a_bf16_maxl_run_learns(tmp_path):
    args = ["train", "--dataset", "digits", "--method", "maxl", "--precision", "bf16", "--epochs", "3"]
    args += ["--batch-size", "32", "--lr", "0.05", "--momentum", "0.9", "--hidden", "32", "--train-subset", "600"]
    assert main([*args, "--device", "cpu", "--no-progress", "--out", str(tmp_path)]) == 0
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "config.json").read_text())["train"]["precision"] == "bf16"
    assert rows[-1]["train_primary_loss"] < 0.5 * rows[0]["train_primary_loss"]
    assert rows[-1]["test_acc"] > 0.6  # ten digits: chance is 0.1 (0.79 measured)
