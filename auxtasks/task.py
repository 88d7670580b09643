"""The interface of an auxiliary task.

An auxiliary task is learnt next to a primary task on the same shared features, only so that
those features get better for the primary task. A task does three things:

1. :meth:`AuxiliaryTask.make_inputs_and_targets` turns a batch ``(images, primary labels)``
   into the task's own inputs and targets (rotated copies and their angle; the lightness
   channel and the colour; the batch itself and per-sample labels);
2. it owns its head on top of the shared features (:meth:`AuxiliaryTask.build_head`,
   attached by :class:`auxtasks.AuxiliaryLearner` once the feature size is known);
3. :meth:`AuxiliaryTask.loss` scores the head's predictions against the targets.

The shared backbone sits outside the task: the learner runs it on the task's inputs, so one
task object works with any backbone that maps images ``[B, C, H, W]`` to features ``[B, F]``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["AuxiliaryTask", "LIKELIHOODS"]

#: What a task's loss is the negative log-likelihood of: ``"softmax"`` for a classification,
#: ``"gaussian"`` for a regression; uncertainty weighting (Kendall et al., CVPR 2018) treats
#: them differently (its Eq. 10 and Eq. 7).
LIKELIHOODS = ("softmax", "gaussian")


class AuxiliaryTask(nn.Module):
    """Base class of the auxiliary tasks.

    Subclasses set :attr:`name` (the key of the task's loss in the logs) and implement
    :meth:`make_inputs_and_targets`, :meth:`build_head` and :meth:`loss`.

    Args:
        name: overrides the class's default name (two tasks of one learner need two names).
        head: a ready head ``features [B, F] -> predictions``; None builds one with
            :meth:`build_head` when the task is attached to a learner.

    Attributes:
        name: key of this task's loss, e.g. ``"rotation"``.
        likelihood: one of :data:`LIKELIHOODS`.
        head: the task's head, None until attached.
    """

    name: str = "auxiliary"
    likelihood: str = "softmax"

    def __init__(self, name: str | None = None, head: nn.Module | None = None):
        super().__init__()
        if name is not None:
            if not isinstance(name, str) or not name or name == "primary":
                raise ValueError(f"task name must be a non-empty string other than 'primary', got {name!r}")
            self.name = name
        self.head = head

    def attach(self, feature_dim: int) -> None:
        """Build the head for features of size ``feature_dim`` unless the task has one."""
        if self.head is None:
            self.head = self.build_head(int(feature_dim))

    def forward(self, features: Tensor) -> Tensor:
        """The head's predictions for shared features ``[B', F]`` of the task's inputs."""
        if self.head is None:
            raise RuntimeError(f"task {self.name!r} has no head yet: attach it to a learner (or call attach(F))")
        return self.head(features)

    def make_inputs_and_targets(
        self, images: Tensor, primary_labels: Tensor, *, index: Tensor | None = None, target: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Turn a batch into the task's inputs for the shared backbone and its targets.

        Returning ``images`` itself (the same object) as the inputs tells the learner to
        reuse the primary task's features instead of running the backbone again.

        Args:
            images: float ``[B, C, H, W]``, the primary task's (normalised) images.
            primary_labels: int64 ``[B]``.
            index: int64 ``[B]``, the samples' positions in the training set, for tasks
                that keep a per-sample table (may be None).
            target: this task's targets for the batch if the caller supplies them.

        Returns:
            ``(inputs [B', C', H', W'], targets)``.
        """
        raise NotImplementedError

    def build_head(self, feature_dim: int) -> nn.Module:
        """A new head mapping features ``[B', feature_dim]`` to this task's predictions."""
        raise NotImplementedError

    def loss(self, predictions: Tensor, targets: Tensor) -> Tensor:
        """Scalar loss (a mean over the task's samples) of the head's predictions."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}"
