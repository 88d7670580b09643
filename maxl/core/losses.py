"""Losses of MAXL: focal / cross-entropy with hard or soft targets, and the entropy term.

References:
    Lin, Goyal, Girshick, He, Dollár. "Focal Loss for Dense Object Detection". ICCV 2017
    (the focal loss, Eq. 4, here with soft targets).
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933, Eq. 4 (the entropy regulariser of the generator).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from maxl.core.precision import float32_ops

__all__ = [
    "focal_loss",
    "negative_entropy",
    "mean_entropy",
    "paired_mutual_information",
    "LOSSES",
    "classification_loss",
]

LOSSES = ("focal", "ce")


@float32_ops
def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Focal loss ``mean_b −Σ_k y_bk (1 − p_bk)^γ log p_bk`` with ``p = softmax(logits)``.

    ``gamma = 0`` is the cross-entropy. Soft targets (MAXL's generated auxiliary labels)
    are used as they are, never turned into one-hot labels.

    Args:
        logits: float ``[B, K]``.
        target: int64 ``[B]`` class indices in ``[0, K)``, or float ``[B, K]`` probability
            rows (each summing to 1).
        gamma: focusing parameter γ ≥ 0 (2 in the MAXL reference code).

    Returns:
        Scalar tensor, the mean over the batch.

    Raises:
        ValueError: the target's shape does not fit the logits, or γ < 0.
    """
    if gamma < 0:
        raise ValueError(f"focal gamma must be >= 0, got {gamma}")
    log_p = torch.log_softmax(logits, dim=1)  # [B, K]
    if target.dtype.is_floating_point:
        if target.shape != logits.shape:
            raise ValueError(f"soft target shape {tuple(target.shape)} != logits shape {tuple(logits.shape)}")
        if gamma == 0:
            return -(target * log_p).sum(dim=1).mean()
        return -(target * (1 - log_p.exp()).pow(gamma) * log_p).sum(dim=1).mean()
    if target.shape != logits.shape[:1]:
        raise ValueError(
            f"label shape {tuple(target.shape)} must be [B] = [{logits.shape[0]}] for logits {tuple(logits.shape)}"
        )
    # gather rather than F.nll_loss: nll_loss has no deterministic CUDA kernel, so
    # torch.use_deterministic_algorithms(True) would reject it
    log_pt = log_p.gather(1, target[:, None]).squeeze(1)  # [B]
    if gamma == 0:
        return -log_pt.mean()
    return -((1 - log_pt.exp()).pow(gamma) * log_pt).mean()


def classification_loss(kind: str, gamma: float = 2.0):
    """Return ``loss(logits, target) -> scalar`` for ``kind`` in :data:`LOSSES`.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind == "focal":
        return lambda logits, target: focal_loss(logits, target, gamma)
    if kind == "ce":
        return lambda logits, target: focal_loss(logits, target, 0.0)
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


@float32_ops
def negative_entropy(probs: Tensor) -> Tensor:
    """``H = Σ_k ȳ_k log ȳ_k`` of the batch-mean distribution ``ȳ = mean_b probs[b]``.

    This is MAXL's regulariser against a collapsed generator (Liu et al. 2019, Eq. 4):
    minimising ``λ·H`` spreads the generated labels over the auxiliary classes. Classes with
    ``ȳ_k = 0`` (no sample of the batch can take them) contribute 0, with a zero gradient.

    Args:
        probs: float ``[B, K]`` rows of probabilities.

    Returns:
        Scalar tensor in ``[−log K, 0]``.
    """
    mean = probs.mean(dim=0)  # [K]
    tiny = torch.finfo(mean.dtype).tiny
    return torch.where(mean > 0, mean * mean.clamp_min(tiny).log(), 0.0).sum()


@float32_ops
def mean_entropy(probs: Tensor) -> Tensor:
    """``mean_b H(y_b) = mean_b −Σ_k y_bk log y_bk``, the mean entropy of the rows.

    With the batch-mean term of :func:`negative_entropy` it makes the mutual information
    between images and labels, ``I = H(ȳ) − mean_b H(y_b)`` (Bridle, Heading, MacKay, NIPS 1991;
    Krause, Perona, Gomes, NIPS 2010): maximising it asks for labels that are sharp per image
    and balanced over the batch. Entries equal to 0 (outside an image's ψ block) contribute 0,
    with a zero gradient.

    Args:
        probs: float ``[B, K]`` rows of probabilities.

    Returns:
        Scalar tensor in ``[0, log K]`` (nats).
    """
    tiny = torch.finfo(probs.dtype).tiny
    return -torch.where(probs > 0, probs * probs.clamp_min(tiny).log(), 0.0).sum(dim=1).mean()


@float32_ops
def paired_mutual_information(p: Tensor, q: Tensor) -> Tensor:
    """``I(z; z')`` of the labels of two views of the same images (IIC, Ji, Henriques, Vedaldi,
    ICCV 2019, Eq. 3): with the joint ``P = sym(mean_b p_b q_bᵀ)`` and its marginals,
    ``I = Σ_kl P_kl (log P_kl − log P_k − log P_l)``. High when each image's two views get the
    same, sharp label and the labels are balanced; so a label follows what the augmentation keeps.

    Args:
        p, q: float ``[B, K]`` rows of probabilities, row b of both from the same image.

    Returns:
        Scalar tensor in ``[0, log K]`` (nats).
    """
    joint = p.t() @ q / len(p)  # [K, K]
    joint = (joint + joint.t()) / 2
    eps = torch.finfo(joint.dtype).eps
    joint = joint.clamp_min(eps)  # IIC's ε: log of empty cells stays finite
    marginal_k, marginal_l = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    return (joint * (joint.log() - marginal_k.log() - marginal_l.log())).sum()


def max_negative_entropy(num_classes: int) -> float:
    """``−log K``: the value of :func:`negative_entropy` for a uniform ȳ."""
    return -math.log(num_classes)
