"""AdaShare's alternation of weight and policy updates on two splits of the training images
(Sun et al., NeurIPS 2020, Sec. 3.4), and MTL-NAS's of weight and gate updates on two halves: the
splits, which parameters and buffers each update moves, which split each update's batches come
from, and resume equal to an uninterrupted run; the best of N sampled architectures chosen on
validation, never reading the test set."""

from __future__ import annotations

import json

import pytest
import torch

from auxtasks.learner import frozen_running_stats
from maxl.train.build import RunConfig, build

pytestmark = pytest.mark.integration

SPLIT = 64


def _config(out, epochs=2, data=None, **model):
    return RunConfig.from_dict(
        {
            "data": {"dataset": "digits", "hierarchy": "even-odd", "train_subset": 200, "test_subset": 50}
            | (data or {}),
            "model": {
                "hidden": 8,
                "backbone": "resnet20",
                "arch": "adashare",
                "adashare_warmup": 0,  # the search from the first epoch
                "adashare_policy_split": SPLIT,
                **model,
            },
            "train": {"method": "human", "epochs": epochs, "batch_size": 32, "lr": 0.01, "progress": False},
            "out": str(out),
            "threads": 1,
        }
    )


def _rows(dataset) -> set[bytes]:
    return {img.numpy().tobytes() for img in dataset.images}


def test_policy_split_is_class_stratified_and_disjoint_from_the_weights_split(tmp_path):
    trainer = build(_config(tmp_path / "run"), log=lambda *_: None)
    a, b = trainer.train_set, trainer.arch_set
    assert len(a) == 200 - SPLIT and len(b) == SPLIT
    assert not _rows(a) & _rows(b)  # no image of split B in split A
    assert len(_rows(a) | _rows(b)) == len(_rows(a)) + len(_rows(b))
    counts_a, counts_b = torch.bincount(a.labels, minlength=2), torch.bincount(b.labels, minlength=2)
    share = counts_b.double() / (counts_a + counts_b).double()  # each class: about SPLIT / 200 held out
    assert torch.all((share - SPLIT / 200).abs() < 0.02)
    assert trainer.arch_aux_labels is not None and len(trainer.arch_aux_labels) == SPLIT
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["adashare_policy_split"] == SPLIT


def test_a_weight_update_keeps_the_policy_and_a_policy_update_keeps_weights_and_batchnorm(tmp_path):
    trainer = build(_config(tmp_path / "run"), log=lambda *_: None)
    trunk = trainer.net.backbone
    trunk.begin_epoch(0)
    trainer.learner.train()
    assert trunk.phase == "search" and not trunk.policy_logits.requires_grad
    assert all(p is not trunk.policy_logits for g in trainer.optimizer.param_groups for p in g["params"])
    x, y, idx = next(iter(trainer._batches(trainer.train_set, True)))
    logits = trunk.policy_logits.detach().clone()
    weights = {k: v.clone() for k, v in trainer.net.state_dict().items() if k != "backbone.policy_logits"}
    trainer.steps.multitask(x, y, idx)
    assert torch.equal(trunk.policy_logits, logits)  # bit for bit
    assert any(not torch.equal(v, trainer.net.state_dict()[k]) for k, v in weights.items())  # the weights moved

    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in trainer.net.parameters()]
    record = trainer.arch_pass()
    after = trainer.net.state_dict()
    for k, v in before.items():  # weights, BatchNorm running statistics and batch counters
        if k != "backbone.policy_logits":
            assert torch.equal(after[k], v), k
    assert not torch.equal(after["backbone.policy_logits"], before["backbone.policy_logits"])
    assert not trunk.policy_logits.requires_grad and trunk.policy_logits.grad is None
    for p, g in zip(trainer.net.parameters(), grads):  # the weights' .grad untouched
        assert (p.grad is None) == (g is None) and (g is None or torch.equal(p.grad, g))
    assert record["arch_loss"] > 0
    state = trainer.arch_optimizer.state_dict()["state"]
    assert int(state[0]["step"]) == SPLIT // 32  # one Adam step per batch of split B


def test_a_policy_pass_leaves_a_loss_history_weighting_as_it_was(tmp_path):
    run = _config(tmp_path / "run").to_dict()
    run["aux"] = {**run.get("aux", {}), "weighting": "dwa"}
    trainer = build(RunConfig.from_dict(run), log=lambda *_: None)
    trainer.net.backbone.begin_epoch(0)
    trainer.learner.train()
    x, y, idx = next(iter(trainer._batches(trainer.train_set, True)))
    trainer.steps.multitask(x, y, idx)
    before = {k: v.clone() for k, v in trainer.learner.weighting.state_dict().items()}
    assert int(before["epoch_steps"]) == 1
    trainer.arch_pass()
    for k, v in trainer.learner.weighting.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert trainer.learner.weighting.training


def test_weight_batches_come_from_split_a_and_policy_batches_from_split_b(tmp_path, monkeypatch):
    trainer = build(_config(tmp_path / "run", epochs=1), log=lambda *_: None)
    seen: list[tuple[str, torch.Tensor]] = []
    real = trainer._batches

    def recording(dataset, train, pass_index=0, skip=0):
        name = "B" if dataset is trainer.arch_set else "A" if dataset is trainer.train_set else "other"
        for x, y, idx in real(dataset, train, pass_index, skip):
            if train:
                seen.append((name, idx.clone()))
                torch.testing.assert_close(y, dataset.labels[idx])
            yield x, y, idx

    monkeypatch.setattr(trainer, "_batches", recording)
    trainer.fit()
    names = [n for n, _ in seen]
    steps_a, steps_b = (200 - SPLIT) // 32, SPLIT // 32
    assert names == ["A"] * steps_a + ["B"] * steps_b  # the weight pass, then the policy pass
    b = torch.cat([i for n, i in seen if n == "B"])
    assert len(set(b.tolist())) == len(b) and int(b.max()) < SPLIT  # distinct images of split B
    assert [t.tolist() for t in trainer.arch_batches] == [i.tolist() for n, i in seen if n == "B"]
    assert trainer.history[-1]["arch_loss"] > 0


def test_resume_in_the_search_equals_the_uninterrupted_run(tmp_path):
    whole = build(_config(tmp_path / "whole", epochs=3), log=lambda *_: None)
    whole.fit()
    build(_config(tmp_path / "part", epochs=1), log=lambda *_: None).fit()
    resumed = build(_config(tmp_path / "part", epochs=3), resume=True, log=lambda *_: None)
    resumed.fit()
    torch.testing.assert_close(resumed.net.backbone.policy_logits, whole.net.backbone.policy_logits, rtol=0, atol=0)
    for k, v in whole.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k], v, rtol=0, atol=0)
    steps = [t.arch_optimizer.state_dict()["state"][0]["step"] for t in (resumed, whole)]
    assert steps[0] == steps[1] == 3 * (SPLIT // 32)
    assert [r["test_acc"] for r in resumed.history] == [r["test_acc"] for r in whole.history]
    assert [r["adashare_tau"] for r in whole.history] == pytest.approx([5.0, 5.0 * 0.965, 5.0 * 0.965**2])


def test_a_run_killed_inside_a_search_epoch_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    """Killed after step 7 (the 3rd weight update of search epoch 2); the step-level checkpoint of
    step 6 (``checkpoint_every`` 2) holds the policy optimiser, and the rest of the epoch (weight
    updates, then the policy pass) continues as the uninterrupted run."""
    from maxl.train.trainer import Trainer

    def config(out):
        run = _config(out, epochs=2)
        return RunConfig.from_dict({**run.to_dict(), "train": {**run.to_dict()["train"], "checkpoint_every": 2}})

    whole = build(config(tmp_path / "whole"), log=lambda *_: None)
    whole.fit()
    after_step, count = Trainer.after_step, [0]

    class Killed(Exception):
        pass

    def killed_after_7(self, position):
        after_step(self, position)
        count[0] += 1
        if count[0] == 7:
            raise Killed

    monkeypatch.setattr(Trainer, "after_step", killed_after_7)
    with pytest.raises(Killed):
        build(config(tmp_path / "part"), log=lambda *_: None).fit()
    monkeypatch.undo()
    state = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and "arch_optimizer" in state and "epoch_part" in state
    resumed = build(config(tmp_path / "part"), resume=True, log=lambda *_: None)
    resumed.fit()
    for k, v in whole.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k], v, rtol=0, atol=0)
    assert [r["test_acc"] for r in resumed.history] == [r["test_acc"] for r in whole.history]
    assert [r["arch_loss"] for r in resumed.history] == [r["arch_loss"] for r in whole.history]


def test_the_joint_scheme_stays_reachable(tmp_path):
    trainer = build(_config(tmp_path / "run", epochs=1, adashare_policy_split=0), log=lambda *_: None)
    trunk = trainer.net.backbone
    assert trainer.arch_set is None and trainer.arch_optimizer is None and len(trainer.train_set) == 200
    assert trunk.policy_logits.requires_grad
    assert any(p is trunk.policy_logits for g in trainer.optimizer.param_groups for p in g["params"])
    before = trunk.policy_logits.detach().clone()
    trainer.fit()
    assert not torch.equal(trunk.policy_logits, before)


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        raise AssertionError("the test set was read")

    def __getitem__(self, i):
        raise AssertionError("the test set was read")


def test_best_of_n_samples_is_the_argmax_of_validation_accuracy_and_reads_no_test_image(tmp_path):
    from maxl.nn.architectures.adashare import parse_policy

    config = _config(tmp_path / "run", epochs=2, data={"val_subset": 40}, adashare_samples=4)
    trainer = build(config, log=lambda *_: None)
    summary = trainer.fit()
    choice = summary["adashare_samples"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["adashare_samples"] == choice
    assert len(choice["policies"]) == len(choice["scores"]) == 4
    assert choice["chosen"] == choice["policies"][max(range(4), key=lambda i: choice["scores"][i])]
    trunk, val = trainer.net.backbone, trainer.val_set
    trainer.test_set = _Unreadable()
    again = trainer.choose_architecture()  # the same draws (from the seed alone), and no test image read
    assert again == choice
    assert trunk.phase == "search" and torch.all(trunk.fixed_buffer() == 1)  # restored after the draws
    images = torch.stack([val[i][0] for i in range(len(val))])
    labels = torch.tensor([int(val[i][1]) for i in range(len(val))])
    trainer.net.eval()
    for text, score in zip(choice["policies"], choice["scores"]):  # each score: the policy's validation accuracy
        with torch.no_grad(), trunk.fixed(parse_policy(text, 2, len(trunk.residual))):
            accuracy = (trainer.net(images)[0].argmax(1) == labels).double().mean().item()
        assert score == pytest.approx(accuracy, abs=1e-12)


def test_best_of_n_samples_needs_a_validation_split(tmp_path):
    with pytest.raises(ValueError, match="set --val-subset"):
        build(_config(tmp_path / "run", adashare_samples=2), log=lambda *_: None)


def test_the_policy_split_holds_at_least_one_batch(tmp_path):
    with pytest.raises(ValueError, match="adashare_policy_split must hold at least one batch"):
        build(_config(tmp_path / "run", adashare_policy_split=16), log=lambda *_: None)
    small = _config(tmp_path / "small", data={"train_subset": 250}, adashare_policy_split=None)
    trainer = build(small, log=lambda *_: None)  # default: a tenth (25), raised to one batch
    assert len(trainer.arch_set) == 32


def test_mtl_nas_alternates_weight_updates_and_gate_updates_on_two_halves(tmp_path):
    config = RunConfig.from_dict(
        {
            "data": {"dataset": "digits", "hierarchy": "even-odd", "train_subset": 200, "test_subset": 50},
            "model": {"hidden": 8, "arch": "mtl-nas"},
            "train": {"method": "human", "epochs": 1, "batch_size": 32, "progress": False},
            "out": str(tmp_path / "run"),
            "threads": 1,
        }
    )
    trainer = build(config, log=lambda *_: None)
    trunk = trainer.net.backbone
    assert len(trainer.train_set) == len(trainer.arch_set) == 100 and not _rows(trainer.train_set) & _rows(
        trainer.arch_set
    )
    trunk.begin_epoch(0)
    trainer.learner.train()
    x, y, idx = next(iter(trainer._batches(trainer.train_set, True)))
    trainer.steps.multitask(x, y, idx)
    assert torch.all(trunk.gate_logits == 0)  # a weight update leaves the gates
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    trainer.arch_pass()
    after = trainer.net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k != "backbone.gate_logits")
    assert torch.all(trunk.gate_logits.abs() > 1e-3)  # 3 Adam steps of lr 3e-3 moved every gate


def test_arch_update_is_one_update_of_arch_pass_and_only_runs_inside_arch_updates(tmp_path):
    """Trainer.arch_updates() / arch_update(): the per-batch body of arch_pass, usable alone (the
    architecture-search timing of experiments/architecture_search.py times it)."""
    trainer = build(_config(tmp_path / "run"), log=lambda *_: None)
    trunk = trainer.net.backbone
    trunk.begin_epoch(0)
    trainer.learner.train()
    x, y, idx = next(iter(trainer._batches(trainer.arch_set, True)))
    with pytest.raises(RuntimeError, match="arch_updates"):
        trainer.arch_update(x, y, idx)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    trunk.gumbel_noise = torch.zeros_like(trunk.policy_logits)  # the same sample in both updates below
    with trainer.arch_updates() as update:
        assert trunk.policy_logits.requires_grad and not trainer.learner.weighting.training
        loss = update(x, y, idx)
    assert not trunk.policy_logits.requires_grad and trainer.learner.weighting.training
    assert loss > 0 and int(trainer.arch_optimizer.state_dict()["state"][0]["step"]) == 1
    moved = trainer.net.state_dict()
    assert all(torch.equal(moved[k], v) for k, v in before.items() if k != "backbone.policy_logits")
    assert not torch.equal(moved["backbone.policy_logits"], before["backbone.policy_logits"])

    # the same update by hand: Adam (lr 0.01, weight decay 5e-4) on the loss's gradient w.r.t. the logits
    again = build(_config(tmp_path / "again"), log=lambda *_: None)
    again.net.backbone.begin_epoch(0)
    again.learner.train()
    again.net.backbone.gumbel_noise = trunk.gumbel_noise
    with again.net.backbone.arch_step(), frozen_running_stats(again.learner):
        again.learner.weighting.eval()
        labels = again.arch_aux_labels[idx]
        out = again.learner(x, y, aux_targets={again.learner.tasks[0].name: labels})
        (grad,) = torch.autograd.grad(out.loss, [again.net.backbone.policy_logits])
    reference = torch.optim.Adam([again.net.backbone.policy_logits], lr=0.01, weight_decay=5e-4)
    again.net.backbone.policy_logits.grad = grad
    reference.step()
    assert out.loss.item() == loss
    assert torch.equal(again.net.backbone.policy_logits, trunk.policy_logits)


def test_arch_updates_refuses_a_network_without_an_architecture_search(tmp_path):
    trainer = build(
        _config(tmp_path / "run", adashare_policy="1,1,1,1,1,1,1,1,1;1,1,1,1,1,0,0,0,0"), log=lambda *_: None
    )
    with pytest.raises(ValueError, match="no architecture parameters"):
        with trainer.arch_updates():
            pass
