"""Meta-learned task weights (Auto-λ) from ``maxl train``: tiny runs on the embedded digits, the
start-up refusals, a NaN meta-gradient stopping the run, and resume equal to an uninterrupted run."""

import json

import pytest
import torch

from auxtasks.weighting import AutoLambda
from maxl.cli.commands import main
from maxl.train.build import RunConfig, build
from maxl.train.checks import NonFiniteGradientError

pytestmark = pytest.mark.integration

FAST = [
    "--dataset",
    "digits",
    "--train-subset",
    "320",
    "--test-subset",
    "100",
    "--batch-size",
    "32",
    "--hidden",
    "16",
    "--no-progress",
    "--threads",
    "1",
]


def read_metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method, engine", [("single", "fd"), ("maxl", "jvp")])
def test_auto_lambda_runs_and_records_its_weights_per_epoch(tmp_path, method, engine):
    out = tmp_path / "run"
    args = ["train", *FAST, "--method", method, "--aux", "rotation", "--weighting", "auto-lambda"]
    args += [
        "--weight-lr",
        "0.01",
        "--weight-engine",
        engine,
        "--weight-split",
        "64",
        "--epochs",
        "2",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    records = read_metrics(out)
    own = ["maxl"] if method == "maxl" else []
    for record in records:
        for task in ["primary", "rotation", *own]:
            assert 0 <= record[f"train_weight_{task}"] < 10
    assert records[-1]["train_weight_rotation"] != pytest.approx(0.1)  # learnt, not the initial 0.1
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["num_train"] == 320 - 64  # the held-out split is not trained on
    assert config["aux"]["weight_split"] == 64


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--method", "single"], "learns the weights of auxiliary tasks, and this run has none"),
        (["--aux", "rotation", "--weight-split", "320"], "weight_split must be smaller than the 320 training images"),
        (["--aux", "rotation", "--weight-split", "-1"], "weight_split must be >= 0 images"),
        (["--aux", "rotation", "--weight-lr", "0"], "weight_lr must be > 0"),
        (["--aux", "rotation", "--weight-lr", "nan"], "aux.weight_lr = nan (float): expected a finite number"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_start_up(tmp_path, extra, match, capsys):
    args = ["train", *FAST, "--weighting", "auto-lambda", "--epochs", "1", "--out", str(tmp_path / "run"), *extra]
    try:
        rc = main(args)
    except SystemExit as exit_:  # argparse's refusals
        rc = exit_.code
    assert rc != 0
    assert match in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def _config(out, epochs=2, fused=True, split=64, method="single"):
    return RunConfig.from_dict(
        {
            "data": {"dataset": "digits", "train_subset": 320, "test_subset": 100},
            "model": {"hidden": 16},
            "train": {"method": method, "epochs": epochs, "batch_size": 32, "progress": False},
            "aux": {
                "tasks": ["rotation"],
                "weighting": "auto-lambda",
                "weight_lr": 0.01,
                "weight_split": split,
                "weight_fused": fused,
            },
            "out": str(out),
            "threads": 1,
        }
    )


@pytest.mark.parametrize("method", ["meta_gradient", "fused_meta_gradient"])  # unfused, fused (default)
def test_a_nan_meta_gradient_stops_the_run_at_that_step(tmp_path, monkeypatch, method):
    real = getattr(AutoLambda, method)

    def poisoned(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        result.grad[1] = float("nan")
        return result

    monkeypatch.setattr(AutoLambda, method, poisoned)
    trainer = build(_config(tmp_path / "run", fused=method != "meta_gradient"), log=lambda *_: None)
    before = trainer.learner.weighting.lam.detach().clone()
    with pytest.raises(NonFiniteGradientError, match=r"task weights.*epoch 1, step 1"):
        trainer.fit()
    assert torch.equal(trainer.learner.weighting.lam.detach(), before)


def test_resumed_run_learns_the_same_weights_as_an_uninterrupted_one(tmp_path):
    whole = build(_config(tmp_path / "whole"), log=lambda *_: None)
    whole.fit()
    build(_config(tmp_path / "part", epochs=1), log=lambda *_: None).fit()
    resumed = build(_config(tmp_path / "part"), resume=True, log=lambda *_: None)
    resumed.fit()
    for name in ("lam", "adam_m", "adam_v", "adam_steps"):
        torch.testing.assert_close(getattr(resumed.learner.weighting, name), getattr(whole.learner.weighting, name))
    assert read_metrics(tmp_path / "part")[-1]["test_acc"] == read_metrics(tmp_path / "whole")[-1]["test_acc"]


def test_ol_aux_runs_on_all_the_training_images_and_records_its_weights(tmp_path):
    out = tmp_path / "run"
    args = ["train", *FAST, "--method", "random", "--aux", "rotation", "--weighting", "ol-aux", "--weight-lr", "0.01"]
    assert main([*args, "--weight-horizon", "3", "--epochs", "2", "--out", str(out)]) == 0
    records = read_metrics(out)
    assert all(r["train_weight_primary"] == 1.0 for r in records)
    assert records[-1]["train_weight_rotation"] != pytest.approx(1.0)
    assert records[-1]["train_weight_random"] != pytest.approx(1.0)
    assert json.loads((out / "config.json").read_text())["data"]["num_train"] == 320  # no split held out


@pytest.mark.parametrize("weighting", ["auxilearn", "auxilearn-nonlinear"])
def test_auxilearn_runs_on_an_auxiliary_split_and_records_its_weights(tmp_path, weighting):
    out = tmp_path / "run"
    args = ["train", *FAST, "--method", "single", "--aux", "rotation", "--weighting", weighting]
    args += ["--weight-lr", "0.01", "--weight-split", "64", "--weight-neumann-terms", "2", "--weight-every", "2"]
    assert main([*args, "--epochs", "1", "--out", str(out)]) == 0
    record = read_metrics(out)[-1]
    assert record["train_weight_rotation"] >= 0 and record["train_weight_primary"] >= 0
    assert json.loads((out / "config.json").read_text())["data"]["num_train"] == 320 - 64


def test_compare_draws_the_learnt_weights_beside_the_curves(tmp_path, capsys):
    from maxl.analysis.plots import weight_keys
    from maxl.analysis.visualise import weights_png

    out = tmp_path / "run"
    args = ["train", *FAST, "--aux", "rotation", "--weighting", "auto-lambda", "--weight-split", "64"]
    assert main([*args, "--epochs", "2", "--out", str(out)]) == 0
    keys = set(weight_keys([("run", read_metrics(out))]))
    assert keys == {"train_weight_primary", "train_weight_maxl", "train_weight_rotation"}
    png = tmp_path / "cmp.png"
    assert main(["compare", str(out), "--out", str(png)]) == 0
    assert weights_png(png).stat().st_size > 10_000
    assert f"wrote {weights_png(png)}" in capsys.readouterr().out


def test_fused_weight_step_follows_the_unfused_trajectory(tmp_path):
    """The fused Auto-λ step (default) and the separate look-ahead (--weight-unfused) give the same
    weights and network over a few steps: the same λ update, the same update Σ λ'_i g_i."""
    runs = {}
    for name, extra in (("fused", []), ("unfused", ["--weight-unfused"])):
        out = tmp_path / name
        args = ["train", *FAST, "--method", "single", "--aux", "rotation", "--weighting", "auto-lambda"]
        args += [
            "--weight-lr",
            "0.01",
            "--weight-init",
            "1",
            "--weight-split",
            "64",
            "--epochs",
            "2",
            "--out",
            str(out),
        ]
        assert main([*args, *extra]) == 0
        runs[name] = read_metrics(out)
    for fused, unfused in zip(runs["fused"], runs["unfused"]):
        for task in ("primary", "rotation"):
            key = f"train_weight_{task}"
            assert fused[key] == pytest.approx(unfused[key], rel=1e-4), key
            assert fused[key] != pytest.approx(1.0, abs=1e-3)  # learnt
        for key in ("train_primary_loss", "train_loss_rotation", "test_loss"):
            assert fused[key] == pytest.approx(unfused[key], rel=1e-4), key
    ends = {n: torch.load(tmp_path / n / "checkpoint.pt", weights_only=True) for n in ("fused", "unfused")}
    for entry in ("net", "learner"):  # the network, the heads and λ with Adam's moments after 16 steps
        for k, v in ends["unfused"][entry].items():
            torch.testing.assert_close(ends["fused"][entry][k], v, rtol=1e-4, atol=1e-6, msg=f"{entry}.{k}")


def test_a_negative_weight_split_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"weight_split must be >= 0 images .*got -3"):
        RunConfig.from_dict({"aux": {"tasks": ["rotation"], "weighting": "auto-lambda", "weight_split": -3}})


@pytest.mark.parametrize("method", ["single", "maxl"])
def test_weight_split_0_holds_nothing_out_and_draws_the_outer_batches_from_another_shuffle(tmp_path, method):
    """``--weight-split 0`` (Auto-λ's reference practice): the network trains on all the training
    images, and the weights' outer batches are training images (not augmented), each epoch a pass
    over a shuffle of them drawn apart from the training loader's; the weights learn."""
    from maxl.train.trainer import _TrainBatches

    lines: list[str] = []
    trainer = build(_config(tmp_path / "run", epochs=1, split=0, method=method), log=lines.append)
    unsplit = build(_config(tmp_path / "unsplit", epochs=1, method=method), log=lambda *_: None)
    assert len(trainer.train_set) == 320 == len(unsplit.train_set) + 64  # nothing held out
    assert not any("images held out" in line for line in lines)
    assert any("outer loss on the training images" in line for line in lines)
    assert torch.equal(trainer.weight_set.images, trainer.train_set.images)
    assert torch.equal(trainer.weight_set.labels, trainer.train_set.labels)
    steps = len(trainer.train_set) // 32
    passes = []
    for epoch in (0, 1):
        picks = [trainer._weight_indices(epoch * steps + k) for k in range(steps)]
        assert all(len(p) == 32 for p in picks)
        flat = torch.cat(picks)
        assert len(set(flat.tolist())) == steps * 32  # a pass: no image twice in an epoch
        trainer.epoch = epoch
        order = torch.cat([idx.cpu() for _, _, idx in _TrainBatches(trainer)(0)])
        assert (flat == order).float().mean() < 0.2  # not the training loader's order
        passes.append(flat)
    assert not torch.equal(passes[0], passes[1])  # another shuffle each epoch
    trainer.epoch = 0
    idx = trainer._weight_indices(3)
    x, y = trainer._held_out_batch(3)
    assert torch.equal(x, torch.stack([trainer.train_set[int(i)][0] for i in idx]))  # the training images' pixels
    assert torch.equal(y, trainer.train_set.labels[idx])
    assert torch.equal(trainer._held_out_batch(3)[0], x)  # a function of the step alone

    trainer.fit()
    record = read_metrics(tmp_path / "run")[-1]
    assert record["train_weight_rotation"] != pytest.approx(0.1)  # learnt, not the initial 0.1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["num_train"] == 320


def test_weight_split_0_resumed_mid_epoch_equals_the_uninterrupted_run_and_load_run_sees_every_image(
    tmp_path, monkeypatch
):
    """Signalled inside its second epoch and resumed, a ``--weight-split 0`` run ends with the
    uninterrupted run's records, network and weights (bit for bit: same machine); ``load_run``
    rebuilds all 320 training images, none held out."""
    from maxl.analysis.run import load_run
    from maxl.train.preemption import EXIT_PREEMPTED

    from .test_preemption import signal_after_step
    from .test_reproducibility import assert_same_networks, records

    args = ["train", *FAST, "--method", "single", "--aux", "rotation", "--weighting", "auto-lambda"]
    args += ["--weight-split", "0", "--weight-lr", "0.01", "--epochs", "2"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    signal_after_step(monkeypatch, 13)  # 10 steps per epoch: inside the second
    assert main([*args, "--out", str(tmp_path / "part")]) == EXIT_PREEMPTED
    monkeypatch.undo()
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    torch.manual_seed(1234)  # whatever state the new process starts in
    assert main(["train", "--resume", str(tmp_path / "part"), "--no-progress"]) == 0
    assert records(tmp_path / "part") == records(tmp_path / "whole")
    assert_same_networks(tmp_path / "part", tmp_path / "whole", parts=("net", "learner", "optimizer"))
    assert records(tmp_path / "whole")[-1]["train_weight_rotation"] != pytest.approx(0.1)  # learnt
    run = load_run(tmp_path / "whole")
    assert len(run.data.train) == 320 and run.data.weight_set is None and run.data.weight_index is None


def test_ol_aux_fused_step_follows_the_unfused_trajectory_without_a_forward_of_its_own(tmp_path, monkeypatch):
    """OL-AUX fused (default: the alignments from the training step's own per-task gradients) and
    unfused (``--weighting-option fused=false``: a forward and T backward passes of its own) give the
    same weights per epoch and the same network; the fused run never calls ``meta_gradient``.
    Rotation in its deterministic mode (all four): ``--rotation-mode random`` draws other rotations
    for the unfused step's own forward than for the training step, so the two would differ. Plain SGD
    at lr 0.01: with the digits preset's lr 0.05 and momentum 0.9 both paths agree step by step to
    float32 rounding, but the network amplifies that rounding to ~1e-3 in its parameters by step 20."""
    from auxtasks.weighting import OLAux

    real = OLAux.meta_gradient
    runs = {}
    for name, extra in (("fused", []), ("unfused", ["--weighting-option", "fused=false"])):
        calls = []

        def counted(self, *args, calls=calls, **kwargs):
            if self.fused:
                raise AssertionError("the fused OL-AUX run called meta_gradient")
            calls.append(1)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(OLAux, "meta_gradient", counted)
        out = tmp_path / name
        args = ["train", *FAST, "--method", "single", "--aux", "rotation", "--weighting", "ol-aux"]
        args += ["--lr", "0.01", "--momentum", "0", "--weight-lr", "0.05", "--weight-horizon", "3"]
        args += ["--epochs", "2", "--out", str(out)]
        assert main([*args, *extra]) == 0
        assert len(calls) == (0 if name == "fused" else 20), name  # 10 steps per epoch
        runs[name] = read_metrics(out)
    assert len(runs["fused"]) == len(runs["unfused"]) == 2
    for fused, unfused in zip(runs["fused"], runs["unfused"]):
        assert fused["train_weight_primary"] == unfused["train_weight_primary"] == 1.0
        assert fused["train_weight_rotation"] == pytest.approx(unfused["train_weight_rotation"], rel=1e-5)
        assert fused["train_weight_rotation"] != pytest.approx(1.0, abs=1e-3)  # learnt
        for key in ("train_primary_loss", "train_loss_rotation", "test_loss"):
            assert fused[key] == pytest.approx(unfused[key], rel=1e-5), key
    ends = {n: torch.load(tmp_path / n / "checkpoint.pt", weights_only=True) for n in ("fused", "unfused")}
    for entry in ("net", "learner"):  # the network, the heads, the weights, Adam's moments, the horizon's sum
        for k, v in ends["unfused"][entry].items():
            torch.testing.assert_close(ends["fused"][entry][k], v, rtol=1e-4, atol=1e-6, msg=f"{entry}.{k}")


@pytest.mark.parametrize(
    "aux, fused",
    [({}, True), ({"weighting_options": {"fused": "false"}}, False), ({"weight_fused": False}, False)],
)
def test_ol_aux_fused_option_reaches_the_weighting_and_the_step(tmp_path, aux, fused):
    config = RunConfig.from_dict(
        {
            "data": {"dataset": "digits", "train_subset": 320, "test_subset": 100},
            "model": {"hidden": 16},
            "train": {"method": "single", "epochs": 1, "batch_size": 32, "progress": False},
            "aux": {"tasks": ["rotation"], "weighting": "ol-aux", **aux},
            "out": str(tmp_path / "run"),
            "threads": 1,
        }
    )
    assert "aux.weight_fused" not in config.inert_settings()
    trainer = build(config, log=lambda *_: None)
    weighting = trainer.learner.weighting
    assert weighting.fused is fused and trainer.steps.fused_weights is fused
    assert f"fused={fused}" in repr(weighting)


def test_ol_aux_fused_resumed_mid_horizon_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """Signalled after step 13 (inside the second epoch, one step into a horizon of 3) and resumed, a
    fused OL-AUX run ends with the uninterrupted run's records, network and weights, its Adam moments
    and the horizon's sum included (bit for bit: same machine)."""
    from maxl.train.preemption import EXIT_PREEMPTED

    from .test_preemption import signal_after_step
    from .test_reproducibility import assert_same_networks, records

    args = ["train", *FAST, "--method", "single", "--aux", "rotation", "--weighting", "ol-aux"]
    args += ["--weight-lr", "0.05", "--weight-horizon", "3", "--epochs", "2"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    signal_after_step(monkeypatch, 13)  # 10 steps per epoch
    assert main([*args, "--out", str(tmp_path / "part")]) == EXIT_PREEMPTED
    monkeypatch.undo()
    saved = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1 and int(saved["learner"]["weighting.accumulated_steps"]) == 1  # mid-horizon
    torch.manual_seed(1234)
    assert main(["train", "--resume", str(tmp_path / "part"), "--no-progress"]) == 0
    assert records(tmp_path / "part") == records(tmp_path / "whole")
    assert_same_networks(tmp_path / "part", tmp_path / "whole", parts=("net", "learner", "optimizer"))
    assert records(tmp_path / "whole")[-1]["train_weight_rotation"] != pytest.approx(1.0)  # learnt


def test_a_nan_fused_ol_aux_alignment_stops_the_run_at_that_step(tmp_path, monkeypatch):
    from auxtasks.weighting import OLAux

    real = OLAux.fused_meta_gradient

    def poisoned(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        result.grad[1] = float("nan")
        return result

    monkeypatch.setattr(OLAux, "fused_meta_gradient", poisoned)
    config = _config(tmp_path / "run").to_dict()
    config["aux"] = {"tasks": ["rotation"], "weighting": "ol-aux", "weight_lr": 0.01}
    trainer = build(RunConfig.from_dict(config), log=lambda *_: None)
    assert trainer.steps.fused_weights and trainer.steps.held_out is None
    before = trainer.learner.weighting.accumulated.clone()
    with pytest.raises(NonFiniteGradientError, match=r"task weights.*epoch 1, step 1"):
        trainer.fit()
    assert torch.equal(trainer.learner.weighting.accumulated, before)


@pytest.mark.parametrize("weighting", ["auto-lambda", "ol-aux"])
def test_the_epoch_record_holds_the_mean_meta_gradient_of_each_task_weight(tmp_path, monkeypatch, weighting):
    """``train_meta_grad_<task>`` of an epoch is the mean over its steps of the weights'
    meta-gradient that the weighting received (Auto-λ: ∂L_pri(θ⁺)/∂λ_i; OL-AUX: −α⟨g_pri, g_i⟩,
    0 for the primary task): the sign of the look-ahead's signal per task, per epoch."""
    from auxtasks.weighting import OLAux

    cls = OLAux if weighting == "ol-aux" else AutoLambda
    real, received = cls.apply_gradient, []

    def recorded(self, grad):
        received.append(grad.clone())
        return real(self, grad)

    monkeypatch.setattr(cls, "apply_gradient", recorded)
    out = tmp_path / "run"
    args = ["train", *FAST, "--method", "single", "--aux", "rotation", "--weighting", weighting]
    args += ["--weight-lr", "0.01", "--epochs", "2", "--out", str(out)]
    args += ["--weight-split", "0"] if weighting == "auto-lambda" else []  # OL-AUX: the training batch itself
    assert main(args) == 0
    records = read_metrics(out)
    assert len(received) == 20  # 10 steps per epoch, a weight step at each
    for epoch, record in enumerate(records):
        mean = torch.stack(received[10 * epoch : 10 * (epoch + 1)]).mean(0)
        for i, task in enumerate(("primary", "rotation")):
            assert record[f"train_meta_grad_{task}"] == pytest.approx(mean[i].item(), rel=1e-5, abs=1e-12)
    assert any(r["train_meta_grad_rotation"] != 0 for r in records)
    for r in records:  # the weights' curves (maxl compare) read train_weight_*: the weights alone
        assert {k for k in r if k.startswith("train_weight_")} == {"train_weight_primary", "train_weight_rotation"}
    if weighting == "ol-aux":
        assert all(r["train_meta_grad_primary"] == 0 for r in records)  # its primary weight is not learnt
