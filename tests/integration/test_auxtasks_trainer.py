"""maxl's trainer and CLI with auxiliary tasks: tiny end-to-end runs on the embedded digits."""

import json

import pytest
import torch

from maxl.cli.commands import main, parse_aux_weights
from maxl.core.losses import classification_loss
from maxl.data.datasets import load_dataset
from maxl.nn.backbones import tiny_cnn
from maxl.nn.networks import MultiTaskNetwork
from maxl.train import TrainConfig, Trainer, seed_everything
from maxl.train.aux_learner import build_learner

pytestmark = pytest.mark.integration

FAST = [
    "--dataset",
    "digits",
    "--train-subset",
    "320",
    "--test-subset",
    "200",
    "--batch-size",
    "32",
    "--lr",
    "0.05",
    "--momentum",
    "0.9",
    "--hidden",
    "32",
    "--no-progress",
]


def read_metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_cli_maxl_with_rotation_and_dwa(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                *FAST,
                "--method",
                "maxl",
                "--aux",
                "rotation",
                "--rotation-mode",
                "random",
                "--weighting",
                "dwa",
                "--schedule",
                "per-step",
                "--gen-every",
                "3",
                "--epochs",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["aux"]["tasks"] == ["rotation"] and config["aux"]["weighting"] == "dwa"
    metrics = read_metrics(out)
    assert len(metrics) == 3 and metrics[-1]["test_acc"] > 0.3  # chance: 0.1
    assert metrics[-1]["train_loss_rotation"] < metrics[0]["train_loss_rotation"]
    assert all(m["train_weight_rotation"] == 1.0 for m in metrics[:2])  # DWA: ratios from epoch 3 on
    assert metrics[2]["train_weight_rotation"] != 1.0
    logged = {"train_loss_maxl", "train_aux_loss", "meta_outer_loss", "neg_entropy", "train_weight_maxl"}
    assert logged <= set(metrics[-1])


def test_cli_rejects_colourisation_on_grey_images_and_bad_weights(tmp_path, capsys):
    assert (
        main(["train", *FAST, "--method", "single", "--aux", "colourisation", "--epochs", "1", "--out", str(tmp_path)])
        == 2
    )
    assert "'colourisation' needs RGB images, but this data set has 1 channel(s)" in capsys.readouterr().err
    assert (
        main(
            ["train", *FAST, "--method", "single", "--aux-weight", "rotation", "--epochs", "1", "--out", str(tmp_path)]
        )
        == 2
    )
    assert "expected TASK=WEIGHT" in capsys.readouterr().err
    assert parse_aux_weights(["rotation=0.5", "primary = 2"]) == {"rotation": 0.5, "primary": 2.0}


def make_trainer(data, out, epochs, seed=0):
    seed_everything(seed)
    net = MultiTaskNetwork(tiny_cnn(1), data.num_primary, 0, hidden=16)
    learner = build_learner(
        net,
        "single",
        ["rotation"],
        "dwa",
        loss_fn=classification_loss("focal"),
        in_channels=1,
        image_size=8,
        rotation_mode="random",
        hidden=16,
    )
    cfg = TrainConfig(
        method="single", epochs=epochs, batch_size=32, lr=0.05, momentum=0.9, seed=seed, device="cpu", progress=False
    )
    return Trainer(net, data.train, data.test, cfg, out, learner=learner)


def test_resumed_run_with_auxiliary_tasks_equals_uninterrupted_run(tmp_path):
    data = load_dataset("digits", train_subset=256, test_subset=100)
    make_trainer(data, tmp_path / "full", 3).fit()
    make_trainer(data, tmp_path / "half", 2).fit()
    resumed = make_trainer(data, tmp_path / "half", 3)
    torch.manual_seed(123)  # the resumed process starts from other weights and RNG states
    for p in resumed.learner.parameters():
        torch.nn.init.normal_(p)
    resumed.load_checkpoint(tmp_path / "half" / "checkpoint.pt")
    resumed.fit()

    def strip(folder):
        return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in read_metrics(folder)]

    assert strip(tmp_path / "half") == strip(tmp_path / "full")  # DWA's history and the rotation head came back
    assert strip(tmp_path / "full")[2]["train_weight_rotation"] != 1.0
