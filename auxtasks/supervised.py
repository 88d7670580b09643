"""Supervised auxiliary labels: any per-sample labels the user has (e.g. CIFAR-100's fine
classes as an auxiliary task of its 20 superclasses, Liu et al.'s "human" baseline)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maxl.core.heads import mlp_head

from .task import AuxiliaryTask

__all__ = ["SupervisedLabels"]


class SupervisedLabels(AuxiliaryTask):
    """Classify the images into auxiliary classes given by the user.

    The labels of a batch come either from a table indexed by the samples' positions in the
    training set (``labels[index]``, for loaders that yield the index, like maxl's data
    sets), or with each batch (``learner(x, y, aux_targets={name: labels})``).

    Args:
        num_classes: K, the number of auxiliary classes.
        labels: optional table, int64 ``[N]`` with values in ``[0, K)`` or float ``[N, K]``
            probability rows, indexed by the training sample's position.
        loss_fn: ``loss(logits [B, K], target) -> scalar``; default cross-entropy (hard or
            soft targets).
        hidden: width of the head's hidden layer.
        name: key of the loss (default ``"supervised"``).
        head: a ready head producing K logits.

    Raises:
        ValueError: a label table of the wrong shape, dtype or range.
    """

    name = "supervised"
    labels: Tensor | None  # a buffer, made in __init__

    def __init__(
        self,
        num_classes: int,
        labels: Tensor | None = None,
        *,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        hidden: int = 512,
        name: str | None = None,
        head: nn.Module | None = None,
    ):
        super().__init__(name, head)
        if num_classes < 2:
            raise ValueError(f"an auxiliary classification needs num_classes >= 2, got {num_classes}")
        self.num_classes, self.hidden = int(num_classes), hidden
        self.loss_fn = loss_fn if loss_fn is not None else F.cross_entropy
        if labels is not None:
            labels = self._check(torch.as_tensor(labels), "labels")
        self.register_buffer("labels", labels, persistent=False)  # data, not state: not checkpointed

    def _check(self, target: Tensor, what: str) -> Tensor:
        if target.dtype.is_floating_point:
            if target.ndim != 2 or target.shape[1] != self.num_classes:
                raise ValueError(f"soft {what} must be float [N, {self.num_classes}], got {tuple(target.shape)}")
            return target
        if target.dtype == torch.bool or target.ndim != 1:
            raise ValueError(
                f"{what} must be int64 [N] class indices or float [N, K] rows, got {target.dtype} {tuple(target.shape)}"
            )
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            bad = target[(target < 0) | (target >= self.num_classes)][0].item()
            raise ValueError(f"{what} holds class {bad}, outside [0, {self.num_classes - 1}]")
        return target.long()

    def make_inputs_and_targets(self, images, primary_labels, *, index=None, target=None):
        """``(images, labels of the batch)``: ``target`` if given, else ``labels[index]``.

        Raises:
            ValueError: neither ``target`` nor a table with ``index`` is available.
        """
        if target is not None:
            return images, self._check(target, f"{self.name} targets")
        if self.labels is None:
            raise ValueError(
                f"task {self.name!r} has no label table: pass its labels with each batch "
                f"(aux_targets={{{self.name!r}: labels}})"
            )
        if index is None:
            raise ValueError(f"task {self.name!r} looks its labels up by sample index: pass index= with the batch")
        return images, self.labels[index.to(self.labels.device)]

    def build_head(self, feature_dim: int) -> nn.Module:
        return mlp_head(feature_dim, self.num_classes, self.hidden)

    def loss(self, predictions: Tensor, targets: Tensor) -> Tensor:
        return self.loss_fn(predictions, targets)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}"
