"""Runs that survive pre-emption (issue 22): a signal stops a run after the step under way with a
step-level checkpoint, and ``--resume`` continues inside the epoch to exactly the numbers of the
uninterrupted run (same machine: bit for bit).

In-process tests cover each schedule and each place of an epoch (the multi-task pass, the
generator pass, the outer loss's own stream, a one-cycle learning rate, a weighting with a loss
history, random rotations); subprocess tests send real signals to a real ``maxl train`` from
outside, kill one with SIGKILL after a ``--checkpoint-every`` checkpoint, and signal one again
while it writes its checkpoint.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maxl.cli.commands import main
from maxl.train import Trainer
from maxl.train.preemption import EXIT_PREEMPTED

from .test_reproducibility import assert_same_networks, records

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# 128 training images in batches of 16: 8 steps per pass (16 per epoch with the alternate schedule)
RUN = [
    "train",
    "--dataset",
    "digits",
    "--train-subset",
    "128",
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
    "--epochs",
    "3",
]
VARIANTS = {
    "alternate-outer-batches": ["--method", "maxl", "--meta-batch", "other"],
    "per-step-onecycle": [
        "--method",
        "maxl",
        "--schedule",
        "per-step",
        "--gen-every",
        "3",
        "--meta-batch",
        "other",
        "--lr-schedule",
        "onecycle",
    ],
    "single-dwa-random-rotation": [
        "--method",
        "single",
        "--aux",
        "rotation",
        "--rotation-mode",
        "random",
        "--weighting",
        "dwa",
    ],
}


def signal_after_step(monkeypatch, k: int, signum=signal.SIGTERM):
    """Send ``signum`` to this process right after the run's ``k``-th step (1-based, every step
    of every pass), before the trainer looks for signals."""
    after_step, count = Trainer.after_step, [0]

    def patched(self, position):
        count[0] += 1
        if count[0] == k:
            os.kill(os.getpid(), signum)
        after_step(self, position)

    monkeypatch.setattr(Trainer, "after_step", patched)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted run of each variant."""
    out = tmp_path_factory.mktemp("uninterrupted")
    for name, flags in VARIANTS.items():
        assert main([*RUN, *flags, "--out", str(out / name)]) == 0
    return out


# (variant, step after which the signal arrives, the signal): places inside the multi-task pass,
# at the end of the first pass, inside the generator pass (whose outer stream is half used), in
# the last epoch, and past the schedule's generator steps
CASES = [
    ("alternate-outer-batches", 3, signal.SIGTERM),
    ("alternate-outer-batches", 8, signal.SIGINT),
    ("alternate-outer-batches", 13, signal.SIGUSR1),
    ("alternate-outer-batches", 45, signal.SIGTERM),
    ("per-step-onecycle", 5, signal.SIGTERM),
    ("per-step-onecycle", 20, signal.SIGUSR1),
    ("single-dwa-random-rotation", 6, signal.SIGTERM),
    ("single-dwa-random-rotation", 17, signal.SIGINT),
]


@pytest.mark.parametrize("name, k, signum", CASES, ids=[f"{n}-step{k}-{signal.Signals(s).name}" for n, k, s in CASES])
def test_a_signalled_run_resumed_mid_epoch_equals_the_uninterrupted_run(
    name, k, signum, uninterrupted, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    signal_after_step(monkeypatch, k, signum)
    assert main([*RUN, *VARIANTS[name], "--out", str(run)]) == EXIT_PREEMPTED
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"maxl: stopped by {signal.Signals(signum).name} after step") and str(run) in err[-1]
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    steps_per_epoch = 16 if name.startswith("alternate") else 8
    assert state["epoch"] == (k - 1) // steps_per_epoch  # inside an epoch, not at its end
    position = state["epoch_part"]["position"]
    assert position["pass_"] * 8 + position["batch"] == (k - 1) % steps_per_epoch + 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handlers are gone

    torch.manual_seed(1234)  # whatever state the new process starts in
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert records(run) == records(uninterrupted / name)
    assert_same_networks(
        run,
        uninterrupted / name,
        parts=("net", "generator", "optimizer", "gen_optimizer")
        if VARIANTS[name][1] == "maxl"
        else ("net", "optimizer"),
    )


def test_checkpoint_every_n_steps_holds_the_position_and_resumes_exactly(uninterrupted, tmp_path, monkeypatch):
    """A run killed (no signal: the process is just gone) after step 11 continues from the
    step-level checkpoint of step 10 that ``--checkpoint-every 5`` wrote."""
    run = tmp_path / "run"
    after_step, count = Trainer.after_step, [0]

    class Killed(Exception):
        pass

    def killed_after_11(self, position):
        after_step(self, position)
        count[0] += 1
        if count[0] == 11:
            raise Killed

    monkeypatch.setattr(Trainer, "after_step", killed_after_11)
    with pytest.raises(Killed):
        main([*RUN, *VARIANTS["alternate-outer-batches"], "--checkpoint-every", "5", "--out", str(run)])
    monkeypatch.undo()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 0 and state["epoch_part"]["position"] == {"pass_": 1, "batch": 2, "outer": 2}
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert records(run) == records(uninterrupted / "alternate-outer-batches")
    assert_same_networks(run, uninterrupted / "alternate-outer-batches")


def test_a_step_level_checkpoint_of_two_processes_is_refused_on_one(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    signal_after_step(monkeypatch, 3)
    assert main([*RUN, "--method", "single", "--out", str(run)]) == EXIT_PREEMPTED
    monkeypatch.undo()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["epoch_part"]["sums_per_rank"] *= 2  # as two processes write it
    torch.save(state, run / "checkpoint.pt")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert "written inside epoch 1 by 2 processes; resume it on as many" in capsys.readouterr().err


# ------------------------------------------------------------------ real processes, real signals
def maxl_process(*args, worker: list[str] | None = None) -> subprocess.Popen:
    """``python -m maxl ARGS`` (or ``signal_worker.py WORKER -- ARGS``) with this checkout's maxl."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = (
        [sys.executable, "-m", "maxl", *args]
        if worker is None
        else [sys.executable, str(HERE / "signal_worker.py"), *worker, "--", *args]
    )
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def resume_in_a_process_to(run: Path, reference: Path) -> None:
    """``maxl train --resume RUN`` in a new process ends at ``reference``'s metrics and weights, bit for bit."""
    resumed = maxl_process("train", "--resume", str(run), "--no-progress")
    assert resumed.wait(300) == 0, resumed.stderr.read()
    assert records(run) == records(reference)
    assert_same_networks(run, reference)


LONG = [*RUN[:-1], "12", "--method", "maxl", "--meta-batch", "other"]  # 12 epochs: long enough to be caught in


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("long") / "full"
    done = maxl_process(*LONG, "--out", str(out))
    assert done.wait(300) == 0, done.stderr.read()
    return out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_from_outside_stops_a_process_that_resumes_to_the_uninterrupted_run(signum, long_run, tmp_path):
    run = tmp_path / "run"
    proc = maxl_process(*LONG, "--out", str(run))
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.01)
    time.sleep(random.Random(int(signum)).uniform(0, 0.5))  # somewhere in the next epochs
    proc.send_signal(signum)
    assert proc.wait(120) == EXIT_PREEMPTED
    err = proc.stderr.read().strip().splitlines()
    assert err[-1].startswith(f"maxl: stopped by {signal.Signals(signum).name} after step"), err
    assert len(records(run)) < 12
    resume_in_a_process_to(run, long_run)


def test_sigkill_after_a_checkpoint_every_checkpoint_then_resume(long_run, tmp_path):
    run = tmp_path / "run"
    proc = maxl_process(*LONG, "--checkpoint-every", "4", "--out", str(run), worker=["SIGKILL", "30"])
    assert proc.wait(120) == -signal.SIGKILL
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["epoch_part"]["position"]["pass_"], state["epoch_part"]["position"]["batch"]) == (
        1,
        1,
        4,
    )  # step 28 of the run: epoch 2's step 12, the 4th of its generator pass
    resume_in_a_process_to(run, long_run)


def test_a_second_signal_while_the_checkpoint_is_written_does_not_corrupt_it(long_run, tmp_path):
    run = tmp_path / "run"
    proc = maxl_process(*LONG, "--out", str(run), worker=["SIGTERM", "20", "--again-while-writing", "SIGINT"])
    assert proc.wait(120) == EXIT_PREEMPTED, proc.stderr.read()
    err = proc.stderr.read()
    assert "sent SIGINT while writing" in err and "maxl: stopped by SIGTERM after step" in err
    assert list(run.glob("*.tmp*")) == []
    resume_in_a_process_to(run, long_run)


# ------------------------------------------------------------------ elastic restarts under torchrun
def torchrun(*args, restarts=0, nproc=2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        f"--max-restarts={restarts}",
        *args,
    ]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_torchrun_restarts_a_group_whose_rank_1_was_killed_and_it_continues_from_the_checkpoint(tmp_path):
    """2 gloo processes, ``--max-restarts 1``: rank 1 is SIGKILLed after step 21 (epoch 2's 5th
    step); torchrun restarts the group, which continues from the step-level checkpoint of step 20
    without a hand-typed --resume and ends at the uninterrupted run's metrics and weights."""
    run = [*RUN, "--method", "maxl", "--device", "cpu", "--checkpoint-every", "4", "--no-batchnorm"]
    full = torchrun("-m", "maxl", *run, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]
    killed = torchrun(
        str(HERE / "signal_worker.py"),
        "SIGKILL",
        "21",
        "--only-rank",
        "1",
        "--",
        *run,
        "--out",
        str(tmp_path / "killed"),
        restarts=1,
    )
    assert killed.returncode == 0, killed.stderr[-3000:]
    assert "failed (exitcode: -9) local_rank: 1" in killed.stderr  # the first attempt did die, by SIGKILL
    assert "resuming" in killed.stdout and "after epoch 1 of 3" in killed.stdout
    resumed = __import__("json").loads((tmp_path / "killed" / "config.json").read_text())["resumed"]
    assert len(resumed) == 1 and resumed[0]["world_size"] == 2
    a, b = records(tmp_path / "killed"), records(tmp_path / "full")
    assert [r["epoch"] for r in a] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for key, value in rb.items():
            if isinstance(value, float):
                assert ra[key] == pytest.approx(value, rel=1e-5, abs=1e-7, nan_ok=True), key
            else:
                assert ra[key] == value, key
    sa, sb = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=True) for r in ("killed", "full"))
    for part in ("net", "generator"):
        for k in sb[part]:
            torch.testing.assert_close(sa[part][k], sb[part][k], rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")


def test_auto_resume_starts_afresh_continues_a_run_and_refuses_other_settings(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    flags = [*RUN, "--method", "single", "--out", str(run), "--auto-resume"]
    signal_after_step(monkeypatch, 11)  # epoch 2, step 3
    assert main(flags) == EXIT_PREEMPTED  # no checkpoint yet: a fresh start
    monkeypatch.undo()
    assert main([*RUN, "--method", "single", "--lr", "0.1", "--out", str(run), "--auto-resume"]) == 2
    err = capsys.readouterr().err
    assert "other settings than this trainer's: train.lr: checkpoint 0.05, now 0.1" in err
    assert main(flags) == 0  # the same settings: continued
    assert main([*RUN, "--method", "single", "--out", str(tmp_path / "full")]) == 0
    assert records(run) == records(tmp_path / "full")
    config = __import__("json").loads((run / "config.json").read_text())
    assert [r["after_epoch"] for r in config["resumed"]] == [1]
