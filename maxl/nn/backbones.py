"""Backbones: networks that map images ``[B, C, H, W]`` to features ``[B, F]``.

One VGG-style class serves the four plain built-in sizes, :class:`maxl.nn.resnet.ResNet` the
residual ones (``resnet20``, ``resnet32``, ``resnet18``); any ``nn.Module`` with the same
contract (and an ``out_features`` attribute, or pass ``feature_dim`` to the networks) can be
used instead.

References:
    Simonyan, Zisserman. "Very Deep Convolutional Networks for Large-Scale Image
    Recognition". ICLR 2015 (VGG-16, configuration D). Ioffe, Szegedy. "Batch
    Normalization". ICML 2015. Liu, Davison, Johns, NeurIPS 2019: VGG-16-BN on CIFAR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from maxl.nn.resnet import ResNet, resnet18, resnet20, resnet32

__all__ = [
    "ConvNet",
    "ResNet",
    "vgg16_bn",
    "small_cnn",
    "tiny_cnn",
    "cnn3",
    "resnet20",
    "resnet32",
    "resnet18",
    "BACKBONES",
    "build_backbone",
]


class ConvNet(nn.Module):
    """VGG-style blocks of (3×3 conv → BatchNorm → ReLU) × n, each block ending in a 2×2
    max-pool, then a global average pool.

    Args:
        in_channels: C of the input images.
        widths: output channels of each block.
        convs_per_block: number of convolutions in each block (same length as ``widths``).
        pools: whether each block ends in the 2×2 max-pool (default: every block).
        batchnorm: False leaves out the BatchNorm layers. Without them every image's features
            depend on that image alone, so a data-parallel run over N processes computes the same
            gradients as one process with the same global batch (BatchNorm normalises with the
            statistics of each process's share of the batch instead).

    Shapes:
        ``forward``: float ``[B, C, H, W]`` → float ``[B, widths[-1]]``. H and W must be at
        least ``2 ** (number of pools)``.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        convs_per_block: Sequence[int],
        batchnorm: bool = True,
        pools: Sequence[bool] | None = None,
    ):
        super().__init__()
        pools = [True] * len(widths) if pools is None else list(pools)
        if len(widths) != len(convs_per_block) or len(pools) != len(widths):
            raise ValueError(f"widths {widths}, convs_per_block {convs_per_block} and pools {pools} differ in length")
        layers: list[nn.Module] = []
        c = in_channels
        ends = []  # index after the last layer of each block, for the blocks view
        for width, n, pool in zip(widths, convs_per_block, pools):
            for _ in range(n):
                norm = [nn.BatchNorm2d(width)] if batchnorm else []
                layers += [nn.Conv2d(c, width, 3, padding=1), *norm, nn.ReLU(inplace=True)]
                c = width
            if pool:
                layers.append(nn.MaxPool2d(2))
            ends.append(len(layers))
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.min_size = 2 ** sum(pools)
        self.out_features = c
        self.block_widths = tuple(widths)
        self._block_bounds = tuple(zip((0, *ends[:-1]), ends))
        for m in self.modules():  # the MAXL reference: Xavier init, zero biases
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:  # every conv here has one
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        # global average pool as a mean: unlike AdaptiveAvgPool2d its backward is deterministic
        # on CUDA, so torch.use_deterministic_algorithms(True) accepts it
        return self.features(x).mean(dim=(2, 3))  # [B, C', h, w] -> [B, C']

    # ------------------------------------------------------------------ blocks view
    @property
    def num_blocks(self) -> int:
        """Number of blocks (``len(widths)``)."""
        return len(self._block_bounds)

    def block(self, i: int, h: Tensor) -> Tensor:
        """Block ``i`` alone: its (conv → BN → ReLU) layers and its pool, applied to ``h``.

        The blocks view that per-block multi-task architectures (cross-stitch, NDDR, MTAN) mix
        between; it runs the layers of ``self.features`` (no copies), so
        ``pool(block(n-1, ... block(0, x)))`` equals ``forward(x)``.

        Shapes:
            ``h``: ``[B, C_in, H, W]`` (block 0: the images) → ``[B, widths[i], H', W']``.

        Raises:
            IndexError: ``i`` outside ``0 .. num_blocks - 1``.
        """
        if not 0 <= i < self.num_blocks:
            raise IndexError(f"block {i} of a backbone with {self.num_blocks} blocks")
        start, end = self._block_bounds[i]
        for j in range(start, end):  # the layers themselves, so functional_call / higher see them
            h = self.features[j](h)
        return h

    @staticmethod
    def pool(h: Tensor) -> Tensor:
        """The global average pool of :meth:`forward`: ``[B, C, h, w]`` → ``[B, C]``."""
        return h.mean(dim=(2, 3))

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError for images that :meth:`forward` would refuse."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images [B, {self.in_channels}, H, W], got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"images of {x.shape[-2]}x{x.shape[-1]} are too small for this backbone "
                f"({self.min_size} pixels at least)"
            )


def vgg16_bn(in_channels: int = 3, batchnorm: bool = True) -> ConvNet:
    """VGG-16 with BatchNorm as in MAXL's CIFAR experiments: 13 convs in blocks of 2,2,3,3,3
    with 64,128,256,512,512 filters; 32×32 input → 512 features."""
    return ConvNet(in_channels, (64, 128, 256, 512, 512), (2, 2, 3, 3, 3), batchnorm)


def small_cnn(in_channels: int = 1, batchnorm: bool = True) -> ConvNet:
    """A small CNN for MNIST-sized images (≥ 8×8; MNIST, CIFAR on a CPU): blocks of 1,1,2 convs
    with 32,64,128 filters → 128 features."""
    return ConvNet(in_channels, (32, 64, 128), (1, 1, 2), batchnorm)


def tiny_cnn(in_channels: int = 1, batchnorm: bool = True) -> ConvNet:
    """A tiny CNN for 8×8 images (scikit-learn digits): two blocks, 16 and 32 filters → 32."""
    return ConvNet(in_channels, (16, 32), (1, 1), batchnorm)


def cnn3(in_channels: int = 3, batchnorm: bool = True) -> ConvNet:
    """Three 3×3 convolutions with 32, 64, 128 filters, each with BatchNorm and ReLU, a 2×2
    max-pool after the first two, a global average pool → 128 features: the CPU-sized network
    of the generated-labels protocol (``experiments/``)."""
    return ConvNet(in_channels, (32, 64, 128), (1, 1, 1), batchnorm, pools=(True, True, False))


BACKBONES: dict[str, Callable[..., ConvNet | ResNet]] = {
    "vgg16": vgg16_bn,
    "small-cnn": small_cnn,
    "tiny-cnn": tiny_cnn,
    "cnn3": cnn3,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet18": resnet18,
}


def build_backbone(name: str, in_channels: int, batchnorm: bool = True) -> ConvNet | ResNet:
    """Build a built-in backbone by name (a key of :data:`BACKBONES`), with or without BatchNorm.
    Every one has the blocks view (``block``, ``num_blocks``, ``pool``, ``check_input``); the
    residual ones (:mod:`maxl.nn.resnet`) also ``shortcut`` and ``residual_blocks``.

    Raises:
        ValueError: unknown name.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    return BACKBONES[name](in_channels, batchnorm=batchnorm)
