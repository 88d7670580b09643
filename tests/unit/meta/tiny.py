"""Tiny float64 networks, a batch and an "other task" loss shared by the meta-gradient tests."""

import torch
from torch.func import functional_call

from maxl.nn.backbones import ConvNet
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork

PSI = [2, 1, 3]  # auxiliary classes per primary class: K = sum(ψ) = 6


def tiny_networks(dtype=torch.float64, seed=0):
    """A multi-task network, a label generator, images ``[6, 1, 4, 4]`` and labels ``[6]``."""
    torch.manual_seed(seed)
    net = MultiTaskNetwork(ConvNet(1, (3,), (1,)), len(PSI), sum(PSI), hidden=5).to(dtype)
    gen = LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5).to(dtype)
    x = torch.randn(6, 1, 4, 4, dtype=dtype)
    y = torch.tensor([0, 1, 2, 0, 2, 1])
    return net, gen, x, y


def flat(tensors):
    """One vector of all the tensors' entries."""
    return torch.cat([t.reshape(-1) for t in tensors])


def other_task_loss(backbone, params, x_other, target_other):
    """A regression on other inputs through the shared backbone: L_x depends on θ1 only."""
    buffers = {n: b.clone() for n, b in backbone.named_buffers()}
    features = functional_call(backbone, {**params, **buffers}, (x_other,))
    return 0.7 * ((features - target_other) ** 2).mean()


def other_task(net, dtype=torch.float64, seed=0):
    """``extra_inner_loss`` of "another task": L_x(params) on 5 other images with 3 regression targets."""
    generator = torch.Generator().manual_seed(1000 + seed)
    x_other = torch.randn(5, 1, 4, 4, dtype=dtype, generator=generator)
    target_other = torch.randn(5, 3, dtype=dtype, generator=generator)

    def extra(params):
        backbone = {n.removeprefix("backbone."): p for n, p in params.items() if n.startswith("backbone.")}
        return other_task_loss(net.backbone, backbone, x_other, target_other)
    return extra
