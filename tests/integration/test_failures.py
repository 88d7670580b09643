"""Bad input and broken runs give clear errors: each names the bad value and what was expected.

Also: a NaN stops the run and leaves the last good checkpoint loadable; checkpoints that are
corrupt, unsafe (a pickled object that would run code) or from other settings are refused.
"""

import gzip
import json
import pathlib
import random
import struct
import sys

import pytest
import torch
from PIL import Image

from maxl.cli.commands import main
from maxl.data.datasets import ImageTensorDataset, load_dataset
from maxl.meta import MetaConfig
from maxl.nn.backbones import ConvNet, tiny_cnn
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork
from maxl.train import (
    CheckpointError,
    NonFiniteGradientError,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    seed_everything,
)
from maxl.train import build as build_module

pytestmark = pytest.mark.usefixtures("one_thread")

PSI = [2] * 10


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_subset=64, test_subset=20)


def make_trainer(data, out=None, method="maxl", backbone=None, epochs=2, aux_labels=None, psi=None, **overrides):
    seed_everything(0)
    net = MultiTaskNetwork(backbone or tiny_cnn(1), 10, 0 if method == "single" else sum(PSI), hidden=8)
    gen = LabelGenerator(tiny_cnn(1), PSI, hidden=8) if method == "maxl" else None
    settings = dict(
        method=method,
        epochs=epochs,
        batch_size=32,
        lr=0.05,
        device="cpu",
        progress=False,
    )
    return Trainer(
        net,
        data.train,
        data.test,
        TrainConfig(**{**settings, **overrides}),
        out,
        generator=gen,
        aux_labels=aux_labels,
        psi=psi,
        meta=MetaConfig(inner_lr=0.05),
    )


# ----------------------------------------------------------------------------- bad input at start-up
def test_images_with_the_wrong_channel_count_are_rejected_at_start_up(digits):
    with pytest.raises(
        ValueError,
        match=r"the multi-task network cannot take the training images, of shape "
        r"\[1, 8, 8\] \[C, H, W\]: expected images \[B, 3, H, W\]",
    ):
        make_trainer(digits, method="single", backbone=tiny_cnn(3))


def test_images_too_small_for_the_backbone_are_rejected_at_start_up(digits):
    with pytest.raises(
        ValueError,
        match=r"cannot take the training images.*images of 8x8 are too small for this "
        r"backbone \(16 pixels at least\)",
    ):
        make_trainer(digits, method="single", backbone=ConvNet(1, (4, 4, 4, 4), (1, 1, 1, 1)))


def test_primary_labels_out_of_range_are_rejected_at_start_up(digits):
    labels = digits.train.labels.clone()
    labels[5] = 12
    bad = ImageTensorDataset(digits.train.images, labels)
    with pytest.raises(
        ValueError,
        match=r"training sample 5 has primary label 12, but the network has 10 primary "
        r"classes \(labels 0..9\)",
    ):
        Trainer(
            MultiTaskNetwork(tiny_cnn(1), 10, hidden=8),
            bad,
            digits.test,
            TrainConfig(method="single", device="cpu", progress=False),
        )


def test_fixed_auxiliary_labels_are_checked_against_psi(digits):
    primary = digits.train.labels
    good = 2 * primary  # the first class of each block
    make_trainer(digits, method="human", aux_labels=good, psi=PSI)  # accepted
    bad = good.clone()
    bad[3] = (2 * primary[3] + 2) % 20  # the first class of the next block
    with pytest.raises(
        ValueError,
        match=rf"auxiliary label {int(bad[3])} of sample 3 \(primary class "
        rf"{int(primary[3])}\) lies outside the block",
    ):
        make_trainer(digits, method="human", aux_labels=bad, psi=PSI)
    with pytest.raises(ValueError, match=r"auxiliary label 20 is out of range: the auxiliary head has 20 classes"):
        make_trainer(digits, method="human", aux_labels=torch.full_like(good, 20))
    with pytest.raises(ValueError, match=r"aux_labels must be integers \[N_train\] = \[64\]"):
        make_trainer(digits, method="human", aux_labels=good[:10])


def test_missing_tensorboard_is_reported_before_training(digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'maxl\[tensorboard\]'"):
        make_trainer(digits, method="single", tensorboard=True)


def test_truncated_mnist_files_are_named(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name in names:  # gzip streams cut in the middle
        (raw / f"{name}.gz").write_bytes(gzip.compress(random.Random(0).randbytes(5000))[:1000])
    with pytest.raises(ValueError, match=r"MNIST/raw/train-images-idx3-ubyte.gz is truncated or corrupt"):
        load_dataset("mnist", tmp_path)
    for name in names:  # IDX files whose header promises more images than they hold
        (raw / f"{name}.gz").unlink()
        dims = (60000 if name.startswith("train") else 10000, *((28, 28) if "images" in name else ()))
        magic = 0x0803 if "images" in name else 0x0801
        (raw / name).write_bytes(struct.pack(f">I{len(dims)}I", magic, *dims) + bytes(100))
    with pytest.raises(
        ValueError,
        match=r"cannot read MNIST's train-images-idx3-ubyte, train-labels-idx1-ubyte "
        r"in .*MNIST/raw: truncated or corrupt",
    ):
        load_dataset("mnist", tmp_path)


def test_an_undecodable_image_is_named(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg after all")
    with pytest.raises(ValueError, match=r"imagefolder: cannot decode the image .*train/b/broken.jpg"):
        load_dataset("imagefolder", tmp_path)


# ----------------------------------------------------------------------------- non-finite values
def test_nan_in_a_loss_stops_the_run_and_keeps_the_last_checkpoint_loadable(digits, tmp_path):
    trainer = make_trainer(digits, tmp_path, epochs=3)
    loss_fn = trainer.learner.primary_loss  # the primary task's loss in the one step path

    def nan_in_epoch_two(logits, target):  # 2 steps of 32 images per epoch
        loss = loss_fn(logits, target)
        return loss * float("nan") if trainer.epoch == 1 and trainer.step == 3 else loss

    trainer.learner.primary_loss = nan_in_epoch_two
    with pytest.raises(NonFiniteLossError, match="primary_loss became nan at epoch 2, step 4"):
        trainer.fit()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = make_trainer(digits, tmp_path, epochs=3)
    resumed.load_checkpoint(tmp_path / "checkpoint.pt")  # the checkpoint of epoch 1, intact
    assert (resumed.epoch, resumed.step, len(resumed.history)) == (1, 2, 1)
    for a, b in zip(resumed.net.state_dict().values(), torch.load(tmp_path / "checkpoint.pt")["net"].values()):
        assert torch.equal(a, b) and torch.isfinite(a.float()).all()


def test_nan_in_a_gradient_stops_the_run(digits, tmp_path):
    trainer = make_trainer(digits, tmp_path, method="single")
    # the loss stays finite; a backward hook puts a NaN into one gradient
    trainer.net.primary_head[2].weight.register_hook(lambda g: g * float("nan") if trainer.step == 1 else g)
    with pytest.raises(
        NonFiniteGradientError,
        match=r"the gradient of primary_head.2.weight of the multi-task "
        r"network became non-finite \(\d+ of \d+ entries NaN/Inf\) "
        r"at epoch 1, step 2, although the losses were finite",
    ):
        trainer.fit()
    assert not (tmp_path / "checkpoint.pt").exists()


def test_non_finite_parameters_are_never_checkpointed(digits, tmp_path):
    trainer = make_trainer(digits, tmp_path, method="single", epochs=1)

    def break_after_last_step(optimizer, args, kwargs):
        if trainer.step == 1:  # the second and last step of the epoch
            with torch.no_grad():
                trainer.net.backbone.features[0].bias[0] = float("inf")

    trainer.optimizer.register_step_post_hook(break_after_last_step)
    with pytest.raises(
        NonFiniteGradientError,
        match="parameter backbone.features.0.bias of the multi-task network became non-finite in epoch 1",
    ):
        trainer.fit()
    assert not (tmp_path / "checkpoint.pt").exists()


# ----------------------------------------------------------------------------- checkpoints
class _RunsCodeWhenUnpickled:
    """An object whose unpickling calls a function: here it creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_checkpoint_with_a_pickled_object_that_would_run_code_is_refused(digits, tmp_path):
    trainer = make_trainer(digits, method="single")
    marker = tmp_path / "code-ran"
    state = trainer.state_dict()
    state["history"] = [{"epoch": 1, "note": _RunsCodeWhenUnpickled(marker)}]
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(
        CheckpointError,
        match=r"refused to load .*evil.pt: it holds pickled objects .*; "
        r"Unsupported global",
    ):
        trainer.load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the unsafe way would have run it
    assert marker.exists()


def test_a_truncated_checkpoint_is_reported(digits, tmp_path):
    trainer = make_trainer(digits, method="single")
    trainer.save_checkpoint(tmp_path / "checkpoint.pt")
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError,
        match=r"cannot read the checkpoint .*checkpoint.pt: it is not a torch.save "
        r"archive \(truncated or corrupt\)",
    ):
        trainer.load_checkpoint(tmp_path / "checkpoint.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        trainer.load_checkpoint(tmp_path / "missing.pt")


def test_a_checkpoint_of_other_settings_is_refused(digits, tmp_path):
    make_trainer(digits, method="single").save_checkpoint(tmp_path / "single.pt")
    with pytest.raises(
        CheckpointError,
        match=r"other settings than this trainer's: "
        r"train.lr: checkpoint 0.05, now 0.1; train.seed: checkpoint 0, now 3",
    ):
        make_trainer(digits, method="single", lr=0.1, seed=3).load_checkpoint(tmp_path / "single.pt")
    with pytest.raises(CheckpointError, match="lacks generator"):
        make_trainer(digits, method="maxl").load_checkpoint(tmp_path / "single.pt")
    # epochs may grow: a longer run repeats the shorter one's epochs
    make_trainer(digits, method="single", epochs=5).load_checkpoint(tmp_path / "single.pt")


def test_a_checkpoint_whose_optimiser_does_not_fit_is_refused(digits, tmp_path):
    """Same settings, but the optimiser was over another set of parameters (a derived MTL-NAS run
    checkpointed before issue 25's fix, which held unused gate logits): a CheckpointError naming it."""
    trainer = make_trainer(digits, method="single")
    trainer.save_checkpoint(tmp_path / "single.pt")
    state = torch.load(tmp_path / "single.pt", weights_only=True)
    state["optimizer"]["param_groups"][0]["params"].append(max(state["optimizer"]["param_groups"][0]["params"]) + 1)
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt: its 'optimizer' entry does not fit .*start the run afresh"):
        make_trainer(digits, method="single").load_checkpoint(tmp_path / "other.pt")


# ----------------------------------------------------------------------------- command line
RUN = [
    "train",
    "--dataset",
    "digits",
    "--train-subset",
    "64",
    "--test-subset",
    "20",
    "--batch-size",
    "32",
    "--hidden",
    "8",
    "--no-progress",
    "--lr",
    "0.05",
]


def test_resume_refuses_a_command_line_that_disagrees_with_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*RUN, "--method", "single", "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--lr", "0.1", "--seed", "3", "--method", "maxl"]) == 2
    err = capsys.readouterr().err
    assert (
        f"--resume {run}: the command line disagrees with the run's config.json on --lr (run: 0.05, command "
        "line: 0.1); --method (run: single, command line: maxl); --seed (run: 0, command line: 3)"
    ) in err
    # the same values, given again, and a longer --epochs are accepted
    assert main(["train", "--resume", str(run), "--lr", "0.05", "--epochs", "2", "--no-progress"]) == 0
    assert [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["epochs"] == 2 and config["resumed"][0]["after_epoch"] == 1


def test_resume_of_a_folder_without_a_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert f"--resume {tmp_path}: no config.json in that folder" in capsys.readouterr().err
    (tmp_path / "maxl").mkdir()
    (tmp_path / "maxl" / "config.json").write_text(json.dumps({"args": {}, "train": {"method": "maxl"}}))
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert f"it holds the run folders {tmp_path / 'maxl'}: resume one of them" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "maxl")]) == 2
    assert "no checkpoint.pt in that folder (the run stopped before the end of its first epoch)" in (
        capsys.readouterr().err
    )


def test_cli_reports_a_nan_and_the_run_folder_keeps_its_checkpoint(tmp_path, capsys, monkeypatch):
    make_loss = build_module.classification_loss

    def loss_that_turns_nan(kind, gamma):  # NaN from the 4th call on: the 4th training step (epoch 2)
        loss_fn, calls = make_loss(kind, gamma), [0]

        def loss(logits, target):
            calls[0] += 1
            return loss_fn(logits, target) * (float("nan") if calls[0] >= 4 else 1.0)

        return loss

    monkeypatch.setattr(build_module, "classification_loss", loss_that_turns_nan)
    assert main([*RUN, "--method", "single", "--epochs", "3", "--out", str(tmp_path)]) == 1
    assert "maxl: error: primary_loss became nan at epoch 2, step 4; try a smaller learning rate" in (
        capsys.readouterr().err
    )
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize(
    "dataset, layout", [("mnist", "MNIST/raw"), ("cifar100", "cifar-100-python"), ("imagefolder", "train/<class>")]
)
def test_a_data_set_without_a_data_root_names_the_flag_and_the_layout(dataset, layout, capsys):
    assert main(["train", "--dataset", dataset, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--data-root" in err and layout in err


def test_cli_reports_a_checkpoint_the_disk_cannot_take_and_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    import errno
    import os

    save, checkpoints = torch.save, []

    def save_until_the_disk_is_full(obj, path):  # the second epoch's checkpoint finds the disk full
        if pathlib.Path(path).name.startswith(".checkpoint.pt."):
            checkpoints.append(path)
            if len(checkpoints) == 2:
                pathlib.Path(path).write_bytes(b"PK half a checkpoint")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, path)

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    assert main([*RUN, "--method", "single", "--epochs", "3", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"maxl: error: could not write {tmp_path / 'checkpoint.pt'}: No space left on device (ENOSPC); the previous "
        "checkpoint.pt is intact"
    ]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]


def test_resume_repairs_a_torn_last_line_of_metrics_jsonl(tmp_path, capsys):
    def records(run):  # without the wall times
        return [
            {k: v for k, v in json.loads(line).items() if not k.endswith("time_s")}
            for line in (run / "metrics.jsonl").read_text().splitlines()
        ]

    whole, run = tmp_path / "whole", tmp_path / "run"
    assert main([*RUN, "--method", "single", "--epochs", "3", "--out", str(whole)]) == 0
    assert main([*RUN, "--method", "single", "--epochs", "2", "--out", str(run)]) == 0
    two_epochs = records(run)
    with open(run / "metrics.jsonl", "a") as f:  # killed while appending the third epoch's line
        f.write('{"epoch": 3, "train_loss": 0.4')
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert records(run)[:2] == two_epochs and records(run) == records(whole)


def test_cli_reports_a_metrics_line_the_disk_cannot_take_and_resume_continues(tmp_path, capsys, monkeypatch):
    import builtins
    import errno
    import os

    real_open, appends = builtins.open, []

    def open_until_the_disk_is_full(file, mode="r", *args, **kwargs):  # the second epoch's line finds it full
        if str(file).endswith("metrics.jsonl") and mode == "a":
            appends.append(file)
            if len(appends) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_until_the_disk_is_full)
    assert main([*RUN, "--method", "single", "--epochs", "3", "--out", str(tmp_path / "run")]) == 1
    monkeypatch.undo()
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"maxl: error: could not write {tmp_path / 'run' / 'metrics.jsonl'}: No space left on device "
        "(ENOSPC); the previous metrics.jsonl is intact"
    ]
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert main(["train", "--resume", str(tmp_path / "run"), "--no-progress"]) == 0
    assert [json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
    ]
