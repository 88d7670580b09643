"""Hard parameter sharing: one backbone, every head on its features (MAXL's network).

References:
    Caruana. "Multitask Learning". Machine Learning 28, 1997. Liu, Davison, Johns,
    NeurIPS 2019, arXiv:1901.08933, Fig. 2.
"""

from __future__ import annotations

from maxl.nn.architectures.base import BackboneFactory
from maxl.nn.networks import MultiTaskNetwork

__all__ = ["hard_sharing"]


def hard_sharing(
    make_backbone: BackboneFactory, num_primary: int, num_aux: int = 0, hidden: int = 512
) -> MultiTaskNetwork:
    """:class:`maxl.nn.MultiTaskNetwork` on one backbone: the default architecture, built exactly
    as before the architectures existed (same modules, parameter names and initialisation).

    Parameters: backbone + heads, ``(F+1)·h + (h+1)·P`` for the primary head (and ``(h+1)·K``
    more for the auxiliary one) with hidden width h.
    """
    return MultiTaskNetwork(make_backbone(), num_primary, num_aux, hidden)
