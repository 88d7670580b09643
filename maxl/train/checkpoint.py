"""Checkpoints: atomic writes, the random-number state, safe and checked loading.

A checkpoint holds everything :meth:`maxl.train.Trainer.fit` needs to continue a run to
exactly the numbers of an uninterrupted one: the networks, optimisers and schedulers, the
epoch and step counters, the metrics history, the configuration and every random-number
generator (python, numpy, torch, CUDA; under torchrun each process's torch stream).
"""

from __future__ import annotations

import ast
import os
import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from maxl.data.readers import atomic_write
from maxl.train import distributed
from maxl.train.config import RESUMABLE_CHANGES

__all__ = [
    "CheckpointError",
    "atomic_torch_save",
    "atomic_write_text",
    "capture_rng",
    "restore_rng",
    "read_checkpoint",
    "config_differences",
]


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded: corrupt, unsafe, or from a run with other settings."""


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``:
    a crash mid-write never leaves a truncated checkpoint behind."""
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def capture_rng(device: torch.device) -> dict:
    """The state of every random-number generator. Under torchrun every process must call
    it: the processes' torch states are gathered (each draws its own augmentations)."""
    numpy_state = np.random.get_state()
    assert isinstance(numpy_state, tuple)  # legacy=True, the default: ("MT19937", keys, pos, ...)
    rng = {
        "torch": torch.get_rng_state(),
        "numpy": numpy_state[1].astype(np.int64).tolist(),
        "numpy_pos": int(numpy_state[2]),
        "python": repr(random.getstate()),
    }
    if distributed.world_size() > 1:
        rng["torch_per_rank"] = [t.cpu() for t in distributed.all_gather(torch.get_rng_state().to(device))]
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def restore_rng(rng: dict, device: torch.device) -> None:
    """Set the generators to ``rng`` (from :func:`capture_rng`); a run resumed on another
    number of processes takes rank 0's torch stream."""
    per_rank = rng.get("torch_per_rank")
    if per_rank is not None and len(per_rank) == distributed.world_size():  # the same number of processes
        torch.set_rng_state(per_rank[distributed.rank()].cpu())
    else:
        torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)
    np.random.set_state(("MT19937", np.array(rng["numpy"], dtype=np.uint32), rng["numpy_pos"], 0, 0.0))
    random.setstate(ast.literal_eval(rng["python"]))


def read_checkpoint(path: str | os.PathLike, device: torch.device, required: tuple[str, ...]) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``: only tensors, numbers,
    strings and containers of them are read, so a checkpoint cannot run code.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated or corrupt, holds other pickled objects
            (refused), or lacks one of the ``required`` entries.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive, its index at the end
        raise CheckpointError(
            f"cannot read the checkpoint {path}: it is not a torch.save archive (truncated or corrupt)"
        )
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = re.search(r"WeightsUnpickler error: *([^.\n]+)", str(err))  # "Unsupported global: ..."
        raise CheckpointError(
            f"refused to load {path}: it holds pickled objects that loading would have to import or "
            "call, and weights_only loading allows only tensors, numbers, strings and containers of "
            "them (a checkpoint written by maxl holds nothing else); "
            f"{reason.group(1).strip() if reason else str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read the checkpoint {path}: the file is truncated or corrupt ({err})") from err
    missing = [k for k in required if k not in state] if isinstance(state, dict) else list(required)
    if missing:
        raise CheckpointError(f"{path} is not a maxl checkpoint of this method: it lacks {', '.join(missing)}")
    return state


def config_differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """``"name: checkpoint X, now Y"`` for each setting present in both that differs, except
    the :data:`~maxl.train.config.RESUMABLE_CHANGES` (dotted paths from the top)."""
    out = []
    for key in sorted(set(saved) & set(now)):
        if f"{prefix}{key}" in RESUMABLE_CHANGES:
            continue
        a, b = saved[key], now[key]
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return out
