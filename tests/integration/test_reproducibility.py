"""Runs that can be trusted: a resumed run equals an uninterrupted one, a rerun equals the run.

Everything goes through the command line, as a user would run it.
"""

import json

import pytest
import torch

from maxl.cli.commands import main
from maxl.train import Trainer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

RUN = [
    "train",
    "--dataset",
    "digits",
    "--method",
    "maxl",
    "--train-subset",
    "64",
    "--test-subset",
    "40",
    "--batch-size",
    "16",
    "--lr",
    "0.05",
    "--momentum",
    "0.9",
    "--hidden",
    "8",
    "--psi",
    "2",
    "--no-progress",
]


def records(folder):
    """metrics.jsonl without its wall-time fields."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rows]


def assert_same_networks(a, b, parts=("net", "generator", "optimizer", "gen_optimizer")):
    for part in parts:
        sa, sb = (torch.load(f / "checkpoint.pt", weights_only=True)[part] for f in (a, b))
        if part.endswith("optimizer"):
            sa, sb = sa["state"], sb["state"]
            sa = {(i, k): v for i, s in sa.items() for k, v in s.items()}
            sb = {(i, k): v for i, s in sb.items() for k, v in s.items()}
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (part, k)


class Killed(Exception):
    """Stands for the process being killed."""


def test_a_run_killed_after_epoch_2_of_4_and_resumed_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    assert main([*RUN, "--epochs", "4", "--out", str(tmp_path / "full")]) == 0

    # killed in epoch 3 at the worst moment: its metrics line is written, its checkpoint is not
    save = Trainer.save_checkpoint

    def killed_in_epoch_3(self, path):
        if self.epoch == 3:
            raise Killed
        save(self, path)

    monkeypatch.setattr(Trainer, "save_checkpoint", killed_in_epoch_3)
    with pytest.raises(Killed):
        main([*RUN, "--epochs", "4", "--out", str(tmp_path / "half")])
    monkeypatch.undo()
    assert [r["epoch"] for r in records(tmp_path / "half")] == [1, 2, 3]
    assert torch.load(tmp_path / "half" / "checkpoint.pt", weights_only=True)["epoch"] == 2

    torch.manual_seed(1234)  # whatever state the new process starts in
    assert main(["train", "--resume", str(tmp_path / "half"), "--no-progress"]) == 0
    assert records(tmp_path / "half") == records(tmp_path / "full")
    assert_same_networks(tmp_path / "half", tmp_path / "full")


def test_two_runs_with_the_same_seed_are_bit_identical(tmp_path):
    for name, seed in (("a", "5"), ("b", "5"), ("other", "6")):
        assert main([*RUN, "--epochs", "2", "--deterministic", "--seed", seed, "--out", str(tmp_path / name)]) == 0
    torch.use_deterministic_algorithms(False)  # process-wide: leave the other tests as they were
    assert records(tmp_path / "a") == records(tmp_path / "b")
    assert_same_networks(tmp_path / "a", tmp_path / "b")
    assert records(tmp_path / "a") != records(tmp_path / "other")  # the seed does matter
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["deterministic"] is True


def test_tensorboard_events_hold_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main([*RUN, "--method", "single", "--epochs", "2", "--tensorboard", "--out", str(run)]) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for row in records(run):
        for key in ("test_acc", "train_primary_loss", "lr"):
            scalar = {e.step: e.value for e in events.Scalars(key)}[row["epoch"]]
            assert scalar == pytest.approx(row[key], rel=1e-6)  # stored as float32
