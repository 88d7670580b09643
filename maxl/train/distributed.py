"""Multi-process data-parallel training with ``torch.distributed``, as started by ``torchrun``.

``torchrun --nproc_per_node N -m maxl train ...`` starts N copies of the command line with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment; :func:`process_group`
turns them into a process group (NCCL between GPUs, gloo on CPUs) and the
:class:`~maxl.train.trainer.Trainer` does the rest: a ``DistributedSampler`` gives each process
its share of every global batch, ``DistributedDataParallel`` all-reduces the multi-task
gradients, :func:`all_reduce_mean_` the generator's meta-gradients, and only rank 0 writes
files and prints. Nothing here launches processes or sends data by itself.

How the meta step is distributed: each process computes the look-ahead
θ1⁺ = θ1 − α ∇θ1 (L_pri + L_aux) and the meta-gradient on its own share of the batch
(*replica-local* look-ahead, no communication inside the double backward), and the
processes average the resulting generator gradients. With N processes and a global batch
B, the generator's step is therefore the mean of the exact meta-gradients of the N
sub-batches of B/N images, not the meta-gradient of the whole batch (the look-ahead is a
non-linear function of the batch). The multi-task step is the same as one process with the
global batch up to float rounding when the backbone has no BatchNorm.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "process_group",
    "is_distributed",
    "rank",
    "world_size",
    "local_rank",
    "all_reduce_mean_",
    "all_reduce_values",
    "broadcast_",
    "all_gather",
    "all_gather_object",
]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its machine, from torchrun's ``LOCAL_RANK`` (0 if unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[None]:
    """Join the process group torchrun describes in the environment, for the ``with`` block.

    Does nothing for a single process (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``). The backend
    is NCCL when ``device`` names CUDA (or is ``"auto"`` with a GPU present), each process
    taking the GPU ``LOCAL_RANK``; gloo otherwise.

    Args:
        device: the ``--device`` setting: ``"auto"``, ``"cpu"``, ``"cuda"``, ...

    Raises:
        ValueError: ``WORLD_SIZE`` is set but ``RANK`` or ``MASTER_ADDR`` is not (start the
            processes with torchrun), or there are fewer GPUs than local processes.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or is_distributed():
        yield
        return
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={size} but {', '.join(missing)} unset: start the processes with torchrun")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if local_rank() >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank()} but only {torch.cuda.device_count()} GPU(s) on this machine")
        torch.cuda.set_device(local_rank())
    # the store of torchrun's agent outlives a restart of the group: keys of each attempt of their own, so
    # that a restarted group does not read the addresses of the processes it replaced
    store, rank_, size_ = next(dist.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(
        backend="nccl" if cuda else "gloo",
        store=dist.PrefixStore(f"maxl/attempt{attempt}", store),
        rank=rank_,
        world_size=size_,
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_reduce_mean_(tensors: Sequence[Tensor]) -> None:
    """Replace each tensor by its mean over the processes (in place; one all-reduce)."""
    if not is_distributed() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def all_reduce_values(values: dict[str, float], device: torch.device, mean: bool = True) -> dict[str, float]:
    """The mean (or sum) over the processes of each value, in float64; every process must pass
    the same keys. ``device``: where the collective runs (a CUDA device for NCCL)."""
    if not is_distributed():
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    if mean:
        t /= world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_(tensors: Sequence[Tensor], src: int = 0) -> None:
    """Overwrite each tensor with rank ``src``'s values (in place)."""
    if is_distributed():
        for t in tensors:
            dist.broadcast(t, src)


def all_gather(tensor: Tensor) -> list[Tensor]:
    """Every process's ``tensor`` (same shape on all), in rank order; ``[tensor]`` alone."""
    if not is_distributed():
        return [tensor]
    out = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(out, tensor)
    return out


def all_gather_object(obj) -> list:
    """Every process's picklable ``obj`` (any structure), in rank order; ``[obj]`` alone."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
