"""The residual backbones: parameter counts against the formulas and the published numbers,
shapes, the blocks view and the shortcuts, and every architecture on them."""

import pytest
import torch
from torch import nn

from maxl.nn.architectures import ARCHITECTURES, build_network
from maxl.nn.backbones import build_backbone
from maxl.nn.resnet import BasicBlock, ZeroPadShortcut, cifar_resnet, resnet18, resnet20, resnet32


def count(module):
    return sum(p.numel() for p in module.parameters())


def cifar_count(depth, in_c, bn=True):
    """He et al.'s CIFAR ResNet with option-A shortcuts: stem 3×3 conv (16) + BN, then per block
    two 3×3 convolutions and two BatchNorms; no bias with BN, a bias per conv without."""
    n = (depth - 2) // 6
    extra = (lambda w: 2 * w) if bn else (lambda w: w)  # BN's scale and shift, else the conv's bias
    total, c = 9 * in_c * 16 + extra(16), 16
    for w in (16, 32, 64):
        for _ in range(n):
            total += 9 * c * w + extra(w) + 9 * w * w + extra(w)
            c = w
    return total


@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("depth,in_c", [(20, 3), (32, 3), (20, 1), (44, 3)])
def test_cifar_resnet_parameter_counts(depth, in_c, bn):
    assert count(cifar_resnet(depth, in_c, bn)) == cifar_count(depth, in_c, bn)


def test_published_parameter_counts():
    # He et al. 2016, Table 6: ResNet-20 0.27M, ResNet-32 0.46M, with a 10-class linear layer
    assert count(resnet20()) + 64 * 10 + 10 == 269_722
    assert count(resnet32()) + 64 * 10 + 10 == 464_154
    # torchvision's ResNet-18: 11,689,512 with its 1000-class layer (512·1000 + 1000)
    from torchvision.models import resnet18 as tv_resnet18

    assert count(tv_resnet18(weights=None)) == 11_689_512
    assert count(resnet18()) == 11_689_512 - 513_000
    assert count(resnet18(1)) == 11_176_512 - 2 * 64 * 49  # a stem of 1 input channel
    assert not any(isinstance(m, nn.BatchNorm2d) for m in resnet18(3, batchnorm=False).modules())


@pytest.mark.parametrize(
    "name,size,widths",
    [
        ("resnet20", 8, (16,) + (16,) * 3 + (32,) * 3 + (64,) * 3),
        ("resnet32", 32, (16,) + (16,) * 5 + (32,) * 5 + (64,) * 5),
        ("resnet18", 32, (64, 64, 64, 128, 128, 256, 256, 512, 512)),
    ],
)
def test_shapes_and_blocks_view(name, size, widths):
    torch.manual_seed(0)
    net = build_backbone(name, 3).eval()
    assert net.block_widths == widths and net.out_features == widths[-1]
    assert net.residual_blocks == tuple(range(1, len(widths)))
    x = torch.randn(2, 3, size, size)
    h = x
    for b in range(net.num_blocks):
        before = h
        h = net.block(b, h)
        assert h.shape[1] == widths[b]
        if b > 0:  # the shortcut has the block's shape
            assert net.shortcut(b, before).shape == h.shape
    torch.testing.assert_close(net.pool(h), net(x), rtol=0, atol=0)
    assert net(x).shape == (2, widths[-1])
    with pytest.raises(IndexError):
        net.block(len(widths), h)
    with pytest.raises(IndexError, match="not a residual block"):
        net.shortcut(0, x)
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\]"):
        net(torch.randn(2, 1, size, size))


def test_option_a_shortcut_subsamples_and_pads_with_zeros():
    x = torch.randn(2, 16, 7, 7)
    out = ZeroPadShortcut(2, 16, 32)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, :16], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert torch.count_nonzero(out[:, 16:]) == 0
    block = BasicBlock(16, 32, 2)
    assert block(x).shape == (2, 32, 4, 4)
    assert BasicBlock(16, 16, 1).downsample is None


def test_a_block_with_zero_residual_branch_is_relu_of_its_shortcut():
    """F(x) = 0 (last BN's scale 0, shift 0): y = ReLU(S(x)), the identity on ReLU features."""
    net = resnet20(1).eval()
    for blk in net.blocks:
        nn.init.zeros_(blk.bn2.weight)
    x = torch.relu(torch.randn(2, 16, 8, 8))
    for b in net.residual_blocks:
        torch.testing.assert_close(net.block(b, x), torch.relu(net.shortcut(b, x)))
        x = net.block(b, x)


def test_invalid_depth():
    with pytest.raises(ValueError, match="depth 6n"):
        cifar_resnet(21)


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_runs_on_a_residual_backbone(arch, name):
    torch.manual_seed(0)
    size = 8 if name == "resnet20" else 28  # 28 → 14 → 7 → 4 (odd: MTAN's pooling rounds up)
    net = build_network(arch, lambda: build_backbone(name, 1), 3, 7, 6)
    primary, aux = net(torch.randn(4, 1, size, size))
    assert primary.shape == (4, 3) and aux.shape == (4, 7)
    if arch in ("soft", "cross-stitch", "nddr"):
        assert count(net.backbone.backbones[0]) == count(build_backbone(name, 1))
