"""Residual backbones: the CIFAR ResNets of He et al. (ResNet-20, ResNet-32) and torchvision's
ResNet-18, with the blocks view of :class:`maxl.nn.ConvNet`.

A :class:`ResNet` is a stem followed by residual blocks, each computing

    y = ReLU(F(x) + S(x)),      F(x) = BN(conv₃ₓ₃(ReLU(BN(conv₃ₓ₃(x)))))

with S the block's shortcut: the identity, or where the block changes resolution or width its
downsample path. The blocks view has the stem as block 0 and residual block r as block r + 1, so
that the per-block architectures (cross-stitch, NDDR, MTAN) mix after the stem and after every
residual block; :meth:`ResNet.shortcut` is S alone (what AdaShare passes for a skipped block) and
:attr:`ResNet.residual_blocks` the indices of the residual blocks.

CIFAR ResNet-(6n+2) (He et al. 2016, Sec. 4.2): a 3×3 convolution with 16 filters, then three
stages of n blocks with 16, 32, 64 filters, the first block of stages 2 and 3 with stride 2; the
shortcuts are the paper's **option A**, parameter-free: the identity, and where the stage changes,
the input subsampled by 2 and its channels zero-padded (so ResNet-20 with a 10-class linear layer
has the paper's 0.27M parameters, 269,722; ResNet-32 0.46M, 464,154). Convolutions have no bias
when BatchNorm follows. He (fan-out) initialisation. Parameters of the backbone (no classifier), with BatchNorm:

    9·C·16 + 2·16  +  Σ_blocks [9·c_in·w + 9·w² + 4·w]

torchvision's ResNet-18 (He et al. 2016, Table 1; random initialisation, no pre-trained weights):
the 7×7 stride-2 stem with a 3×3 max-pool, four stages of two basic blocks (64, 128, 256, 512
filters) whose downsample paths are a 1×1 stride-2 convolution with BatchNorm (option B), and no
classifier: 11,176,512 parameters for 3 input channels (11,689,512 with its 1000-class layer).

References:
    He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition". CVPR 2016, Sec. 3.3
    and 4.2, Table 1 and Table 6.
"""

from __future__ import annotations

from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ResNet", "BasicBlock", "ZeroPadShortcut", "cifar_resnet", "resnet20", "resnet32", "resnet18"]


class ZeroPadShortcut(nn.Module):
    """Option A's downsample path: ``x[:, :, ::s, ::s]`` with ``out - in`` zero channels appended.

    Shapes:
        ``[B, C_in, H, W]`` → ``[B, C_out, ⌈H/s⌉, ⌈W/s⌉]``.
    """

    def __init__(self, stride: int, in_channels: int, out_channels: int):
        super().__init__()
        self.stride, self.extra = int(stride), int(out_channels - in_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # zero channels after the input's

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


class BasicBlock(nn.Module):
    """The CIFAR ResNet's basic block: ``ReLU(BN(conv(ReLU(BN(conv(x))))) + S(x))`` with option A's S.

    The attribute names (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample``: None for the
    identity) are torchvision's, so that :meth:`ResNet.shortcut` reads both kinds of block alike.

    Shapes:
        ``[B, C_in, H, W]`` → ``[B, width, ⌈H/stride⌉, ⌈W/stride⌉]``.
    """

    def __init__(self, in_channels: int, width: int, stride: int = 1, batchnorm: bool = True):
        super().__init__()
        norm = (lambda: nn.BatchNorm2d(width)) if batchnorm else (lambda: nn.Identity())
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=not batchnorm)
        self.bn1 = norm()
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=not batchnorm)
        self.bn2 = norm()
        changes = stride != 1 or in_channels != width
        self.downsample = ZeroPadShortcut(stride, in_channels, width) if changes else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))  # F(x)
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))  # ReLU(F(x) + S(x))


class ResNet(nn.Module):
    """A stem and residual blocks, features the global average pool of the last block.

    Args:
        stem: images ``[B, C, H, W]`` → ``[B, stem_width, H', W']``.
        blocks: the residual blocks in order; each has a ``downsample`` attribute (None: the
            identity shortcut).
        in_channels: C.
        block_widths: output channels of the stem and of each residual block.

    Blocks view: block 0 the stem, block r + 1 residual block r (``num_blocks = 1 + len(blocks)``);
    ``pool(block(n-1, ... block(0, x)))`` equals ``forward(x)``.

    Shapes:
        ``forward``: float ``[B, C, H, W]`` → float ``[B, block_widths[-1]]`` (any H, W ≥ 1).
    """

    min_size = 1  # every convolution and pool is padded: any image size gives features

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], in_channels: int, block_widths: tuple[int, ...]):
        super().__init__()
        if len(block_widths) != 1 + len(blocks):
            raise ValueError(f"{len(block_widths)} widths for a stem and {len(blocks)} residual blocks")
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.in_channels = int(in_channels)
        self.block_widths = tuple(block_widths)
        self.out_features = self.block_widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        h = self.stem(x)
        for blk in self.blocks:
            h = blk(h)
        return self.pool(h)  # [B, C', h, w] -> [B, C']

    # ------------------------------------------------------------------ blocks view
    @property
    def num_blocks(self) -> int:
        """The stem and the residual blocks."""
        return 1 + len(self.blocks)

    @property
    def residual_blocks(self) -> tuple[int, ...]:
        """Indices (in the blocks view) of the residual blocks: ``1 .. num_blocks - 1``."""
        return tuple(range(1, self.num_blocks))

    def block(self, i: int, h: Tensor) -> Tensor:
        """Block ``i`` alone (0: the stem) applied to ``h``; the modules themselves, no copies.

        Raises:
            IndexError: ``i`` outside ``0 .. num_blocks - 1``.
        """
        if not 0 <= i < self.num_blocks:
            raise IndexError(f"block {i} of a backbone with {self.num_blocks} blocks")
        return self.stem(h) if i == 0 else self.blocks[i - 1](h)

    def shortcut(self, i: int, h: Tensor) -> Tensor:
        """Residual block ``i``'s shortcut S alone: ``h`` itself, or its downsample path.

        Shapes:
            ``[B, C_in, H, W]`` → the shape of ``block(i, h)``.

        Raises:
            IndexError: ``i`` is not a residual block (the stem has no shortcut).
        """
        if not 1 <= i < self.num_blocks:
            raise IndexError(f"block {i} is not a residual block (those are 1 .. {self.num_blocks - 1})")
        # cast: every block has a `downsample` module or None, which nn.Module's __getattr__ hides
        down = cast("nn.Module | None", self.blocks[i - 1].downsample)
        return h if down is None else down(h)

    @staticmethod
    def pool(h: Tensor) -> Tensor:
        """The global average pool: ``[B, C, h, w]`` → ``[B, C]``."""
        return h.mean(dim=(2, 3))

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError for images that are not ``[B, in_channels, H, W]``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images [B, {self.in_channels}, H, W], got shape {tuple(x.shape)}")


def _he_init(module: nn.Module) -> None:
    """He et al. 2015's normal initialisation (fan-out) of the convolutions; BN scale 1, shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def cifar_resnet(depth: int, in_channels: int = 3, batchnorm: bool = True) -> ResNet:
    """CIFAR ResNet-``depth`` (He et al. 2016, Sec. 4.2): depth = 6n + 2, n blocks per stage.

    Raises:
        ValueError: depth not of the form 6n + 2 with n >= 1.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    stem = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, 1, 1, bias=not batchnorm),
        nn.BatchNorm2d(16) if batchnorm else nn.Identity(),
        nn.ReLU(inplace=True),
    )
    blocks: list[nn.Module] = []
    widths = [16]
    c = 16
    for stage, width in enumerate((16, 32, 64)):
        for b in range(n):
            blocks.append(BasicBlock(c, width, 2 if stage > 0 and b == 0 else 1, batchnorm))
            c = width
            widths.append(width)
    net = ResNet(stem, blocks, in_channels, tuple(widths))
    _he_init(net)
    return net


def resnet20(in_channels: int = 3, batchnorm: bool = True) -> ResNet:
    """CIFAR ResNet-20 (3 blocks per stage, option-A shortcuts): 16, 32, 64 filters → 64 features."""
    return cifar_resnet(20, in_channels, batchnorm)


def resnet32(in_channels: int = 3, batchnorm: bool = True) -> ResNet:
    """CIFAR ResNet-32 (5 blocks per stage, option-A shortcuts): 16, 32, 64 filters → 64 features."""
    return cifar_resnet(32, in_channels, batchnorm)


def resnet18(in_channels: int = 3, batchnorm: bool = True) -> ResNet:
    """torchvision's ResNet-18, randomly initialised (its own initialisation), without its
    classifier, as a :class:`ResNet`: 512 features; ``in_channels`` ≠ 3 replaces the stem's
    convolution by one of as many input channels; ``batchnorm=False`` puts identities in place of
    its BatchNorm layers (its convolutions have no bias)."""
    from torchvision.models import resnet18 as tv_resnet18

    norm = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
    tv = tv_resnet18(weights=None, norm_layer=norm)
    if in_channels != 3:
        tv.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(tv.conv1.weight, mode="fan_out", nonlinearity="relu")
    stem = nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool)
    blocks = [blk for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4) for blk in layer]
    return ResNet(stem, blocks, in_channels, (64, 64, 64, 128, 128, 256, 256, 512, 512))
