"""Networks with an op whose backward cannot be differentiated again: the second-order engines
raise :class:`maxl.meta.DoubleBackwardError` with the fix instead of a wrong meta-gradient or
autograd's bare error, in the plain and in the fused form; the first-order variant works."""

import copy

import pytest
import torch

from maxl.core.losses import classification_loss
from maxl.meta import DoubleBackwardError, MetaConfig, fused_step, meta_gradient
from maxl.nn.backbones import ConvNet
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork

from tests.unit.meta.tiny import PSI


class _OnceDifferentiableReLU(torch.autograd.Function):
    """A hand-written op whose backward autograd cannot differentiate (like many custom kernels)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0)


class _BackboneWithOp(torch.nn.Module):
    """conv → an op without a usable double backward → mean over the image: features [B, 4]."""

    def __init__(self, op):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.op, self.out_features = op, 4

    def forward(self, x):
        h = self.conv(x)  # [B, 4, H, W]
        if self.op == "once_differentiable":
            return _OnceDifferentiableReLU.apply(h).mean(dim=(2, 3))
        # max over each image row with segment_reduce, whose double backward is not implemented
        rows = h.permute(3, 0, 1, 2).reshape(h.shape[3], -1)  # [W, B*4*H]: a segment per row
        pooled = torch.segment_reduce(rows.T.reshape(-1), "max", lengths=torch.full((rows.shape[1],), h.shape[3]))
        return pooled.view(h.shape[0], 4, h.shape[2]).mean(dim=2)


def networks_with(op):
    """float32 networks whose backbone uses ``op``, and a batch of 6 images [6, 1, 4, 4]."""
    torch.manual_seed(0)
    net = MultiTaskNetwork(_BackboneWithOp(op), len(PSI), sum(PSI), hidden=5)
    gen = LabelGenerator(ConvNet(1, (3,), (1,)), PSI, hidden=5)
    x, y = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 2, 1])
    return net, gen, x, y


@pytest.mark.parametrize("op", ["once_differentiable", "segment_reduce"])
@pytest.mark.parametrize("engine", ["func", "higher"])
def test_op_without_double_backward_gives_a_clear_error(op, engine):
    net, gen, x, y = networks_with(op)
    loss = classification_loss("focal")
    if op == "once_differentiable":  # autograd alone would silently drop the paths through it
        with pytest.raises(DoubleBackwardError, match="cannot differentiate again.*--meta-order first"):
            meta_gradient(net, gen, x, y, loss, MetaConfig(engine=engine))
    else:  # autograd's own error, which names the op, with the fix added
        with pytest.raises(
            DoubleBackwardError,
            match=r"derivative for aten::_segment_reduce_backward is not "
            r"implemented.*MetaConfig\(order='first'\)",
        ):
            meta_gradient(net, gen, x, y, loss, MetaConfig(engine=engine))
    # the first-order variant needs no double backward
    result = meta_gradient(net, gen, x, y, loss, MetaConfig(order="first"))
    assert all(torch.isfinite(g).all() for g in result.grads)


def test_the_fused_func_form_walks_the_graph_for_once_differentiable_ops():
    net, gen, x, y = networks_with("once_differentiable")
    loss = classification_loss("focal")
    with pytest.raises(DoubleBackwardError, match="cannot differentiate again.*--meta-order first"):
        fused_step(copy.deepcopy(net), gen, x, y, loss, MetaConfig(engine="func"))
    # without the walk autograd silently drops the paths through the op: a result, but a wrong one
    unchecked = fused_step(copy.deepcopy(net), gen, x, y, loss, MetaConfig(engine="func"), check_graph=False)
    assert all(torch.isfinite(g).all() for g in unchecked.meta.grads)
    # the first-order fused form needs no double backward ("jvp" would need the op's forward-mode rule)
    result = fused_step(copy.deepcopy(net), gen, x, y, loss, MetaConfig(order="first"))
    assert all(torch.isfinite(g).all() for g in result.meta.grads)


def test_the_fused_func_form_explains_a_missing_double_backward():
    net, gen, x, y = networks_with("segment_reduce")
    with pytest.raises(
        DoubleBackwardError,
        match=r"derivative for aten::_segment_reduce_backward is not "
        r"implemented.*MetaConfig\(order='first'\)",
    ):
        fused_step(net, gen, x, y, classification_loss("focal"), MetaConfig(engine="func"))
