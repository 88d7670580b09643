"""Atomic writes stay atomic when two processes write the same file at once (e.g. two grids
started into one folder write its grid.json), and a write that fails (disk full, read-only
folder) leaves the previous file and no temporary file behind, with an error naming both."""

import errno
import multiprocessing as mp
import os
import pathlib
import shutil
import subprocess

import pytest
import torch

from maxl.data.readers import WriteError
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
        p.join(600)  # generous: a loaded machine (spawn imports torch) must not fail it
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


# --------------------------------------------------------------------------- a write that fails
def failing_save(error):
    """A torch.save that writes half a file, then fails with ``error``."""

    def save(obj, path):
        pathlib.Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise error

    return save


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"epoch": 1, "x": torch.ones(2)}, path)
    return path


def assert_intact(path, before):
    assert path.read_bytes() == before
    assert sorted(f.name for f in path.parent.iterdir()) == [path.name]  # no temporary file left behind
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_path_and_reason(checkpoint, monkeypatch):
    before = checkpoint.read_bytes()
    monkeypatch.setattr(torch, "save", failing_save(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    with pytest.raises(WriteError) as caught:
        atomic_torch_save({"epoch": 2}, checkpoint)
    assert str(caught.value) == (
        f"could not write {checkpoint}: No space left on device (ENOSPC); the previous checkpoint.pt is intact"
    )
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert caught.value.path == checkpoint
    assert_intact(checkpoint, before)


def test_torch_saves_runtime_error_gives_the_os_reason_it_names(checkpoint, monkeypatch):
    before = checkpoint.read_bytes()
    error = RuntimeError(
        "[enforce fail at inline_container.cc:747] . open file failed with strerror: Read-only file system"
    )
    monkeypatch.setattr(torch, "save", failing_save(error))
    with pytest.raises(WriteError, match=r"could not write .*checkpoint.pt: Read-only file system \(EROFS\)"):
        atomic_torch_save({"epoch": 2}, checkpoint)
    assert_intact(checkpoint, before)


def test_an_error_that_is_not_the_operating_systems_propagates_unchanged(checkpoint, monkeypatch):
    before = checkpoint.read_bytes()
    monkeypatch.setattr(torch, "save", failing_save(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="^a bug$"):
        atomic_torch_save({"epoch": 2}, checkpoint)
    assert_intact(checkpoint, before)


def test_a_folder_that_is_gone_is_named(tmp_path):
    with pytest.raises(
        WriteError, match=r"could not write .*gone/checkpoint.pt: No such file or directory \(ENOENT\)$"
    ):
        atomic_torch_save({}, tmp_path / "gone" / "checkpoint.pt")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_keeps_the_previous_checkpoint(checkpoint):
    before = checkpoint.read_bytes()
    checkpoint.parent.chmod(0o555)
    try:
        for write in (
            lambda: atomic_torch_save({"epoch": 2}, checkpoint),
            lambda: atomic_write_text(checkpoint, "text"),
        ):
            with pytest.raises(WriteError, match=r"checkpoint.pt: Permission denied \(EACCES\); the previous"):
                write()
    finally:
        checkpoint.parent.chmod(0o755)
    assert_intact(checkpoint, before)


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A real 64 KiB file system (tmpfs): only as root, where mounting works."""
    folder = tmp_path / "fs"
    folder.mkdir()
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_real_full_and_a_real_read_only_file_system(tiny_filesystem):
    path = tiny_filesystem / "checkpoint.pt"
    atomic_torch_save({"epoch": 1, "x": torch.ones(2)}, path)
    before = path.read_bytes()
    too_big = {"epoch": 2, "x": torch.ones(100_000)}  # 400 kB
    for write in (lambda: atomic_torch_save(too_big, path), lambda: atomic_write_text(path, "x" * 100_000)):
        with pytest.raises(WriteError, match=r"No space left on device \(ENOSPC\); the previous checkpoint.pt"):
            write()
        assert_intact(path, before)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_filesystem)], check=True)
    for write in (lambda: atomic_torch_save({"epoch": 2}, path), lambda: atomic_write_text(path, "x")):
        with pytest.raises(WriteError, match=r"Read-only file system \(EROFS\); the previous checkpoint.pt"):
            write()
        assert_intact(path, before)
