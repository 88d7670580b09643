"""The base of the multi-task architectures with task-specific features.

Hard parameter sharing (:mod:`maxl.nn.architectures.hard`) maps images to one feature vector
that every head reads. The other architectures keep a feature vector per task: a
:class:`TaskTrunk` maps images ``[B, C, H, W]`` to task features ``[B, T, F]`` (task 0: the
primary task, task 1: the auxiliary task), and each head reads its own row through a
:class:`TaskSlice`. The trunk takes the place of the backbone in
:class:`maxl.nn.MultiTaskNetwork` (:func:`branched_network`), so that the meta-gradient
engines, which call the network by ``torch.func.functional_call`` over its named parameters
and buffers, and a user's own loop see the same interface as with hard sharing.

A trunk may add a penalty to the multi-task loss (soft sharing): :meth:`TaskTrunk.penalty_from`
is a function of the trunk's parameters by name, so that the look-ahead can evaluate it at
θ1⁺ as well as the real step at θ1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from maxl.core.heads import mlp_head

if TYPE_CHECKING:  # for the annotations only, as branched_network imports it when called
    from maxl.nn.networks import MultiTaskNetwork

__all__ = ["TaskTrunk", "TaskSlice", "TaskView", "BackboneFactory", "branched_network"]

BackboneFactory = Callable[[], nn.Module]
"""``make() -> ConvNet``: a fresh backbone (new parameters) at every call."""


class TaskTrunk(nn.Module):
    """Images ``[B, C, H, W]`` → task features ``[B, T, F]``, one row per task.

    Subclasses implement :meth:`task_features`; those with a penalty override
    :meth:`penalty_from`.

    Args:
        num_tasks: T (1: the single-task network, 2: primary and auxiliary task).
        out_features: F, the size of each task's features.

    Raises:
        ValueError: T < 1.
    """

    def __init__(self, num_tasks: int, out_features: int):
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"a multi-task trunk needs at least one task, got {num_tasks}")
        self.num_tasks, self.out_features = int(num_tasks), int(out_features)

    def task_features(self, x: Tensor) -> list[Tensor]:
        """T tensors ``[B, F]``, task 0 first."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack(self.task_features(x), dim=1)  # T × [B, F] -> [B, T, F]

    @property
    def has_penalty(self) -> bool:
        """Whether :meth:`penalty_from` returns a tensor (a term of the multi-task loss)."""
        return False

    def penalty_from(self, params: Mapping[str, Tensor]) -> Tensor | None:
        """The architecture's term of the multi-task loss as a function of the trunk's
        parameters by name (``named_parameters`` of the trunk, without prefix); None if the
        architecture has none."""
        return None

    def penalty(self) -> Tensor | None:
        """:meth:`penalty_from` at the trunk's own parameters."""
        return self.penalty_from(dict(self.named_parameters()))

    def task_view(self, task: int) -> TaskView:
        """A module ``images → [B, F]`` of one task's features (not registered here)."""
        return TaskView(self, task)


class TaskSlice(nn.Module):
    """``[B, T, F]`` → ``[B, F]``: task ``index``'s row, in front of that task's head."""

    def __init__(self, index: int):
        super().__init__()
        self.index = int(index)

    def forward(self, features: Tensor) -> Tensor:
        return features[:, self.index]

    def extra_repr(self) -> str:
        return f"index={self.index}"


class TaskView(nn.Module):
    """A trunk seen as a backbone of one task: images ``[B, C, H, W]`` → ``[B, F]``
    (e.g. the features that :class:`maxl.nn.FeatureLabelGenerator` reads)."""

    def __init__(self, trunk: TaskTrunk, task: int):
        super().__init__()
        if not 0 <= task < trunk.num_tasks:
            raise ValueError(f"task {task} of a trunk with {trunk.num_tasks} tasks")
        self.trunk, self.task, self.out_features = trunk, task, trunk.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.trunk(x)[:, self.task]


def branched_network(trunk: TaskTrunk, num_primary: int, num_aux: int = 0, hidden: int = 512) -> MultiTaskNetwork:
    """A :class:`maxl.nn.MultiTaskNetwork` on a trunk: the primary head reads task 0's
    features, the auxiliary head (``num_aux > 0``) task 1's.

    Shapes:
        ``forward``: images ``[B, C, H, W]`` → ``(primary [B, P], aux [B, K] or None)``.

    Raises:
        ValueError: the trunk's T does not match the heads (2 with an auxiliary head, else 1).
    """
    from maxl.nn.networks import MultiTaskNetwork

    tasks = 2 if num_aux > 0 else 1
    if trunk.num_tasks != tasks:
        raise ValueError(f"a trunk with {trunk.num_tasks} tasks for {tasks} head(s)")
    f = trunk.out_features
    primary = nn.Sequential(TaskSlice(0), *mlp_head(f, num_primary, hidden))
    aux = nn.Sequential(TaskSlice(1), *mlp_head(f, num_aux, hidden)) if num_aux > 0 else None
    return MultiTaskNetwork.from_modules(trunk, primary, aux)
