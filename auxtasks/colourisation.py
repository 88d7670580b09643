"""Colourisation: from the lightness L of an image, predict its colour ab in Lab space.

The input the shared backbone sees is the grey image made of L alone, so nothing of the
colour reaches it; the target is the image's ab channels at a reduced resolution (a quarter
of the image side by default, as in Zhang et al.'s network). RGB ↔ Lab (D65, 2° observer)
comes from kornia.

Two losses:

* ``"regression"`` (default): mean squared error on ab / 110, a head with 2 output channels.
* ``"classification"``: the paper's loss. ab space is cut into square bins of side 10; the
  Q bins that sRGB colours fall into are the classes. The target of a pixel is its *soft
  encoding* (its 5 nearest bin centres, Gaussian weights with σ = 5), the loss the
  cross-entropy weighted by the *class rebalancing* factor of the pixel's nearest bin,
  w ∝ ((1 − λ) p̃ + λ/Q)⁻¹ with E_p̃[w] = 1, p̃ the bin distribution of the training data
  smoothed by a Gaussian of σ = 5, λ = ½ (Zhang et al., Eq. 2–4).

Why regression is the default here: the classification loss exists to make colourised
*pictures* vivid (a regression to the mean of several plausible colours is greyish, Zhang et
al. Sec. 2.1). An auxiliary task is only there to shape the shared features, and for that the
regression target carries the same information; it needs no prior estimated from the data
before training (the rebalancing weights do), and its head predicts 2 channels per pixel
instead of Q. Use ``"classification"`` to follow the paper.

References:
    Zhang, Isola, Efros. "Colorful Image Colorization". ECCV 2016, Sec. 2.1 (Eq. 1 the
    Euclidean loss, Eq. 2 multinomial cross-entropy with soft encoding, Eq. 3–4 class
    rebalancing with λ = ½, σ = 5).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab
from torch import Tensor, nn

from .task import AuxiliaryTask

__all__ = ["Colourisation", "COLOURISATION_MODES", "AB_SCALE", "ab_bins"]

COLOURISATION_MODES = ("regression", "classification")
#: |a| and |b| of sRGB colours stay below 110 (kornia: a in [-86, 98], b in [-108, 95]):
#: the regression target is ab / AB_SCALE.
AB_SCALE = 110.0


@functools.lru_cache(maxsize=4)
def _gamut_bins(bin_size: float, steps: int) -> Tensor:
    grid = torch.linspace(0, 1, steps, dtype=torch.float64)
    rgb = torch.stack(torch.meshgrid(grid, grid, grid, indexing="ij")).reshape(3, -1, 1)  # a [3, S³, 1] "image"
    ab = rgb_to_lab(rgb)[1:].reshape(2, -1).T  # [S³, 2]
    return (torch.unique(torch.round(ab / bin_size), dim=0) * bin_size).float()  # [Q, 2]


def ab_bins(bin_size: float = 10.0, steps: int = 64) -> Tensor:
    """Centres of the ab bins that sRGB colours fall into: the classes of colourisation.

    ab space is cut into squares of side ``bin_size`` centred on multiples of it; a bin is
    kept if one of ``steps³`` colours sampled evenly from the sRGB cube falls into it.

    Args:
        bin_size: side of a bin in ab units (10 in Zhang et al.).
        steps: samples per RGB axis.

    Returns:
        float32 ``[Q, 2]`` bin centres (a, b); Q = 261 for the defaults.
    """
    return _gamut_bins(float(bin_size), int(steps)).clone()


class _ColourDecoder(nn.Module):
    """A light decoder: features ``[B, F]`` → ``[B, out, size, size]``.

    ``Linear`` to a ``width × 4 × 4`` map, then (2× nearest upsampling, 3×3 conv, ReLU) until
    the map is at least ``size`` wide, halving the channels each time, a 1×1 conv to
    ``out`` channels, and a bilinear resize if ``size`` is not 4·2^n.
    """

    def __init__(self, feature_dim: int, out_channels: int, size: int, width: int = 64):
        super().__init__()
        self.start = min(4, size)
        self.width, self.size = width, size
        self.fc = nn.Linear(feature_dim, width * self.start * self.start)
        layers: list[nn.Module] = []
        side, channels = self.start, width
        while side < size:
            out = max(channels // 2, 16)
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(channels, out, 3, padding=1),
                nn.ReLU(inplace=True),
            ]
            side, channels = side * 2, out
        layers.append(nn.Conv2d(channels, out_channels, 1))
        self.up = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        x = F.relu(self.fc(features)).view(-1, self.width, self.start, self.start)  # [B, width, 4, 4]
        x = self.up(x)  # [B, out, s, s], s >= size
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x


def _per_channel(value: float | Sequence[float], what: str) -> Tensor:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"colourisation {what} needs 1 or 3 values (R, G, B), got {value!r}")
    return torch.tensor(values).view(1, 3, 1, 1)


class Colourisation(AuxiliaryTask):
    """Predict the ab colour channels from the lightness L (Zhang et al., ECCV 2016).

    Self-supervised; needs RGB images. The task undoes the data set's normalisation
    (``mean``, ``std``) to recover RGB in [0, 1], converts it to Lab with kornia, feeds the
    backbone the grey image ``L/100`` in all three channels, normalised the same way as the
    colour images, and predicts ab at ``target_size × target_size`` (the block averages of
    the image's ab).

    Args:
        mode: ``"regression"`` (default, see the module docstring for why) or
            ``"classification"`` (the paper's soft-encoded, rebalanced cross-entropy).
        target_size: side of the predicted ab map in pixels (8: a quarter of a 32×32 image).
        mean, std: per-channel normalisation of the images the learner is given (one value
            or three); the images are ``(rgb − mean) / std``.
        width: channels of the decoder's first feature map.
        bin_size: side of the ab bins (classification).
        rebalance: λ of the class rebalancing (½ in the paper); None turns it off.
            Rebalancing needs :meth:`estimate_prior` to be called before training.
        sigma: σ of the soft encoding and of the prior's smoothing, in ab units (5).
        neighbours: bins of the soft encoding (5).
        name: key of the loss (default ``"colourisation"``).
        head: a ready decoder producing ``[B, 2 or Q, target_size, target_size]``.

    Raises:
        ValueError: unknown ``mode`` or bad sizes.

    References:
        Zhang, Isola, Efros. "Colorful Image Colorization". ECCV 2016, Sec. 2.1.
    """

    name = "colourisation"
    # buffers, made in __init__ (bins, bin_weights and prior_estimated in classification mode only)
    mean: Tensor
    std: Tensor
    bins: Tensor
    bin_weights: Tensor
    prior_estimated: Tensor

    def __init__(
        self,
        mode: str = "regression",
        target_size: int = 8,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        *,
        width: int = 64,
        bin_size: float = 10.0,
        rebalance: float | None = 0.5,
        sigma: float = 5.0,
        neighbours: int = 5,
        name: str | None = None,
        head: nn.Module | None = None,
    ):
        super().__init__(name, head)
        if mode not in COLOURISATION_MODES:
            raise ValueError(f"unknown colourisation mode {mode!r}; expected one of {COLOURISATION_MODES}")
        if target_size < 1:
            raise ValueError(f"target_size must be >= 1 pixel, got {target_size}")
        if rebalance is not None and not 0 <= rebalance <= 1:
            raise ValueError(f"rebalance (lambda) must lie in [0, 1] or be None, got {rebalance}")
        self.mode, self.target_size, self.width = mode, int(target_size), width
        self.likelihood = "gaussian" if mode == "regression" else "softmax"
        self.register_buffer("mean", _per_channel(mean, "mean"), persistent=False)
        self.register_buffer("std", _per_channel(std, "std"), persistent=False)
        if (self.std <= 0).any():
            raise ValueError(f"colourisation std must be > 0, got {std!r}")
        self.rebalance, self.sigma, self.neighbours = rebalance, float(sigma), int(neighbours)
        if mode == "classification":
            bins = ab_bins(bin_size)
            self.register_buffer("bins", bins)  # [Q, 2]
            self.register_buffer("bin_weights", torch.ones(len(bins)))  # rebalancing w, [Q]
            self.register_buffer("prior_estimated", torch.tensor(False))

    @property
    def num_bins(self) -> int:
        """Q, the number of colour classes (classification only)."""
        return len(self.bins)

    # ------------------------------------------------------------------ data
    def to_lab(self, images: Tensor) -> Tensor:
        """Lab of normalised RGB images: float ``[B, 3, H, W]`` → ``[B, 3, H, W]`` with L in
        [0, 100] and a, b roughly in [−110, 110].

        Raises:
            ValueError: the images do not have 3 channels.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            channels = images.shape[1] if images.ndim == 4 else "?"
            raise ValueError(
                f"colourisation needs RGB images [B, 3, H, W], got shape {tuple(images.shape)} "
                f"({channels} channel(s)); grey data sets such as MNIST have no colour to predict"
            )
        rgb = (images * self.std + self.mean).clamp(0, 1)  # undo the normalisation
        return rgb_to_lab(rgb)

    def make_inputs_and_targets(self, images, primary_labels, *, index=None, target=None):
        """``(grey inputs [B, 3, H, W] made of L alone, normalised like the images; ab targets
        float [B, 2, target_size, target_size] in Lab units)``.

        Raises:
            ValueError: 1-channel images, or images smaller than ``target_size``.
        """
        with torch.no_grad():
            lab = self.to_lab(images)
            if min(images.shape[-2:]) < self.target_size:
                raise ValueError(
                    f"images of {images.shape[-2]}x{images.shape[-1]} are smaller than the colourisation "
                    f"target_size {self.target_size}"
                )
            lightness = lab[:, :1] / 100  # [B, 1, H, W] in [0, 1]
            inputs = (lightness.expand(-1, 3, -1, -1) - self.mean) / self.std  # grey, normalised like the images
            ab = F.adaptive_avg_pool2d(lab[:, 1:], self.target_size)  # [B, 2, h, w], block averages
        return inputs, ab

    # ------------------------------------------------------------------ head and loss
    def build_head(self, feature_dim: int) -> nn.Module:
        out = 2 if self.mode == "regression" else self.num_bins
        return _ColourDecoder(feature_dim, out, self.target_size, self.width)

    def soft_encode(self, ab: Tensor) -> Tensor:
        """Soft encoding of ab maps over the colour bins (Zhang et al., Sec. 2.1).

        Each pixel gets its ``neighbours`` nearest bin centres, weighted by a Gaussian of
        its distance to them (σ = ``sigma``) and normalised to sum to 1.

        Args:
            ab: float ``[B, 2, h, w]`` in Lab units.

        Returns:
            float ``[B, Q, h, w]``, each pixel a distribution over the Q bins.
        """
        b, _, h, w = ab.shape
        points = ab.permute(0, 2, 3, 1).reshape(-1, 2)  # [N, 2]
        dist2 = torch.cdist(points, self.bins.to(points.dtype)).pow(2)  # [N, Q]
        near, idx = dist2.topk(self.neighbours, dim=1, largest=False)  # [N, k]
        weights = torch.softmax(-near / (2 * self.sigma**2), dim=1)  # Gaussian, normalised
        z = torch.zeros_like(dist2).scatter_(1, idx, weights)  # [N, Q]
        return z.view(b, h, w, -1).permute(0, 3, 1, 2)

    @torch.no_grad()
    def estimate_prior(self, images: Tensor, batch_size: int = 500) -> Tensor:
        """Estimate the bin distribution of the training data and set the rebalancing weights.

        p is the frequency of each bin as the nearest bin of a target pixel; p̃ its
        smoothing by a Gaussian of σ = ``sigma`` over the bin centres; the weights
        ``w ∝ ((1 − λ) p̃ + λ/Q)⁻¹`` are scaled so that ``Σ_q p̃_q w_q = 1`` (Zhang et al.,
        Eq. 3–4).

        Args:
            images: float ``[N, 3, H, W]`` training images, normalised as the learner sees them.
            batch_size: images converted at a time.

        Returns:
            float ``[Q]``, the rebalancing weights (also stored in ``bin_weights``).

        Raises:
            ValueError: the task is not in classification mode, or no images are given.
        """
        if self.mode != "classification":
            raise ValueError("estimate_prior is for mode='classification' (regression has no bins)")
        if len(images) == 0:
            raise ValueError("estimate_prior needs at least one image")
        counts = torch.zeros(self.num_bins, dtype=torch.float64, device=self.bins.device)
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].to(self.bins.device)
            _, ab = self.make_inputs_and_targets(chunk, None)
            points = ab.permute(0, 2, 3, 1).reshape(-1, 2)
            nearest = torch.cdist(points, self.bins).argmin(dim=1)
            counts += torch.bincount(nearest, minlength=self.num_bins).double()
        p = counts / counts.sum()
        kernel = torch.exp(-torch.cdist(self.bins.double(), self.bins.double()).pow(2) / (2 * self.sigma**2))
        smoothed = kernel / kernel.sum(dim=0, keepdim=True) @ p  # mass-preserving Gaussian smoothing
        lam = 0.0 if self.rebalance is None else self.rebalance
        w = 1.0 / ((1 - lam) * smoothed + lam / self.num_bins)
        w = w / (smoothed * w).sum()  # E_p̃[w] = 1
        self.bin_weights.copy_(w.float())
        self.prior_estimated.fill_(True)
        return self.bin_weights.clone()

    def loss(self, predictions: Tensor, targets: Tensor) -> Tensor:
        """Regression: MSE of ``predictions [B, 2, h, w]`` against ``targets / AB_SCALE``.
        Classification: soft-encoded cross-entropy of logits ``[B, Q, h, w]``, each pixel
        weighted by the rebalancing weight of its nearest bin; the mean over pixels.

        Raises:
            RuntimeError: rebalancing is on and :meth:`estimate_prior` was never called.
        """
        if self.mode == "regression":
            return F.mse_loss(predictions, targets / AB_SCALE)
        z = self.soft_encode(targets)  # [B, Q, h, w]
        cross_entropy = -(z * torch.log_softmax(predictions, dim=1)).sum(dim=1)  # [B, h, w]
        if self.rebalance is not None:
            if not bool(self.prior_estimated):
                raise RuntimeError(
                    "colourisation class rebalancing needs the colour prior of the training data: call "
                    "estimate_prior(train_images) before training, or pass rebalance=None"
                )
            cross_entropy = cross_entropy * self.bin_weights[z.argmax(dim=1)]
        return cross_entropy.mean()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, mode={self.mode!r}, target_size={self.target_size}"
