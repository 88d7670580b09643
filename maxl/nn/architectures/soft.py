"""Soft parameter sharing: one backbone per task, a penalty tying corresponding layers.

Every task t has its own backbone with weights W_t^l; the multi-task loss gains

* ``"l2"``: λ Σ_l Σ_{t<s} ‖W_t^l − W_s^l‖²  (squared L2 distance; Duong et al. 2015, Sec. 3,
  for two tasks), or
* ``"trace"``: λ Σ_l Σ_i ‖(𝒲^l)_(i)‖_*  with 𝒲^l = stack_t W_t^l of shape ``[d_1, …, d_n, T]``
  and ``(·)_(i)`` its mode-i unfolding ``[d_i, ∏_{j≠i} d_j]``: the Tucker form of the tensor
  trace norm (Yang & Hospedales 2017, Sec. 2.2, the sum of the nuclear norms of all modes'
  unfoldings, equal weights).

l runs over the weight tensors with two or more dimensions (the convolutions' kernels), as in
both papers; biases and BatchNorm parameters stay untied. The penalty is part of the
multi-task loss, so MAXL's look-ahead θ1⁺ = θ1 − α ∇θ1 (L_pri + L_aux + penalty) includes it.

With MAXL, one look-ahead step cannot carry the auxiliary loss into the primary task here: the
auxiliary loss moves only the auxiliary backbone and head, and the penalty's gradient does not
depend on θ2, so ∂θ1⁺_primary/∂θ2 = 0 and the generator learns from its entropy term alone. A
look-ahead of two or more steps (``inner_steps``) couples them through the tie.

References:
    Duong, Cohn, Bird, Cook. "Low Resource Dependency Parsing: Cross-lingual Parameter Sharing
    in a Neural Network Parser". ACL 2015.
    Yang, Hospedales. "Trace Norm Regularised Deep Multi-Task Learning". ICLR 2017 workshop,
    arXiv:1606.04038.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from maxl.nn.architectures.base import BackboneFactory, TaskTrunk, branched_network

if TYPE_CHECKING:  # for the annotations only
    from maxl.nn.networks import MultiTaskNetwork

__all__ = ["SoftSharing", "soft_sharing", "PENALTIES", "l2_tie", "tensor_trace_norm"]

PENALTIES = ("l2", "trace")


def l2_tie(weights: list[Tensor]) -> Tensor:
    """Σ_{t<s} ‖W_t − W_s‖² of T tensors of one shape (a scalar)."""
    total = weights[0].new_zeros(())
    for t in range(len(weights)):
        for s in range(t + 1, len(weights)):
            total = total + (weights[t] - weights[s]).pow(2).sum()
    return total


def tensor_trace_norm(weights: list[Tensor]) -> Tensor:
    """Σ_i ‖W_(i)‖_* of W = stack(weights, dim=-1), ``[d_1, …, d_n, T]``, over its n + 1 modes
    (a scalar; the nuclear norm is the sum of the singular values)."""
    stacked = torch.stack(weights, dim=-1)
    total = stacked.new_zeros(())
    for mode in range(stacked.ndim):
        unfolded = stacked.movedim(mode, 0).reshape(stacked.shape[mode], -1)  # [d_i, ∏_{j≠i} d_j]
        total = total + torch.linalg.svdvals(unfolded).sum()
    return total


class SoftSharing(TaskTrunk):
    """T backbones, task t's features from backbone t, and the tying penalty.

    Args:
        make_backbone: returns a fresh backbone ``[B, C, H, W]`` → ``[B, F]`` per call.
        num_tasks: T.
        penalty: ``"l2"`` or ``"trace"`` (module docstring).
        weight: λ ≥ 0.

    Parameters: T × the backbone's.

    Raises:
        ValueError: unknown penalty, λ < 0, a backbone without ``out_features``.
    """

    def __init__(self, make_backbone: BackboneFactory, num_tasks: int, penalty: str = "l2", weight: float = 0.01):
        backbones = [make_backbone() for _ in range(num_tasks)]
        dim = getattr(backbones[0], "out_features", None) if backbones else None
        if dim is None:
            raise ValueError("soft sharing needs backbones with an `out_features` attribute")
        super().__init__(num_tasks, dim)
        if penalty not in PENALTIES:
            raise ValueError(f"unknown soft-sharing penalty {penalty!r}; expected one of {PENALTIES}")
        if weight < 0:
            raise ValueError(f"soft-sharing penalty weight must be >= 0, got {weight}")
        self.backbones = nn.ModuleList(backbones)
        self.penalty_kind, self.weight = penalty, float(weight)
        self.tied = [n for n, p in backbones[0].named_parameters() if p.ndim >= 2]  # the kernels

    def task_features(self, x: Tensor) -> list[Tensor]:
        return [b(x) for b in self.backbones]  # T × [B, F]

    @property
    def has_penalty(self) -> bool:
        return self.num_tasks > 1

    def penalty_from(self, params: Mapping[str, Tensor]) -> Tensor | None:
        if self.num_tasks < 2:
            return None
        tie = l2_tie if self.penalty_kind == "l2" else tensor_trace_norm
        total = sum(tie([params[f"backbones.{t}.{name}"] for t in range(self.num_tasks)]) for name in self.tied)
        return self.weight * cast(Tensor, total)  # cast: a backbone has kernels, so the sum is a Tensor

    def extra_repr(self) -> str:
        return f"penalty={self.penalty_kind!r}, weight={self.weight}"


def soft_sharing(
    make_backbone: BackboneFactory,
    num_primary: int,
    num_aux: int = 0,
    hidden: int = 512,
    penalty: str = "l2",
    weight: float = 0.01,
) -> MultiTaskNetwork:
    """The multi-task network with soft sharing (:class:`SoftSharing` and two heads)."""
    trunk = SoftSharing(make_backbone, 2 if num_aux > 0 else 1, penalty, weight)
    return branched_network(trunk, num_primary, num_aux, hidden)
