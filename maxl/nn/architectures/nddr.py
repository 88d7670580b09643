"""NDDR-CNN: neural discriminative dimensionality reduction between per-task backbones.

After block b the tasks' feature maps are concatenated along the channels and each task
reduces them back to its own C_b channels with a 1×1 convolution followed by BatchNorm
(Gao et al. 2019, Eq. 1–2):

    x̃_t^b = BN_t^b( W_t^b * [x_1^b, …, x_T^b] ),      W_t^b ∈ R^{C_b × T·C_b × 1 × 1}

W_t^b is initialised as a weighted diagonal, [α_t1 I, …, α_tT I] with α as in cross-stitch
(0.9 on the task's own maps): with BatchNorm at its initial (identity) statistics the layer
is then a cross-stitch unit with per-block α (the paper's Sec. 3.2 initialisation).

References:
    Gao, Ma, Zhao, Liu, Yuille. "NDDR-CNN: Layerwise Feature Fusing in Multi-Task CNNs by
    Neural Discriminative Dimensionality Reduction". CVPR 2019, Sec. 3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from maxl.nn.architectures.base import BackboneFactory, TaskTrunk, branched_network
from maxl.nn.architectures.cross_stitch import blocks_view, mixing_init, per_task_backbones

if TYPE_CHECKING:  # for the annotations only
    from maxl.nn.networks import MultiTaskNetwork

__all__ = ["NDDR", "nddr"]


class NDDR(TaskTrunk):
    """T backbones with an NDDR layer (concat → 1×1 conv per task → BatchNorm) after every block.

    Args:
        make_backbone: returns a fresh :class:`maxl.nn.ConvNet` per call.
        num_tasks: T.
        self_weight: the diagonal initialisation's weight on the task's own maps.
        batchnorm: the BatchNorm after each 1×1 convolution.

    Parameters: T × the backbone's + Σ_b T·(T·C_b² + 2·C_b·[batchnorm]) (1×1 convolutions
    without bias; BatchNorm's scale and shift).

    Shapes:
        ``forward``: ``[B, C, H, W]`` → ``[B, T, F]``.

    Raises:
        ValueError: backbones without a blocks view.
    """

    def __init__(
        self, make_backbone: BackboneFactory, num_tasks: int, self_weight: float = 0.9, batchnorm: bool = True
    ):
        backbones = per_task_backbones(make_backbone, num_tasks, "nddr")
        first = blocks_view(backbones[0])
        super().__init__(num_tasks, first.out_features)
        self.backbones = backbones
        alpha = mixing_init(num_tasks, self_weight)  # [T, T]
        self.reduce = nn.ModuleList()  # [n_blocks][T]
        for width in first.block_widths:
            per_task = nn.ModuleList()
            for t in range(num_tasks):
                conv = nn.Conv2d(num_tasks * width, width, 1, bias=False)
                with torch.no_grad():  # W_t = [α_t1 I, …, α_tT I]
                    eye = torch.eye(width)
                    conv.weight.copy_(torch.cat([alpha[t, s] * eye for s in range(num_tasks)], 1)[:, :, None, None])
                per_task.append(nn.Sequential(conv, nn.BatchNorm2d(width)) if batchnorm else nn.Sequential(conv))
            self.reduce.append(per_task)

    def task_features(self, x: Tensor) -> list[Tensor]:
        nets = [blocks_view(net) for net in self.backbones]
        nets[0].check_input(x)
        hs = [x] * self.num_tasks
        for b in range(nets[0].num_blocks):
            hs = [net.block(b, h) for net, h in zip(nets, hs)]
            joint = torch.cat(hs, dim=1)  # [B, T·C_b, H, W]
            per_task = cast(nn.ModuleList, self.reduce[b])  # cast: self.reduce holds one ModuleList per block
            hs = [layer(joint) for layer in per_task]  # T × [B, C_b, H, W]
        return [net.pool(h) for net, h in zip(nets, hs)]  # T × [B, F]


def nddr(
    make_backbone: BackboneFactory,
    num_primary: int,
    num_aux: int = 0,
    hidden: int = 512,
    self_weight: float = 0.9,
    batchnorm: bool = True,
) -> MultiTaskNetwork:
    """The multi-task network with NDDR layers (:class:`NDDR` and two heads)."""
    trunk = NDDR(make_backbone, 2 if num_aux > 0 else 1, self_weight, batchnorm)
    return branched_network(trunk, num_primary, num_aux, hidden)
