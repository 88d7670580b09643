"""A small convolutional autoencoder whose latent codes the k-means baseline clusters.

The MAXL paper's "K-means" baseline clusters the latent space of an autoencoder trained on
the training images (Liu, Davison, Johns, NeurIPS 2019, Sec. 4); training that autoencoder is
part of the method and its cost is part of the method's cost.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933, Sec. 4.
    Hinton, Salakhutdinov. "Reducing the Dimensionality of Data with Neural Networks".
    Science 313, 2006 (autoencoders).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AutoencoderConfig", "ConvAutoencoder", "train_autoencoder", "encode"]


@dataclass
class AutoencoderConfig:
    """Settings of the autoencoder and of its training.

    Attributes:
        latent_dim: size of the latent code the k-means baseline clusters.
        widths: channels of the stride-2 convolutions of the encoder (the decoder mirrors them).
        epochs: training epochs over the training images.
        batch_size: images per batch.
        lr: Adam learning rate.
        seed: seeds the initialisation and the batch order.
    """

    latent_dim: int = 32
    widths: tuple[int, ...] = (32, 64)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        self.widths = tuple(self.widths)
        checks = [
            (self.latent_dim >= 1, f"latent_dim must be >= 1, got {self.latent_dim}"),
            (len(self.widths) >= 1 and min(self.widths) >= 1, f"widths must be positive ints, got {self.widths}"),
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class ConvAutoencoder(nn.Module):
    """Encoder: stride-2 3×3 convolutions with ReLU, then a linear map to the latent code;
    decoder: a linear map back and stride-2 4×4 transposed convolutions, cropped to the input size.

    Args:
        in_channels: C of the images.
        image_size: (H, W) of the images.
        latent_dim: size of the latent code.
        widths: channels of the encoder's convolutions.

    Shapes:
        ``encode``: float ``[B, C, H, W]`` → float ``[B, latent_dim]``;
        ``forward``: float ``[B, C, H, W]`` → reconstruction float ``[B, C, H, W]``.
    """

    def __init__(
        self, in_channels: int, image_size: tuple[int, int], latent_dim: int = 32, widths: Sequence[int] = (32, 64)
    ):
        super().__init__()
        self.in_channels, self.image_size = in_channels, tuple(image_size)
        h, w = self.image_size
        enc: list[nn.Module] = []
        c = in_channels
        for width in widths:
            enc += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c = width
            h, w = math.ceil(h / 2), math.ceil(w / 2)  # 3x3, stride 2, padding 1
        self.code_shape = (c, h, w)
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(c * h * w, latent_dim))
        dec: list[nn.Module] = []
        for dec_width in (*reversed(widths[:-1]), None):
            out = dec_width if dec_width is not None else in_channels
            dec.append(nn.ConvTranspose2d(c, out, 4, stride=2, padding=1))  # doubles H and W
            if dec_width is not None:
                dec.append(nn.ReLU(inplace=True))
            c = out
        self.decoder_in = nn.Linear(latent_dim, math.prod(self.code_shape))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.image_size):
            raise ValueError(
                f"expected images [B, {self.in_channels}, {self.image_size[0]}, {self.image_size[1]}], "
                f"got shape {tuple(x.shape)}"
            )
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        y = self.decoder(F.relu(self.decoder_in(z)).view(-1, *self.code_shape))
        return y[..., : self.image_size[0], : self.image_size[1]]  # ceil-halving may overshoot by a pixel

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def train_autoencoder(
    images: Tensor, config: AutoencoderConfig | None = None, device: str | torch.device = "cpu"
) -> tuple[ConvAutoencoder, list[float]]:
    """Train a :class:`ConvAutoencoder` on ``images`` with the mean squared reconstruction error.

    Training uses its own seeded generators (the global RNG state is restored afterwards), so
    the result depends only on ``images`` and ``config``.

    Args:
        images: float32 ``[N, C, H, W]`` (normalised as the networks see them).
        config: :class:`AutoencoderConfig`; None uses the defaults.
        device: where to train.

    Returns:
        ``(model, losses)``: the trained model in eval mode on ``device``, and the mean
        reconstruction MSE of each epoch.

    Raises:
        ValueError: if ``images`` is not a float ``[N, C, H, W]`` tensor with N >= 1.
    """
    config = config or AutoencoderConfig()
    if images.ndim != 4 or not images.dtype.is_floating_point or len(images) == 0:
        raise ValueError(f"images must be float [N, C, H, W] with N >= 1, got {images.dtype} {tuple(images.shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ConvAutoencoder(images.shape[1], (images.shape[2], images.shape[3]), config.latent_dim, config.widths)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    order_rng = torch.Generator().manual_seed(config.seed)
    losses = []
    model.train()
    for _ in range(config.epochs):
        total = 0.0
        for batch in torch.randperm(len(images), generator=order_rng).split(config.batch_size):
            x = images[batch].to(device)
            loss = F.mse_loss(model(x), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        losses.append(total / len(images))
    return model.eval(), losses


@torch.no_grad()
def encode(model: ConvAutoencoder, images: Tensor, batch_size: int = 512) -> Tensor:
    """Latent codes float32 ``[N, latent_dim]`` of ``images`` float ``[N, C, H, W]`` (on the CPU)."""
    device = next(model.parameters()).device
    model.eval()
    return torch.cat([model.encode(x.to(device)).cpu() for x in images.split(batch_size)])
