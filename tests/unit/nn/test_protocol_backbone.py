"""The protocol's 3-layer CNN and linear heads."""

import pytest
import torch

from maxl.core.heads import mlp_head
from maxl.nn.backbones import cnn3


def test_cnn3_has_three_convolutions_two_pools_and_the_formula_parameter_count():
    net = cnn3(3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128] and len(pools) == 2
    conv = sum(9 * cin * cout + cout for cin, cout in ((3, 32), (32, 64), (64, 128)))
    bn = 2 * (32 + 64 + 128)
    assert sum(p.numel() for p in net.parameters()) == conv + bn
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    assert net.min_size == 4


def test_hidden_zero_is_a_linear_head():
    head = mlp_head(128, 10, hidden=0)
    assert sum(p.numel() for p in head.parameters()) == 128 * 10 + 10
    with pytest.raises(ValueError, match="hidden width must be >= 0"):
        mlp_head(128, 10, hidden=-1)
