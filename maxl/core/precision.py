"""Mixed precision: which float type a run computes in, and the parts kept in float32.

``precision="bf16"`` runs the multi-task step, the look-ahead and the meta-gradient under
``torch.autocast`` with bfloat16: convolutions and matrix products take bfloat16 copies of their
inputs and weights, while the parameters, their gradients and the optimisers stay float32
(Micikevicius et al., "Mixed Precision Training", ICLR 2018). The parts where bfloat16's 8-bit
mantissa would cost accuracy (the masked softmax of the generated labels, the losses and the
entropy terms of J) are wrapped in :func:`float32_ops`: their inputs are cast to float32 and
autocast is off inside them. float16 is refused: it needs loss scaling, and MAXL's meta-gradient
differentiates through the look-ahead's own backward pass (a double backward, or a forward-mode
product), which no loss scaler of torch handles.

References:
    Kalamkar et al. "A Study of BFLOAT16 for Deep Learning Training". arXiv:1905.12322, 2019.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

__all__ = ["PRECISIONS", "check_precision", "autocast", "float32_ops"]

#: The values of ``TrainConfig.precision``.
PRECISIONS = ("fp32", "bf16")

_LOW = (torch.bfloat16, torch.float16)
F = TypeVar("F", bound=Callable)


def check_precision(precision: str) -> None:
    """Raises: ValueError for anything but :data:`PRECISIONS`, with the reason for fp16."""
    if precision in ("fp16", "float16", "half"):
        raise ValueError(
            f"precision {precision!r} is not supported: float16 needs loss scaling, and MAXL's meta-gradient "
            "differentiates through the look-ahead's backward pass (a double backward), which torch's loss "
            "scaler does not cover; use precision 'bf16' (bfloat16 has float32's range and needs no scaling)"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context of a training step: ``torch.autocast`` with bfloat16 for ``"bf16"``, nothing
    for ``"fp32"``.

    Raises:
        ValueError: an unknown or refused ``precision`` (:func:`check_precision`).
    """
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def float32_ops(fn: F) -> F:
    """Run ``fn`` in float32 under autocast: its bfloat16 / float16 tensor arguments are cast
    to float32 and autocast is off inside it. Outside autocast, and for float32 / float64
    inputs, ``fn`` runs unchanged."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        low = any(isinstance(a, Tensor) and a.dtype in _LOW for a in (*args, *kwargs.values()))
        device = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), "cpu")
        if not low and not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        args = tuple(_float32(a) for a in args)
        kwargs = {k: _float32(v) for k, v in kwargs.items()}
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _float32(value):
    return value.float() if isinstance(value, Tensor) and value.dtype in _LOW else value
