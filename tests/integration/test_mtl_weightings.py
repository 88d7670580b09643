"""The multi-task literature's weightings (torchjd's aggregators and the loss-based methods written
here) in tiny ``maxl train`` runs on the embedded digits: a few in the default run, every one
under ``-m slow``; one with MAXL; one under torchrun; a resumed run of a stateful one."""

import json

import pytest
import torch

from auxtasks.weighting import WEIGHTINGS, TorchJDWeighting
from maxl.cli.commands import main

pytestmark = pytest.mark.integration

NEW = (
    "upgrad",
    "cagrad",
    "nash-mtl",
    "imtl-g",
    "aligned-mtl",
    "graddrop",
    "gradvac",
    "dualproj",
    "config",
    "fairgrad",
    "rlw",
    "famo",
    "db-mtl",
    "gls",
    "imtl-l",
    "stch",
)
FAST_FEW = ("upgrad", "nash-mtl", "famo", "db-mtl")  # a projection, a solver, a loss-based and a gradient one

TINY = [
    "--dataset",
    "digits",
    "--train-subset",
    "320",
    "--test-subset",
    "200",
    "--batch-size",
    "32",
    "--lr",
    "0.1",
    "--momentum",
    "0.9",
    "--hidden",
    "32",
    "--no-progress",
    "--threads",
    "1",
]


def needs_extra(name: str) -> None:
    if issubclass(WEIGHTINGS[name], TorchJDWeighting):
        pytest.importorskip("torchjd", reason="the optional extra mtl: pip install 'maxl[mtl]'")


def metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def train_with(name: str, out, *extra: str, epochs: int = 3) -> list[dict]:
    argv = ["train", *TINY, "--method", "single", "--aux", "rotation", "--weighting", name]
    assert main([*argv, "--epochs", str(epochs), *extra, "--out", str(out)]) == 0
    return metrics(out)


def check_learns(name: str, records: list[dict]) -> None:
    assert records[-1]["test_acc"] > 0.3, name  # chance: 0.1
    assert records[-1]["train_primary_loss"] < records[0]["train_primary_loss"], name
    assert records[-1]["train_loss_rotation"] < records[0]["train_loss_rotation"], name
    assert all(key in records[-1] for key in ("train_weight_primary", "train_weight_rotation"))


@pytest.mark.parametrize("name", FAST_FEW)
def test_a_few_new_weightings_learn_digits_with_rotation(name, tmp_path):
    needs_extra(name)
    check_learns(name, train_with(name, tmp_path / name))


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_every_new_weighting_learns_digits_with_rotation(name, tmp_path):
    needs_extra(name)
    check_learns(name, train_with(name, tmp_path / name))


def test_an_option_reaches_the_weighting_and_the_run_record(tmp_path):
    needs_extra("cagrad")
    train_with("cagrad", tmp_path / "run", "--weighting-option", "c=0.2", epochs=1)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["aux"]["weighting_options"] == {"c": "0.2"}
    assert main(["train", *TINY, "--weighting", "cagrad", "--weighting-option", "radius=1", "--out", "x"]) == 2


def test_maxl_with_rotation_under_upgrad(tmp_path):
    needs_extra("upgrad")
    out = tmp_path / "maxl"
    argv = ["train", *TINY, "--method", "maxl", "--aux", "rotation", "--weighting", "upgrad", "--epochs", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    records = metrics(out)
    assert records[-1]["test_acc"] > 0.3 and "meta_outer_loss" in records[-1]
    assert {"train_weight_maxl", "train_weight_rotation"} <= set(records[-1])


def test_a_resumed_famo_run_ends_where_the_uninterrupted_one_does(tmp_path):
    whole = tmp_path / "whole"
    train_with("famo", whole, epochs=2)
    part = tmp_path / "part"
    train_with("famo", part, epochs=1)
    argv = ["train", *TINY, "--method", "single", "--aux", "rotation", "--weighting", "famo", "--epochs", "2"]
    assert main([*argv, "--resume", str(part)]) == 0
    a = torch.load(whole / "checkpoint.pt", weights_only=True)["learner"]
    b = torch.load(part / "checkpoint.pt", weights_only=True)["learner"]
    assert any("logits" in k for k in a)  # FAMO's task logits are saved with the learner
    for k in a:
        torch.testing.assert_close(b[k], a[k], msg=k)


@pytest.mark.slow  # two processes: about a minute
def test_a_torchjd_weighting_under_torchrun(tmp_path):
    """Each process combines the gradients of its share of the batch, then the processes average
    the combined updates (a gradient weighting is not linear, so this is not the one-process update
    of the whole batch); the run goes to the end and records the weights."""
    needs_extra("upgrad")
    from tests.integration.test_distributed import torchrun

    run = [
        "train",
        *TINY,
        "--train-subset",
        "64",
        "--hierarchy",
        "even-odd",
        "--no-batchnorm",
        "--device",
        "cpu",
        "--epochs",
        "1",
    ]
    torchrun(
        "-m", "maxl", *run, "--method", "human", "--aux", "rotation", "--weighting", "upgrad", "--out", str(tmp_path)
    )
    (record,) = metrics(tmp_path)
    assert record["epoch"] == 1 and "train_weight_rotation" in record
