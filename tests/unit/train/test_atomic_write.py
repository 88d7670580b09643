"""Atomic writes stay atomic when two processes write the same file at once (e.g. two grids
started into one folder write its grid.json)."""

import multiprocessing as mp

import torch

from maxl.train.checkpoint import atomic_torch_save, atomic_write_text


def _writer(path: str, text: str, times: int, barrier) -> None:
    from pathlib import Path

    barrier.wait()  # both processes write at the same time
    for _ in range(times):
        atomic_write_text(Path(path), text)


def test_concurrent_writers_each_leave_a_whole_file_and_no_temporaries(tmp_path):
    path = tmp_path / "grid.json"
    texts = ["a" * 50_000, "b" * 50_000]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(path), t, 2000, barrier)) for t in texts]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]  # no FileNotFoundError on a shared temporary name
    assert path.read_text() in texts
    assert sorted(f.name for f in tmp_path.iterdir()) == ["grid.json"]


def test_atomic_torch_save_leaves_no_temporary(tmp_path):
    atomic_torch_save({"x": torch.ones(2)}, tmp_path / "checkpoint.pt")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert torch.equal(torch.load(tmp_path / "checkpoint.pt")["x"], torch.ones(2))


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    atomic_write_text(tmp_path / "config.json", "{}")
    (tmp_path / "plain.json").write_text("{}")
    assert os.stat(tmp_path / "config.json").st_mode == os.stat(tmp_path / "plain.json").st_mode
