"""Multi-task architectures, one per file: which parameters the primary and auxiliary tasks share.

==================  ============================================================  ===================
name                architecture                                                  file
==================  ============================================================  ===================
``hard``            one backbone, both heads on it (MAXL's; the default)          ``hard.py``
``soft``            a backbone per task, L2 or tensor-trace-norm tie (Duong et     ``soft.py``
                    al. 2015; Yang & Hospedales 2017)
``cross-stitch``    a backbone per task, T×T mixing after every block (Misra et   ``cross_stitch.py``
                    al. 2016)
``nddr``            a backbone per task, concat → 1×1 conv → BN per task after    ``nddr.py``
                    every block (Gao et al. 2019)
``mtan``            one backbone, an attention mask per task and block (Liu,      ``mtan.py``
                    Johns, Davison 2019)
``adashare``        one residual backbone, a select/skip policy per task and      ``adashare.py``
                    residual block (Sun et al. 2020)
``sparse``          one backbone, a binary weight mask per task from iterative    ``sparse.py``
                    magnitude pruning (Sun et al. 2020)
``mtl-nas``         a tower per task, searched gated NDDR-style fusion edges      ``mtl_nas.py``
                    between the towers' layers (Gao et al. 2020)
==================  ============================================================  ===================

Each builds a :class:`maxl.nn.MultiTaskNetwork` (``forward``: images ``[B, C, H, W]`` →
``(primary [B, P], aux [B, K])``) from a backbone factory; the per-block ones need a
:class:`maxl.nn.ConvNet` (its blocks view). MAXL's label-generation network keeps its own backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from maxl.nn.architectures.adashare import AdaShare, adashare
from maxl.nn.architectures.base import BackboneFactory, TaskSlice, TaskTrunk, TaskView, branched_network
from maxl.nn.architectures.cross_stitch import CrossStitch, cross_stitch
from maxl.nn.architectures.hard import hard_sharing
from maxl.nn.architectures.mtan import MTAN, mtan
from maxl.nn.architectures.mtl_nas import MTLNAS, mtl_nas
from maxl.nn.architectures.nddr import NDDR, nddr
from maxl.nn.architectures.soft import PENALTIES, SoftSharing, l2_tie, soft_sharing, tensor_trace_norm
from maxl.nn.architectures.sparse import SparseSharing, search_masks, sparse_sharing

if TYPE_CHECKING:  # for the annotations only
    from maxl.nn.networks import MultiTaskNetwork

__all__ = [
    "ARCHITECTURES",
    "PENALTIES",
    "build_network",
    "TaskTrunk",
    "TaskSlice",
    "TaskView",
    "branched_network",
    "SoftSharing",
    "CrossStitch",
    "NDDR",
    "MTAN",
    "AdaShare",
    "SparseSharing",
    "MTLNAS",
    "hard_sharing",
    "soft_sharing",
    "cross_stitch",
    "nddr",
    "mtan",
    "adashare",
    "sparse_sharing",
    "mtl_nas",
    "search_masks",
    "l2_tie",
    "tensor_trace_norm",
]

ARCHITECTURES = ("hard", "soft", "cross-stitch", "nddr", "mtan", "adashare", "sparse", "mtl-nas")


def build_network(
    arch: str,
    make_backbone: BackboneFactory,
    num_primary: int,
    num_aux: int = 0,
    hidden: int = 512,
    *,
    batchnorm: bool = True,
    soft_penalty: str = "l2",
    soft_weight: float = 0.01,
    settings: Mapping[str, Any] | None = None,
) -> MultiTaskNetwork:
    """The multi-task network of architecture ``arch`` (a name of :data:`ARCHITECTURES`).

    Args:
        arch: the architecture.
        make_backbone: returns a fresh backbone per call (``hard`` and ``mtan`` call it once,
            the others once per task).
        num_primary: P = len(ψ); num_aux: K = sum(ψ), 0 for a single-task network.
        hidden: the heads' hidden width (0: linear heads).
        batchnorm: BatchNorm in the NDDR layers and MTAN's attention modules.
        soft_penalty, soft_weight: the ``soft`` architecture's penalty (``"l2"``, ``"trace"``)
            and its weight λ.
        settings: keyword arguments of the architecture's trunk (``adashare``: those of
            :class:`AdaShare` after ``num_tasks``; ``mtl-nas``: those of :class:`MTLNAS`).

    Returns:
        A :class:`maxl.nn.MultiTaskNetwork`.

    Raises:
        ValueError: unknown architecture, a backbone without the blocks view that the
            architecture needs, a bad penalty or weight.
    """
    if arch == "hard":
        return hard_sharing(make_backbone, num_primary, num_aux, hidden)
    if arch == "soft":
        return soft_sharing(make_backbone, num_primary, num_aux, hidden, soft_penalty, soft_weight)
    if arch == "cross-stitch":
        return cross_stitch(make_backbone, num_primary, num_aux, hidden)
    if arch == "nddr":
        return nddr(make_backbone, num_primary, num_aux, hidden, batchnorm=batchnorm)
    if arch == "mtan":
        return mtan(make_backbone, num_primary, num_aux, hidden, batchnorm=batchnorm)
    if arch == "adashare":
        return adashare(make_backbone, num_primary, num_aux, hidden, **dict(settings or {}))
    if arch == "sparse":
        return sparse_sharing(make_backbone, num_primary, num_aux, hidden)
    if arch == "mtl-nas":
        return mtl_nas(make_backbone, num_primary, num_aux, hidden, batchnorm=batchnorm, **dict(settings or {}))
    raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")
