"""Data-parallel training over processes started with torchrun (gloo on CPU).

* ``--method single`` with a BatchNorm-free backbone over 2 processes ends at the parameters
  of a 1-process run with the same global batch (float tolerance), and only rank 0 writes.
* The meta step is replica-local (see :mod:`maxl.train.distributed`): the generator's gradient over
  2 processes is the mean of the 1-process meta-gradients of the two halves of the batch, and
  not the meta-gradient of the whole batch; so is the weight step of every meta-learned weighting
  (Auto-λ, OL-AUX, AuxiLearn): the mean of the processes' weight gradients.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maxl.cli.commands import main
from maxl.core.losses import classification_loss
from maxl.meta import meta_gradient
from maxl.nn.backbones import build_backbone
from maxl.nn.networks import MultiTaskNetwork
from maxl.train import seed_everything

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

ROOT = Path(__file__).resolve().parents[2]  # the repository
HERE = Path(__file__).resolve().parent


def torchrun(*args, nproc=2):
    """``torchrun --standalone --nproc_per_node N ARGS`` with this checkout's maxl."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    run = [
        "train",
        "--dataset",
        "digits",
        "--no-batchnorm",
        "--epochs",
        "1",
        "--train-subset",
        "128",
        "--test-subset",
        "60",
        "--batch-size",
        "32",
        "--lr",
        "0.1",
        "--momentum",
        "0.9",
        "--hidden",
        "16",
        "--device",
        "cpu",
        "--no-progress",
        "--seed",
        "0",
    ]
    done = torchrun("-m", "maxl", *run, "--method", "single", "maxl", "--out", str(tmp_path / "two"))
    assert done.stdout.count("[single] training 1 epochs") == 1  # rank 0 alone prints
    assert main([*run, "--method", "single", "--out", str(tmp_path / "one" / "single")]) == 0

    seed_everything(0)  # the network every run starts from
    init = MultiTaskNetwork(build_backbone("tiny-cnn", 1, batchnorm=False), 10, 0, 16).state_dict()
    two = torch.load(tmp_path / "two" / "single" / "checkpoint.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "single" / "checkpoint.pt", weights_only=True)
    moved = max((one["net"][k] - init[k]).abs().max().item() for k in init)
    assert moved > 1e-2  # four SGD steps changed the network ...
    for k in init:  # ... and two processes changed it in the same way
        torch.testing.assert_close(two["net"][k], one["net"][k], rtol=1e-4, atol=1e-6, msg=k)
    rows = {
        n: [json.loads(r) for r in (tmp_path / n / "single" / "metrics.jsonl").read_text().splitlines()]
        for n in ("one", "two")
    }
    assert len(rows["two"]) == 1  # one record per epoch: only rank 0 writes
    assert rows["two"][0]["test_acc"] == rows["one"][0]["test_acc"]
    assert rows["two"][0]["train_acc"] == rows["one"][0]["train_acc"]
    assert rows["two"][0]["train_primary_loss"] == pytest.approx(rows["one"][0]["train_primary_loss"], rel=1e-5)
    assert json.loads((tmp_path / "two" / "single" / "config.json").read_text())["env"]["world_size"] == 2
    # maxl over two processes runs to the end as well (its generator step is checked below)
    maxl_rows = (tmp_path / "two" / "maxl" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in maxl_rows] == [1]


def test_the_generator_step_averages_replica_local_meta_gradients(tmp_path):
    from tests.integration import distributed_meta_worker as worker

    torchrun(str(HERE / "distributed_meta_worker.py"), str(tmp_path / "grads.pt"))
    grads = torch.load(tmp_path / "grads.pt", weights_only=True)

    _, x, y = worker.batch()
    net, gen = worker.networks()
    loss = classification_loss("focal")
    halves = [meta_gradient(net, gen, x[s], y[s], loss, worker.META).grads for s in (slice(0, 8), slice(8, 16))]
    for g, a, b in zip(grads, *halves):
        torch.testing.assert_close(g, (a + b) / 2, rtol=1e-4, atol=1e-7)
    # a look-ahead over the whole batch would give another gradient: the test tells the designs apart
    whole = meta_gradient(net, gen, x, y, loss, worker.META).grads
    gap = (
        torch.cat([(w - g).flatten() for w, g in zip(whole, grads)]).norm()
        / torch.cat([g.flatten() for g in grads]).norm()
    )
    assert gap > 0.05


def test_auxiliary_tasks_and_weightings_train_under_torchrun_like_one_process(tmp_path):
    """The one step path under torchrun: human labels + rotation with uncertainty weighting
    over two processes end at the one-process parameters; MAXL with rotation runs to the end."""
    run = [
        "train",
        "--dataset",
        "digits",
        "--hierarchy",
        "even-odd",
        "--no-batchnorm",
        "--epochs",
        "1",
        "--train-subset",
        "64",
        "--test-subset",
        "20",
        "--batch-size",
        "32",
        "--lr",
        "0.1",
        "--hidden",
        "16",
        "--aux",
        "rotation",
        "--weighting",
        "uncertainty",
        "--device",
        "cpu",
        "--no-progress",
        "--seed",
        "0",
    ]
    torchrun("-m", "maxl", *run, "--method", "human", "maxl", "--out", str(tmp_path / "two"))
    assert main([*run, "--method", "human", "--out", str(tmp_path / "one")]) == 0
    two = torch.load(tmp_path / "two" / "human" / "checkpoint.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    for entry in ("net", "learner"):  # backbone and heads; rotation head and log-variances
        assert one[entry].keys() == two[entry].keys() and one[entry]
        for k in one[entry]:
            torch.testing.assert_close(two[entry][k], one[entry][k], rtol=1e-4, atol=1e-6, msg=f"{entry}.{k}")
    record = json.loads((tmp_path / "two" / "maxl" / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and "train_loss_rotation" in record and "meta_outer_loss" in record


@pytest.mark.parametrize("outer", ["held-out", "training"])
def test_auto_lambda_under_torchrun_averages_replica_local_weight_gradients(tmp_path, outer):
    """Auto-λ (fused step, the default) over 2 processes: both ranks hold the same weights after
    each step, and they and the network equal a one-process run in which each step's weight gradient
    is the mean of the (unfused) engine's gradients of the two halves of the global batch, and the
    network then steps on the whole batch (replica-local look-ahead, as for MAXL's generator); the
    outer batches are held-out images, or (``--weight-split 0``) the training images, the same
    global batch on every rank."""
    from tests.integration import distributed_weights_worker as worker

    torchrun(str(HERE / "distributed_weights_worker.py"), str(tmp_path / "state.pt"), "fused", outer)
    ranks = [torch.load(tmp_path / f"state.pt.{r}", weights_only=True) for r in (0, 1)]
    lams = [r["weighting"]["lam"] for r in ranks]
    assert torch.equal(lams[0], lams[1])
    assert (lams[0] - 1.0).abs().max() > 1e-3  # learnt, not the initial 1

    t = worker.trainer(fused=False, weight_every=10**9, outer=outer)
    t.step = 1  # no weight step inside multitask(): the reference takes its own below
    weighting = t.learner.weighting
    for step in range(worker.STEPS):
        x, y, idx = worker.batch(step)
        held_out = t._held_out_batch(step)  # the same held-out batch on every rank
        alpha = t.optimizer.param_groups[0]["lr"]
        halves = [
            weighting.meta_gradient(t.learner, x[s], y[s], held_out, alpha=alpha, index=idx[s]).grad
            for s in (slice(0, 8), slice(8, 16))
        ]
        weighting.apply_gradient((halves[0] + halves[1]) / 2)
        t.steps.multitask(x, y, idx)
    torch.testing.assert_close(lams[0], weighting.lam.detach(), rtol=1e-4, atol=1e-6)
    for k, v in t.net.state_dict().items():
        torch.testing.assert_close(ranks[0]["net"][k], v, rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize(("weighting", "fused"), [("ol-aux", "fused"), ("auxilearn", "unfused")])
def test_ol_aux_and_auxilearn_under_torchrun_average_replica_local_weight_gradients(tmp_path, weighting, fused):
    """OL-AUX (fused: the alignments from each rank's own per-task gradients, averaged; a horizon of
    2, so the 3 steps hold one update and a sum under way) and AuxiLearn (its auxiliary network's
    implicit gradients, averaged) over 2 processes: every rank holds the same weighting state, and
    it and the network equal a one-process run in which each step's weight gradient is the mean of
    the unfused gradients of the two halves of the global batch and the network then steps on the
    whole batch."""
    from tests.integration import distributed_weights_worker as worker

    torchrun(str(HERE / "distributed_weights_worker.py"), str(tmp_path / "state.pt"), fused, "held-out", weighting)
    ranks = [torch.load(tmp_path / f"state.pt.{r}", weights_only=True) for r in (0, 1)]
    for k, v in ranks[0]["weighting"].items():
        assert torch.equal(v, ranks[1]["weighting"][k]), k

    t = worker.trainer(fused=False, weight_every=10**9, weighting=weighting)
    t.step = 1  # no weight step inside multitask(): the reference takes its own below
    w = t.learner.weighting
    start = {k: v.clone() for k, v in w.state_dict().items()}
    for step in range(worker.STEPS):
        x, y, idx = worker.batch(step)
        held_out = None if weighting == "ol-aux" else t._held_out_batch(step)
        alpha = t.optimizer.param_groups[0]["lr"]
        halves = [
            w.meta_gradient(t.learner, x[s], y[s], held_out, alpha=alpha, index=idx[s]).grad
            for s in (slice(0, 8), slice(8, 16))
        ]
        if isinstance(halves[0], list):
            w.apply_gradient([(a + b) / 2 for a, b in zip(*halves)])
        else:
            w.apply_gradient((halves[0] + halves[1]) / 2)
        t.steps.multitask(x, y, idx)
    state = w.state_dict()
    moved = [k for k in state if state[k].is_floating_point() and not torch.equal(state[k], start[k])]
    assert moved  # the weights learnt something in 3 steps
    for k, v in state.items():
        torch.testing.assert_close(ranks[0]["weighting"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    for k, v in t.net.state_dict().items():
        torch.testing.assert_close(ranks[0]["net"][k], v, rtol=1e-4, atol=1e-6, msg=k)
