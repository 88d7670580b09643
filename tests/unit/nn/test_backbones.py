"""The built-in backbones: shapes, input checks, the BatchNorm-free variant."""

import pytest
import torch
from torch import nn

from maxl.nn.backbones import build_backbone, tiny_cnn


@pytest.mark.parametrize("batchnorm", [True, False])
def test_features_shape(batchnorm):
    net = tiny_cnn(1, batchnorm=batchnorm)
    assert net(torch.randn(4, 1, 8, 8)).shape == (4, net.out_features)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == batchnorm


def test_without_batchnorm_each_image_is_processed_on_its_own():
    # what makes a data-parallel run equal a one-process run: the features of a batch are the
    # features of its images computed one at a time (not so with BatchNorm in training mode)
    torch.manual_seed(0)
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64)
    for batchnorm, independent in ((False, True), (True, False)):
        net = build_backbone("small-cnn", 3, batchnorm=batchnorm).double().train()
        whole = net(x)
        halves = torch.cat([net(x[:3]), net(x[3:])])
        assert torch.allclose(whole, halves, atol=1e-12) == independent


def test_wrong_channels_and_too_small_images_are_rejected():
    net = tiny_cnn(1)
    with pytest.raises(ValueError, match=r"expected images \[B, 1, H, W\], got shape \(2, 3, 8, 8\)"):
        net(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="images of 2x2 are too small for this backbone"):
        net(torch.randn(2, 1, 2, 2))
