"""A short real-data run per multi-task architecture that learns: the embedded scikit-learn
digits, even / odd primary task with the digits as human auxiliary labels, through the command
line, and MAXL through the fused step with the NDDR architecture."""

from __future__ import annotations

import json

import pytest

from maxl.cli.commands import main
from maxl.nn.architectures import ARCHITECTURES

pytestmark = pytest.mark.integration

COMMON = [
    "--dataset",
    "digits",
    "--hierarchy",
    "even-odd",
    "--epochs",
    "3",
    "--batch-size",
    "32",
    "--lr",
    "0.02",
    "--momentum",
    "0.9",
    "--hidden",
    "32",
    "--train-subset",
    "600",
    "--test-subset",
    "300",
    "--seed",
    "0",
    "--device",
    "cpu",
    "--no-progress",
    "--threads",
    "1",
]


def final_accuracy(out) -> float:
    return json.loads((out / "summary.json").read_text())["final_test_acc"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_learns_on_real_digits(arch, tmp_path):
    extra = ["--soft-penalty", "trace"] if arch == "soft" else []
    assert main(["train", *COMMON, "--method", "human", "--arch", arch, *extra, "--out", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["arch"] == arch
    assert final_accuracy(tmp_path) > 0.75  # chance: 0.5


def test_maxl_with_a_per_task_architecture_learns_and_its_run_reloads(tmp_path):
    import torch

    from maxl.analysis.run import load_run

    argv = ["train", *COMMON, "--method", "maxl", "--arch", "nddr", "--schedule", "per-step", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert final_accuracy(tmp_path) > 0.75
    run = load_run(tmp_path)  # what `maxl visualise` reads: the NDDR network, not a hard-sharing one
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["net"]
    assert set(run.net.state_dict()) == set(state)
    assert type(run.net.backbone).__name__ != "ConvNet"


def test_mgda_and_dtp_learn(tmp_path):
    for weighting in ("mgda", "dtp"):
        out = tmp_path / weighting
        assert main(["train", *COMMON, "--method", "human", "--weighting", weighting, "--out", str(out)]) == 0
        assert final_accuracy(out) > 0.75


@pytest.mark.parametrize("method", ["human", "maxl"])
def test_a_residual_backbone_learns_on_real_digits(method, tmp_path):
    """ResNet-20 (option-A shortcuts) as the multi-task backbone and, with MAXL, the generator's."""
    common = [a if a != "0.02" else "0.01" for a in COMMON]  # lr 0.01: ResNet-20 with momentum 0.9
    argv = ["train", *common, "--method", method, "--backbone", "resnet20", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert json.loads((tmp_path / "config.json").read_text())["model"]["backbone"] == "resnet20"
    assert final_accuracy(tmp_path) > 0.8  # chance: 0.5
