"""Deterministic algorithms for bit-identical reruns (``--deterministic``).

With the same seed, two CPU runs on the same machine, torch version and number of threads
are bit-identical; :func:`enable_determinism` adds what a GPU needs: deterministic cuDNN
convolutions and cuBLAS reductions, and an error (not a silent difference) for any op that
only has a non-deterministic CUDA kernel. The built-in backbones and losses use none of those
ops (the global pool is a ``mean``, the cross-entropy a ``gather``).

What stays non-deterministic: results differ across GPU models, driver/CUDA/cuDNN/torch
versions and thread counts; a run over N processes differs in the last bits from one over
M ≠ N (gradients are summed in another order); NCCL all-reduces are repeatable for the same
world size and hardware in practice but NCCL does not promise it.
"""

from __future__ import annotations

import os

import torch

__all__ = ["enable_determinism"]


def enable_determinism() -> None:
    """Make torch choose deterministic kernels, and raise on ops that have none.

    Sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless already set (needed by cuBLAS from CUDA
    10.2 on; it must be set before the first cuBLAS call), ``torch.use_deterministic_algorithms
    (True)``, ``cudnn.deterministic = True`` and ``cudnn.benchmark = False``. Process-wide.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False  # benchmark mode picks kernels by timing: run-dependent
