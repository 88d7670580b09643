"""Tiny end-to-end runs of the trainer and the CLI on the embedded digits data."""

import json
import types

import pytest
import torch
from torch.utils.data import Subset

from maxl.cli.commands import main, parse_psi
from maxl.data.datasets import load_dataset
from maxl.meta import MetaConfig, ObjectiveConfig
from maxl.nn.backbones import tiny_cnn
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork
from maxl.train import GeneratorConfig, NonFiniteLossError, TrainConfig, Trainer, seed_everything

pytestmark = pytest.mark.integration

FAST = ["--batch-size", "32", "--lr", "0.05", "--momentum", "0.9", "--hidden", "32", "--no-progress"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_subset=320, test_subset=200)


def make_trainer(data, out, method="maxl", epochs=2, seed=0, objective=None, **overrides):
    seed_everything(seed)
    psi = [3] * data.num_primary
    net = MultiTaskNetwork(tiny_cnn(1), data.num_primary, 0 if method == "single" else sum(psi), hidden=16)
    gen = LabelGenerator(tiny_cnn(1), psi, hidden=16) if method == "maxl" else None
    settings = dict(
        method=method,
        epochs=epochs,
        batch_size=32,
        lr=0.05,
        momentum=0.9,
        seed=seed,
        device="cpu",
        progress=False,
        meta=MetaConfig(inner_lr=0.05),
    )
    moved = {"schedule": "schedule", "gen_every": "every", "fused": "fused", "meta_batch": "meta_batch"}
    gen_config = GeneratorConfig(**{moved[k]: overrides.pop(k) for k in list(overrides) if k in moved})
    cfg = TrainConfig(**{**settings, **overrides})
    return Trainer(net, data.train, data.test, cfg, out, generator=gen, objective=objective, gen_config=gen_config)


def test_cli_run_writes_the_run_folder_and_learns(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["train", "--dataset", "digits", "--method", "single", "maxl", "--epochs", "3", "--out", str(out), *FAST])
        == 0
    )
    printed = capsys.readouterr().out
    assert "single" in printed and "maxl" in printed
    for method in ("single", "maxl"):
        folder = out / method
        config = json.loads((folder / "config.json").read_text())
        assert config["train"]["method"] == method and config["model"]["psi"] == [5] * 10
        metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in metrics] == [1, 2, 3]
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["final_test_acc"] == metrics[-1]["test_acc"]
        assert summary["final_test_acc"] > 0.6, f"{method}: {summary}"  # chance is 0.1
        state = torch.load(folder / "checkpoint.pt", weights_only=True)
        assert state["epoch"] == 3
    maxl_metrics = json.loads((out / "maxl" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"meta_outer_loss", "neg_entropy", "train_aux_loss", "gen_lr"} <= set(maxl_metrics)


def test_cli_reports_bad_psi(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--psi", "6,4", "--epochs", "1", "--out", str(tmp_path)]) == 2
    assert "2 entries but the data set has 10 primary classes" in capsys.readouterr().err


def test_parse_psi():
    assert parse_psi("3", 4, None) == [3, 3, 3, 3]
    assert parse_psi("6, 4", 2, None) == [6, 4]
    assert parse_psi(None, 2, [6, 4]) == [6, 4]
    assert parse_psi(None, 3, None) == [5, 5, 5]
    with pytest.raises(ValueError, match="comma-separated"):
        parse_psi("a,b", 2, None)
    with pytest.raises(ValueError, match=r"psi\[1\] = 0"):
        parse_psi("2,0", 2, None)


@pytest.mark.parametrize("schedule", ["alternate", "per-step"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, digits, schedule):
    full = make_trainer(digits, tmp_path / "full", epochs=4, schedule=schedule, gen_every=2)
    full.fit()
    half = make_trainer(digits, tmp_path / "half", epochs=2, schedule=schedule, gen_every=2)
    half.fit()
    resumed = make_trainer(digits, tmp_path / "half", epochs=4, schedule=schedule, gen_every=2)
    torch.manual_seed(123)  # the resumed process starts from other weights and RNG states
    for p in resumed.net.parameters():
        torch.nn.init.normal_(p)
    resumed.load_checkpoint(tmp_path / "half" / "checkpoint.pt")
    resumed.fit()

    def strip(path):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rows]

    assert strip(tmp_path / "half" / "metrics.jsonl") == strip(tmp_path / "full" / "metrics.jsonl")
    for a, b in zip(full.generator.parameters(), resumed.generator.parameters()):
        assert torch.equal(a, b)


def test_human_method_learns_from_fixed_labels(tmp_path, digits):
    seed_everything(0)
    psi = [1] * 10  # one auxiliary class per digit: the aux labels equal the primary ones
    net = MultiTaskNetwork(tiny_cnn(1), 10, sum(psi), hidden=16)
    cfg = TrainConfig(method="human", epochs=4, batch_size=32, lr=0.05, momentum=0.9, device="cpu", progress=False)
    aux = torch.tensor([int(digits.train[i][1]) for i in range(len(digits.train))])
    trainer = Trainer(net, digits.train, digits.test, cfg, None, aux_labels=aux)
    summary = trainer.fit()
    assert summary["final_test_acc"] > 0.3 and trainer.history[-1]["train_aux_loss"] > 0


def test_nan_loss_stops_with_a_message(digits, tmp_path):
    trainer = make_trainer(digits, tmp_path, method="single")
    with torch.no_grad():
        trainer.net.primary_head[-1].bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="primary_loss became nan at epoch 1, step 1"):
        trainer.fit()


def test_trainer_rejects_missing_generator(digits):
    net = MultiTaskNetwork(tiny_cnn(1), 10, 30, hidden=8)
    with pytest.raises(ValueError, match="needs a label-generation network"):
        Trainer(net, digits.train, digits.test, TrainConfig(method="maxl", progress=False))
    with pytest.raises(ValueError, match="unknown method"):
        TrainConfig(method="magic")


@pytest.mark.parametrize(
    "meta",
    [
        MetaConfig(inner_lr=0.05, engine="func"),
        MetaConfig(inner_lr=0.05, engine="jvp"),
        MetaConfig(inner_lr=0.05, order="first"),
    ],
    ids=["func", "jvp", "first"],
)
def test_fused_per_step_schedule_takes_the_same_steps_as_the_separate_one(digits, meta):
    small = types.SimpleNamespace(
        train=Subset(digits.train, range(128)), test=digits.test, num_primary=digits.num_primary
    )  # 4 steps, 2 of them generator steps
    runs = {}
    for fused in (True, False):
        trainer = make_trainer(small, None, epochs=1, schedule="per-step", gen_every=2, fused=fused, meta=meta)
        calls = []
        fused_step = trainer.steps.fused
        # calls and fused_step bound as defaults: each trainer counts into its own list (B023)
        trainer.steps.fused = lambda x, y, idx, outer=None, calls=calls, fused_step=fused_step: (
            calls.append(len(y)) or fused_step(x, y, idx, outer)
        )
        runs[fused] = (trainer.train_epoch(), trainer.net.state_dict(), trainer.generator.state_dict())
        assert len(calls) == (2 if fused else 0)
    (rec_f, net_f, gen_f), (rec_s, net_s, gen_s) = runs[True], runs[False]
    assert rec_f.keys() == rec_s.keys()
    for k in rec_f:
        assert rec_f[k] == pytest.approx(rec_s[k], rel=1e-4), k
    for a, b in ((net_f, net_s), (gen_f, gen_s)):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_progress_bars_stay_off_a_log_file_but_the_epoch_lines_do_not(digits, capsys):
    trainer = make_trainer(digits, None, method="maxl", epochs=1, progress=True)
    trainer.fit()
    captured = capsys.readouterr()  # not a terminal, like `maxl demo > log.txt 2>&1`
    assert "it/s" not in captured.err + captured.out
    assert "epoch   1  train acc" in captured.out


def test_a_generator_on_the_networks_features_trains_resumes_and_reloads(tmp_path):
    from maxl.analysis.run import load_run
    from maxl.nn import FeatureLabelGenerator

    out = tmp_path / "features"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--method",
        "maxl",
        "--generator",
        "features",
        "--train-subset",
        "96",
        "--test-subset",
        "40",
        "--out",
        str(out),
        *FAST,
    ]
    assert main([*argv, "--epochs", "1"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and all(k.startswith("head.") for k in state["generator"])
    run = load_run(out)
    assert isinstance(run.generator, FeatureLabelGenerator) and run.generator.shared_backbone is run.net.backbone
    assert 0 <= json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["label_max_prob"] <= 1


def test_the_outer_loss_on_other_batches_reaches_the_meta_gradient(digits):
    """``meta_batch="other"``: every generator step gets a batch of another shuffle as its
    outer batch, and the fused and separate per-step paths still agree."""
    small = types.SimpleNamespace(
        train=Subset(digits.train, range(128)), test=digits.test, num_primary=digits.num_primary
    )
    runs = {}
    for fused in (True, False):
        trainer = make_trainer(
            small,
            None,
            epochs=1,
            schedule="per-step",
            gen_every=1,
            fused=fused,
            meta_batch="other",
            meta=MetaConfig(inner_lr=0.05, engine="jvp", inner_steps=1),
            objective=ObjectiveConfig(image_entropy_weight=0.2),
        )
        seen = []
        original = trainer.learner.fused_gradients if fused else trainer.learner.meta_gradient
        name = "fused_gradients" if fused else "meta_gradient"

        def recording(x, y, *, index=None, outer_batch=None, original=original, seen=seen):
            seen.append((x, outer_batch[0]))
            return original(x, y, index=index, outer_batch=outer_batch)

        setattr(trainer.learner, name, recording)
        runs[fused] = (trainer.train_epoch(), trainer.generator.state_dict())
        assert len(seen) == 4 and all(o.shape == x.shape and not torch.equal(o, x) for x, o in seen)
    for k in runs[True][1]:
        torch.testing.assert_close(runs[True][1][k], runs[False][1][k], rtol=1e-4, atol=1e-5, msg=k)


def test_label_warnings_are_one_line_on_the_command_line(tmp_path):
    import os
    import subprocess
    import sys

    argv = [
        "train",
        "--dataset",
        "digits",
        "--method",
        "maxl",
        "--epochs",
        "2",
        "--train-subset",
        "96",
        "--test-subset",
        "40",
        "--out",
        str(tmp_path),
        *FAST,
    ]
    done = subprocess.run(
        [sys.executable, "-m", "maxl", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("maxl: warning: epoch 2: gener") for line in lines), done.stderr
    assert "trainer.py" not in done.stderr


@pytest.mark.parametrize("schedule", ["alternate", "per-step"])
def test_per_image_weights_train_resume_reload_and_are_recorded(tmp_path, schedule):
    from maxl.analysis.run import load_run

    out = tmp_path / "weights"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--method",
        "maxl",
        "--image-weight-range",
        "1.5",
        "--schedule",
        schedule,
        "--meta-engine",
        "jvp",
        "--train-subset",
        "96",
        "--test-subset",
        "40",
        "--out",
        str(out),
        *FAST,
    ]
    assert main([*argv, "--epochs", "1"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    run = load_run(out)
    assert run.generator.weight_range == 1.5
    assert run.generator.head[-1].out_features == sum(run.generator.hierarchy.psi) + 1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert 2**-1.5 <= record["meta_image_weight_mean"] <= 2**1.5
        assert record["meta_image_weight_std"] > 0
        assert 0.0 < record["label_max_prob"] <= 1.0  # the labels, not the weighted targets


@pytest.mark.parametrize("schedule", ["alternate", "per-step"])
def test_the_centred_meta_gradient_runs_and_is_stored(tmp_path, schedule):
    out = tmp_path / "centred"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--method",
        "maxl",
        "--centre-meta-gradient",
        "--schedule",
        schedule,
        "--record-meta-parts",
        "--train-subset",
        "96",
        "--test-subset",
        "40",
        "--epochs",
        "1",
        "--out",
        str(out),
        *FAST,
    ]
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["objective"]["centre_by_class"] is True
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["meta_lookahead_grad_norm"] > 0


@pytest.mark.parametrize("schedule", [("alternate",), ("per-step",), ("per-step", "--no-fused")])
def test_gumbel_labels_anneal_resume_reload_and_their_statistics_describe_the_distribution(tmp_path, schedule):
    from maxl.analysis.run import load_run

    argv = [
        "train",
        "--dataset",
        "digits",
        "--method",
        "maxl",
        "--gumbel-tau",
        "1",
        "--gumbel-tau-end",
        "0.3",
        "--schedule",
        *schedule,
        "--meta-engine",
        "jvp",
        "--train-subset",
        "96",
        "--test-subset",
        "40",
        *FAST,
    ]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main([*argv, "--epochs", "2", "--out", str(whole)]) == 0
    assert main([*argv, "--epochs", "1", "--out", str(parts)]) == 0
    assert main(["train", "--resume", str(parts), "--epochs", "2"]) == 0
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (parts / "metrics.jsonl").read_text().splitlines()]
    assert [r["gumbel_tau"] for r in records] == pytest.approx([1.0, 0.3])
    for a, b in zip(records, resumed):  # the same temperatures and noise after the resume
        a.pop("epoch_time_s"), b.pop("epoch_time_s")
        assert a == b
    for record in records:
        assert 0.0 < record["label_max_prob"] < 1.0  # the generator's distribution, not its one-hot samples
    run = load_run(parts)
    assert run.generator.gumbel_tau == 1.0 and not run.generator.training
    config = json.loads((parts / "config.json").read_text())
    assert config["generator"]["gumbel_tau"] == 1.0 and config["generator"]["gumbel_tau_end"] == 0.3


def test_the_per_step_multitask_update_learns_from_the_look_aheads_targets_fused_or_not(tmp_path):
    """Hard Gumbel samples scaled by per-image weights: the separate multi-task step of the
    per-step schedule learns from the look-ahead's targets (the same draw), as the fused one does."""
    argv = [
        "train",
        "--dataset",
        "digits",
        "--method",
        "maxl",
        "--gumbel-tau",
        "0.5",
        "--image-weight-range",
        "1",
        "--schedule",
        "per-step",
        "--meta-engine",
        "jvp",
        "--train-subset",
        "96",
        "--test-subset",
        "40",
        "--epochs",
        "1",
        *FAST,
    ]
    assert main([*argv, "--out", str(tmp_path / "fused")]) == 0
    assert main([*argv, "--no-fused", "--out", str(tmp_path / "separate")]) == 0
    fused, separate = (json.loads((tmp_path / name / "metrics.jsonl").read_text()) for name in ("fused", "separate"))
    for key in ("train_aux_loss", "train_primary_loss", "meta_outer_loss", "meta_image_weight_mean"):
        assert separate[key] == pytest.approx(fused[key], rel=1e-4), key
