"""Task heads on shared features.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933 (the heads of its reference code).
"""

from __future__ import annotations

from torch import nn

__all__ = ["mlp_head"]


def mlp_head(in_features: int, out_features: int, hidden: int = 512) -> nn.Sequential:
    """``Linear(F, hidden) → ReLU → Linear(hidden, out)``, the heads of the MAXL reference;
    ``hidden=0`` gives a linear head, ``Linear(F, out)``.

    Raises:
        ValueError: ``hidden < 0``.
    """
    if hidden < 0:
        raise ValueError(f"hidden width must be >= 0 (0: a linear head), got {hidden}")
    if hidden == 0:
        return nn.Sequential(nn.Linear(in_features, out_features))
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features))
