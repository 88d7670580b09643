"""Rotation prediction: which of 0°, 90°, 180°, 270° was an image turned by?

References:
    Gidaris, Singh, Komodakis. "Unsupervised Representation Learning by Predicting Image
    Rotations". ICLR 2018, Sec. 2 (the four rotations, Eq. 1–2; training on all four copies
    of every image in the same batch, Sec. 2.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maxl.core.heads import mlp_head

from .task import AuxiliaryTask

__all__ = ["Rotation", "rotate_batch", "ROTATION_MODES"]

#: ``"all"``: every image in its four rotations (Gidaris et al.'s choice, 4× the batch);
#: ``"random"``: one random rotation per image (the batch size stays B).
ROTATION_MODES = ("all", "random")


def rotate_batch(images: Tensor, mode: str = "all", generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Rotated copies of a batch and their rotation labels.

    Label ``k`` means a rotation by ``k·90°`` counter-clockwise (``torch.rot90`` with ``k``
    over the height and width axes).

    Args:
        images: float ``[B, C, H, W]`` with ``H == W``.
        mode: one of :data:`ROTATION_MODES`.
        generator: random generator of the ``"random"`` mode (default: torch's global one).

    Returns:
        ``(rotated, labels)``: ``"all"``: float ``[4B, C, H, W]`` (all images by 0°, then all
        by 90°, ...) and int64 ``[4B]``; ``"random"``: ``[B, C, H, W]`` and ``[B]``.

    Raises:
        ValueError: unknown ``mode``, or images that are not ``[B, C, H, W]`` squares.
    """
    if mode not in ROTATION_MODES:
        raise ValueError(f"unknown rotation mode {mode!r}; expected one of {ROTATION_MODES}")
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images [B, C, H, H], got shape {tuple(images.shape)}")
    if mode == "all":
        rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])  # [4B, C, H, W]
        labels = torch.arange(4, device=images.device).repeat_interleave(len(images))  # [4B]
        return rotated, labels
    labels = torch.randint(0, 4, (len(images),), generator=generator).to(images.device)  # [B]
    rotated = images.clone()
    for k in range(1, 4):
        chosen = labels == k
        rotated[chosen] = torch.rot90(images[chosen], k, dims=(2, 3))
    return rotated, labels


class Rotation(AuxiliaryTask):
    """Predict the rotation (0°, 90°, 180°, 270°) of an image (Gidaris et al., ICLR 2018).

    Self-supervised: needs no labels. The rotated copies are built on the fly from each
    batch; the head is ``Linear(F, hidden) → ReLU → Linear(hidden, 4)`` and the loss the
    cross-entropy over the four classes.

    Args:
        mode: ``"all"`` (default: every image in all four rotations, as in the paper; costs a
            backbone pass over 4B images) or ``"random"`` (one random rotation per image).
        hidden: width of the head's hidden layer.
        name: key of the loss (default ``"rotation"``).
        head: a ready head producing 4 logits, instead of building one.

    Raises:
        ValueError: unknown ``mode``.

    References:
        Gidaris, Singh, Komodakis. ICLR 2018, Sec. 2.
    """

    name = "rotation"

    def __init__(self, mode: str = "all", hidden: int = 512, name: str | None = None, head: nn.Module | None = None):
        super().__init__(name, head)
        if mode not in ROTATION_MODES:
            raise ValueError(f"unknown rotation mode {mode!r}; expected one of {ROTATION_MODES}")
        self.mode, self.hidden = mode, hidden

    def make_inputs_and_targets(self, images, primary_labels, *, index=None, target=None):
        """``(rotated images [4B or B, C, H, W], rotation labels int64 in 0..3)``; see :func:`rotate_batch`."""
        return rotate_batch(images, self.mode)

    def build_head(self, feature_dim: int) -> nn.Module:
        return mlp_head(feature_dim, 4, self.hidden)

    def loss(self, predictions: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy of logits ``[B', 4]`` against rotation labels ``[B']``."""
        return F.cross_entropy(predictions, targets)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, mode={self.mode!r}"
