"""Cross-stitch networks: one backbone per task, the blocks' outputs mixed between tasks.

After block b every task's feature map is replaced by a learnt linear combination of all
tasks' maps (Misra et al. 2016, Eq. 1, for T tasks):

    x̃_t^b = Σ_s α^b_{ts} x_s^b,      α^b ∈ R^{T×T}

initialised near the identity, α_tt = 0.9 and α_ts = 0.1/(T−1) (the paper's (α_S, α_D) =
(0.9, 0.1)). At α = I the network is T independent networks.

References:
    Misra, Shrivastava, Gupta, Hebert. "Cross-stitch Networks for Multi-task Learning".
    CVPR 2016, Sec. 3 and 4.2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

import torch
from torch import Tensor, nn

from maxl.nn.architectures.base import BackboneFactory, TaskTrunk, branched_network

if TYPE_CHECKING:  # for the annotations only
    from maxl.nn.networks import MultiTaskNetwork

__all__ = ["CrossStitch", "cross_stitch", "per_task_backbones", "mixing_init"]


def per_task_backbones(make_backbone: BackboneFactory, num_tasks: int, arch: str) -> nn.ModuleList:
    """T fresh backbones with a blocks view (:meth:`maxl.nn.ConvNet.block`).

    Raises:
        ValueError: the backbone has no blocks view.
    """
    backbones = nn.ModuleList(make_backbone() for _ in range(num_tasks))
    if not all(all(hasattr(b, a) for a in ("block", "num_blocks", "pool", "check_input")) for b in backbones):
        raise ValueError(
            f"architecture {arch!r} mixes the backbones block by block: it needs backbones with a "
            f"blocks view (maxl.nn.ConvNet), got {type(backbones[0]).__name__}"
        )
    return backbones


class BlocksView(Protocol):
    """What the block-mixing architectures use of a backbone: :class:`maxl.nn.ConvNet`'s blocks view."""

    out_features: int
    block_widths: tuple[int, ...]

    @property
    def num_blocks(self) -> int: ...

    def block(self, i: int, h: Tensor) -> Tensor: ...

    def pool(self, h: Tensor) -> Tensor: ...

    def check_input(self, x: Tensor) -> None: ...


def blocks_view(backbone: nn.Module) -> BlocksView:
    """``backbone`` (one of :func:`per_task_backbones`) typed as its blocks view; the same object."""
    # cast: per_task_backbones checked the attributes, which nn.Module's __getattr__ hides from the type checker
    return cast(BlocksView, backbone)


def mixing_init(num_tasks: int, self_weight: float) -> Tensor:
    """``[T, T]``: ``self_weight`` on the diagonal, the rest of each row's unit sum spread evenly."""
    if num_tasks == 1:
        return torch.ones(1, 1)
    off = (1.0 - self_weight) / (num_tasks - 1)
    return torch.full((num_tasks, num_tasks), off) + (self_weight - off) * torch.eye(num_tasks)


class CrossStitch(TaskTrunk):
    """T backbones with a T×T cross-stitch unit after every block.

    Args:
        make_backbone: returns a fresh :class:`maxl.nn.ConvNet` per call.
        num_tasks: T.
        self_weight: α_tt at initialisation (1.0: the identity, independent networks).

    Parameters: T × the backbone's + ``num_blocks · T²``.

    Shapes:
        ``forward``: ``[B, C, H, W]`` → ``[B, T, F]``.

    Raises:
        ValueError: backbones without a blocks view.
    """

    def __init__(self, make_backbone: BackboneFactory, num_tasks: int, self_weight: float = 0.9):
        backbones = per_task_backbones(make_backbone, num_tasks, "cross-stitch")
        first = blocks_view(backbones[0])
        super().__init__(num_tasks, first.out_features)
        self.backbones = backbones
        blocks = first.num_blocks
        self.alpha = nn.Parameter(mixing_init(num_tasks, self_weight).repeat(blocks, 1, 1))  # [n_blocks, T, T]

    def mix(self, block: int, hs: list[Tensor]) -> list[Tensor]:
        """x̃_t = Σ_s α_ts x_s of T maps ``[B, C, H, W]``."""
        stacked = torch.stack(hs)  # [T, B, C, H, W]
        mixed = torch.einsum("ts,sbchw->tbchw", self.alpha[block], stacked)
        return list(mixed.unbind(0))

    def task_features(self, x: Tensor) -> list[Tensor]:
        nets = [blocks_view(net) for net in self.backbones]
        nets[0].check_input(x)
        hs = [x] * self.num_tasks
        for b in range(nets[0].num_blocks):
            hs = self.mix(b, [net.block(b, h) for net, h in zip(nets, hs)])
        return [net.pool(h) for net, h in zip(nets, hs)]  # T × [B, F]


def cross_stitch(
    make_backbone: BackboneFactory, num_primary: int, num_aux: int = 0, hidden: int = 512, self_weight: float = 0.9
) -> MultiTaskNetwork:
    """The multi-task network with cross-stitch units (:class:`CrossStitch` and two heads)."""
    return branched_network(
        CrossStitch(make_backbone, 2 if num_aux > 0 else 1, self_weight), num_primary, num_aux, hidden
    )
