"""Batch-level augmentation: MAXL's random crop, horizontal flip and normalisation for a whole
batch of uint8 images in a few tensor operations, on whatever device the images are.

The per-image path (:func:`maxl.data.datasets.make_transform`, torchvision ``v2`` transforms in
the ``DataLoader``) runs Python once per image and draws its crop and flip from torch's global
generator. Here the images of a batch are gathered as uint8 ``[B, C, H, W]``, moved to the
training device, and transformed together:

1. pad each image by ``padding`` pixels (zeros or reflection), and keep beside it its mirror
   image (a flipped crop of the padded image is the crop of the flipped padded image at the
   mirrored offset ``2·padding − left``);
2. view the padded pair as every window of size ``H × W`` (``Tensor.as_strided``) and take each
   image's window with one ``index_select``: crop and flip in one gather;
3. scale to [0, 1] and normalise with torchvision's own operations in the same order
   (``x.float() · (1/255)``, ``− mean``, ``/ std``), so that the result equals
   ``v2.Compose([RandomCrop(padding), RandomHorizontalFlip(), ToDtype(scale=True), Normalize])``
   bit for bit for the same offsets and flips (``tests/unit/data/test_augment.py``).

The offsets and flips (:class:`Draws`) are drawn per *image index* and training pass from a
generator seeded by the run's seed and the pass (:func:`pass_draws`): they do not depend on the
batch order, on the number of processes an image's batch is split over, or on where a run was
stopped and resumed. The distribution is the per-image path's: top and left uniform on
``0 .. 2·padding``, a flip with probability 1/2, independent.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933 (the CIFAR augmentation of its reference code: random crop 32
    with padding 4, horizontal flip).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BatchAugment", "Draws", "pass_draws", "PADDING_MODES"]

#: How the crop pads: zeros (the reference) or a reflection of the image.
PADDING_MODES = ("constant", "reflect")

_AUGMENT_STREAM = 0x6175  # tags the augmentation's seed sequence apart from any other use of the run seed


class Draws(NamedTuple):
    """The random choices of a batch: one entry per image.

    Attributes:
        top: int64 [B], the crop's first row in the padded image, in ``0 .. 2·padding``.
        left: int64 [B], its first column, in ``0 .. 2·padding``.
        flip: bool [B], mirror the crop left to right.
    """

    top: Tensor
    left: Tensor
    flip: Tensor

    def take(self, index: Tensor, device: torch.device | str | None = None) -> Draws:
        """The draws of the images ``index`` (int64 [B]), moved to ``device`` if given."""
        return Draws(*(t[index].to(device) if device is not None else t[index] for t in self))


class BatchAugment:
    """Random crop with padding, horizontal flip and normalisation of a batch of uint8 images.

    Args:
        mean: per-channel means of the [0, 1]-scaled images (C values).
        std: per-channel standard deviations (C values, > 0).
        augment: crop and flip; False only scales and normalises (test images, grey images).
        padding: pixels of padding on each side of the crop (4, the reference's).
        padding_mode: ``"constant"`` (zeros) or ``"reflect"``.

    Raises:
        ValueError: ``mean`` and ``std`` of different lengths, a ``std`` <= 0, a negative
            ``padding`` or an unknown ``padding_mode``.

    References:
        Liu, Davison, Johns, NeurIPS 2019, arXiv:1901.08933 (its CIFAR augmentation).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = True,
        padding: int = 4,
        padding_mode: str = "constant",
    ):
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"mean and std need one value per channel, got {list(mean)} and {list(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be > 0 for every channel, got {list(std)}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0 pixels, got {padding}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.augment, self.padding, self.padding_mode = augment, padding, padding_mode
        self._buffer: tuple[tuple, Tensor] | None = None  # the zero-padded pair of _padded_pair
        self._stats: tuple[torch.device, Tensor, Tensor] | None = None  # mean, std [C, 1, 1] on a device

    def __repr__(self) -> str:
        return (
            f"BatchAugment(mean={self.mean}, std={self.std}, augment={self.augment}, padding={self.padding}, "
            f"padding_mode={self.padding_mode!r})"
        )

    def draw(self, n: int, generator: torch.Generator | None = None) -> Draws:
        """Offsets and flips of ``n`` images: top, left uniform on ``0 .. 2·padding``, flip with
        probability 1/2, independent (the distribution of ``v2.RandomCrop(padding=p)`` followed
        by ``v2.RandomHorizontalFlip()``), on the generator's device (CPU by default)."""
        span = 2 * self.padding + 1
        top = torch.randint(0, span, (n,), generator=generator)
        left = torch.randint(0, span, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        return Draws(top, left, flip)

    def __call__(self, images: Tensor, draws: Draws | None = None) -> Tensor:
        """Crop, flip and normalise a batch.

        Args:
            images: uint8 [B, C, H, W], on any device.
            draws: each image's offsets and flips (on the images' device); needed when
                ``augment``, ignored otherwise.

        Returns:
            float32 [B, C, H, W] on the images' device: for image b, the torchvision reference
            ``normalize(to_dtype(hflip?(crop(pad(x_b), top_b, left_b, H, W)), scale=True))``.

        Raises:
            ValueError: images that are not uint8 [B, C, H, W] with C channels, or missing draws.
        """
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != len(self.mean):
            raise ValueError(
                f"images must be uint8 [B, {len(self.mean)}, H, W], got {images.dtype} {list(images.shape)}"
            )
        if self.augment and self.padding:
            if draws is None:
                raise ValueError("an augmenting BatchAugment needs the draws of the batch (BatchAugment.draw)")
            images = self._crop_flip(images, draws)
        elif self.augment:  # no padding: the crop is the image; only the flips remain
            if draws is None:
                raise ValueError("an augmenting BatchAugment needs the draws of the batch (BatchAugment.draw)")
            images = torch.where(draws.flip.view(-1, 1, 1, 1), images.flip(-1), images)
        return self.normalise(images)

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 [B, C, H, W] -> float32 ``(x / 255 − mean) / std``, by torchvision's own
        operations in its order (``ToDtype(scale=True)`` then ``Normalize``), so bit-equal to it."""
        if self._stats is None or self._stats[0] != images.device:
            mean = torch.as_tensor(self.mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
            std = torch.as_tensor(self.std, dtype=torch.float32, device=images.device).view(-1, 1, 1)
            self._stats = (images.device, mean, std)
        _, mean, std = self._stats
        return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)

    def _crop_flip(self, images: Tensor, draws: Draws) -> Tensor:
        """The crops of uint8 [B, C, H, W] at (top, left) in the padded images, mirrored where flip."""
        b, c, h, w = images.shape
        p = self.padding
        hp, wp = h + 2 * p, w + 2 * p
        both = self._padded_pair(images)  # [2B, C, Hp, Wp]: image b padded, then its mirror at B + b
        # every H x W window of the flat storage as a row: window s starts at element s
        # (rows Wp apart, channels Hp·Wp apart); image b's crop is the window at
        # b·C·Hp·Wp + top·Wp + left, its mirrored crop that of image B + b at column 2p − left
        extent = (c - 1) * hp * wp + (h - 1) * wp + w
        windows = both.view(-1).as_strided((both.numel() - extent + 1, c, h, w), (1, hp * wp, wp, 1))
        flip = draws.flip.to(torch.int64)
        left = draws.left + flip * (2 * p - 2 * draws.left)  # mirrored: 2p − left
        starts = torch.arange(0, b * c * hp * wp, c * hp * wp, device=images.device)
        starts += flip * (b * c * hp * wp) + draws.top * wp + left
        return windows.index_select(0, starts)  # [B, C, H, W], contiguous

    def _padded_pair(self, images: Tensor) -> Tensor:
        """uint8 [2B, C, Hp, Wp]: the padded images, then the padded mirror images. With zero
        padding, a buffer kept between calls of one shape and device: its border stays zero,
        and only the images are written (no allocation, no page faults per batch)."""
        b, c, h, w = images.shape
        p = self.padding
        if self.padding_mode == "reflect":
            padded = F.pad(images, (p, p, p, p), mode="reflect")
            return torch.cat([padded, padded.flip(-1)])
        key = (b, c, h, w, images.device)
        if self._buffer is None or self._buffer[0] != key:
            self._buffer = (key, images.new_zeros(2 * b, c, h + 2 * p, w + 2 * p))
        both = self._buffer[1]
        both[:b, :, p : p + h, p : p + w] = images
        both[b:, :, p : p + h, p : p + w] = images.flip(-1)
        return both


def pass_draws(augment: BatchAugment, num_images: int, seed: int, pass_index: int) -> Draws:
    """The offsets and flips of every image of one training pass, indexed by the image's index.

    They come from a generator seeded by ``(seed, pass_index)`` alone (numpy's ``SeedSequence``
    of the two and a tag of this stream), so that they are the same for any batch order, any
    number of processes and after a resume, and new for every pass.

    Args:
        augment: the batch transform whose :meth:`BatchAugment.draw` is used.
        num_images: N, the training set's size.
        seed: the run's seed.
        pass_index: the pass (the sampler's epoch, as in the trainer's data order).

    Returns:
        :class:`Draws` of N images, on the CPU.
    """
    state = np.random.SeedSequence([_AUGMENT_STREAM, seed, pass_index]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return augment.draw(num_images, generator)
