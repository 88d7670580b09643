"""MTAN: a shared backbone and, per task and block, a soft attention mask on its features.

At block b with shared output s^b ``[B, C_b, H_b, W_b]``, task t computes

    a_t^b = m_t^b ⊙ s^b,   m_t^b = σ(BN(conv₁ₓ₁(ReLU(BN(conv₁ₓ₁(u_t^b))))))
    u_t^1 = s^1,           u_t^b = [s^b, pool(a_t^{b−1})]  (channel concatenation)

where pool max-pools a_t^{b−1} to s^b's resolution; task t's features are the global average
pool of its last a_t. This is the attention module of Liu et al. 2019 (Sec. 3.1, Fig. 2: two
1×1 convolutions with BatchNorm, ReLU then a sigmoid, applied to the shared features, with the
previous block's task features as input) without the paper's extra 3×3 convolution f that
reshapes a_t^{b−1}: here the concatenation feeds the 1×1 convolution directly.

References:
    Liu, Johns, Davison. "End-to-End Multi-Task Learning with Attention". CVPR 2019, Sec. 3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maxl.nn.architectures.base import BackboneFactory, TaskTrunk, branched_network
from maxl.nn.architectures.cross_stitch import blocks_view, per_task_backbones

if TYPE_CHECKING:  # for the annotations only
    from maxl.nn.networks import MultiTaskNetwork

__all__ = ["MTAN", "mtan", "attention_module", "pool_to"]


def attention_module(in_channels: int, channels: int, batchnorm: bool = True) -> nn.Sequential:
    """conv₁ₓ₁(in → C) → [BN] → ReLU → conv₁ₓ₁(C → C) → [BN] → sigmoid: a mask in (0, 1).

    Parameters: (in + 1)·C + (C + 1)·C + 4·C·[batchnorm].
    """
    norm = (lambda: [nn.BatchNorm2d(channels)]) if batchnorm else (lambda: [])
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 1),
        *norm(),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 1),
        *norm(),
        nn.Sigmoid(),
    )


def pool_to(prev: Tensor, h: Tensor) -> Tensor:
    """Max-pool ``prev`` ``[B, C, H, W]`` by the block's factor k = H // h's height to h's size:
    floor division for a max-pool block (VGG: 7 → 3), ceiling for a strided convolution (ResNet:
    7 → 4), whichever gives h's height.

    Raises:
        ValueError: neither does.
    """
    k = max(1, round(prev.shape[-2] / h.shape[-2]))
    for ceil in (False, True):
        out = F.max_pool2d(prev, k, ceil_mode=ceil)
        if out.shape[-2:] == h.shape[-2:]:
            return out
    raise ValueError(f"cannot pool task features {tuple(prev.shape)} to the block's {tuple(h.shape)}")


class MTAN(TaskTrunk):
    """A shared backbone and an attention module per task and block.

    Args:
        make_backbone: returns a fresh :class:`maxl.nn.ConvNet` (called once: the shared one).
        num_tasks: T.
        batchnorm: BatchNorm in the attention modules.

    Parameters: the backbone's + Σ_t Σ_b [(in_b + 1)·C_b + (C_b + 1)·C_b + 4·C_b·[batchnorm]]
    with in_1 = C_1 and in_b = C_b + C_{b−1}.

    Shapes:
        ``forward``: ``[B, C, H, W]`` → ``[B, T, F]``.

    Raises:
        ValueError: a backbone without a blocks view.
    """

    def __init__(self, make_backbone: BackboneFactory, num_tasks: int, batchnorm: bool = True):
        backbone = per_task_backbones(make_backbone, 1, "mtan")[0]
        view = blocks_view(backbone)
        super().__init__(num_tasks, view.out_features)
        self.backbone = backbone
        widths = view.block_widths
        self.attention = nn.ModuleList(
            nn.ModuleList(
                attention_module(w if b == 0 else w + widths[b - 1], w, batchnorm) for b, w in enumerate(widths)
            )
            for _ in range(num_tasks)
        )  # [T][n_blocks]

    def task_features(self, x: Tensor) -> list[Tensor]:
        net = blocks_view(self.backbone)
        net.check_input(x)
        h = x
        attended: list[Tensor | None] = [None] * self.num_tasks
        for b in range(net.num_blocks):
            h = net.block(b, h)  # s^b, shared: [B, C_b, H_b, W_b]
            for t in range(self.num_tasks):
                u = h
                prev = attended[t]
                if prev is not None:
                    if prev.shape[-2:] != h.shape[-2:]:  # the block pooled: pool a_t^{b−1} alike
                        prev = pool_to(prev, h)
                    u = torch.cat([h, prev], dim=1)  # [B, C_b + C_{b−1}, H_b, W_b]
                per_block = cast(nn.ModuleList, self.attention[t])  # cast: one ModuleList per task
                attended[t] = per_block[b](u) * h  # a_t^b = m_t^b ⊙ s^b
        # cast: every a_t is set at block 0 (a backbone has at least one block)
        return [net.pool(a) for a in cast("list[Tensor]", attended)]  # T × [B, F]


def mtan(
    make_backbone: BackboneFactory, num_primary: int, num_aux: int = 0, hidden: int = 512, batchnorm: bool = True
) -> MultiTaskNetwork:
    """The multi-task network with task attention (:class:`MTAN` and two heads)."""
    return branched_network(MTAN(make_backbone, 2 if num_aux > 0 else 1, batchnorm), num_primary, num_aux, hidden)
