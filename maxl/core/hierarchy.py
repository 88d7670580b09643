"""The hierarchy ψ and the hierarchy-masked softmax of MAXL.

The hierarchy ψ gives primary class ``i`` its own block of ``ψ[i]`` auxiliary classes;
the blocks lie side by side, so there are ``sum(ψ)`` auxiliary classes and block ``i``
covers columns ``sum(ψ[:i]) .. sum(ψ[:i+1]) - 1``. A sample of primary class ``i`` may
only take an auxiliary label from block ``i``.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933, Sec. 3.2 (the mask M and ``softmax(M ⊙ ŷ)``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from maxl.core.precision import float32_ops

__all__ = ["Hierarchy", "masked_softmax", "masked_log_softmax", "validate_psi"]


def validate_psi(psi: Sequence[int]) -> tuple[int, ...]:
    """Check a hierarchy ψ and return it as a tuple of ints.

    Args:
        psi: one positive int per primary class, the number of auxiliary classes it owns.

    Returns:
        ``tuple(psi)``.

    Raises:
        ValueError: ψ is empty, or an entry is not an integer, or is < 1.
    """
    if isinstance(psi, (str, bytes)) or not isinstance(psi, Sequence):
        raise ValueError(f"psi must be a sequence of positive ints, got {psi!r}")
    if len(psi) == 0:
        raise ValueError("psi is empty: it needs one entry (>= 1) per primary class")
    out: list[int] = []
    for i, k in enumerate(psi):
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise ValueError(f"psi[{i}] = {k!r} is not an integer; psi = {list(psi)!r}")
        if k < 1:
            raise ValueError(
                f"psi[{i}] = {k} must be >= 1 (every primary class owns at least one "
                f"auxiliary class); psi = {list(psi)!r}"
            )
        out.append(int(k))
    return tuple(out)


class Hierarchy:
    """A validated hierarchy ψ with its block layout and mask.

    Args:
        psi: ψ, one positive int per primary class.

    Raises:
        ValueError: for a bad ψ (see :func:`validate_psi`).

    Example:
        >>> h = Hierarchy([2, 2, 1])
        >>> h.mask.int().tolist()
        [[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]
    """

    def __init__(self, psi: Sequence[int]):
        self.psi = validate_psi(psi)
        self.num_primary = len(self.psi)
        self.num_aux = sum(self.psi)
        starts = [0]
        for k in self.psi[:-1]:
            starts.append(starts[-1] + k)
        self.starts = tuple(starts)  # block i starts at column starts[i]
        mask = torch.zeros(self.num_primary, self.num_aux, dtype=torch.bool)
        for i, (s, k) in enumerate(zip(self.starts, self.psi)):
            mask[i, s : s + k] = True
        self.mask = mask  # bool [P, K]: row i marks the block of primary class i
        # primary class owning each auxiliary class, int64 [K]
        self.parent = torch.repeat_interleave(torch.arange(self.num_primary), torch.tensor(self.psi))

    def __repr__(self) -> str:
        return f"Hierarchy(psi={list(self.psi)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hierarchy) and other.psi == self.psi

    def check_labels(self, primary: Tensor) -> None:
        """Raise ValueError unless ``primary`` holds integer labels in ``[0, len(ψ))``."""
        if primary.dtype.is_floating_point or primary.dtype == torch.bool:
            raise ValueError(f"primary labels must be integers, got dtype {primary.dtype}")
        if primary.numel() and (primary.min() < 0 or primary.max() >= self.num_primary):
            bad = primary[(primary < 0) | (primary >= self.num_primary)][0].item()
            raise ValueError(
                f"primary label {bad} is out of range: psi has {self.num_primary} primary "
                f"classes, so labels must lie in [0, {self.num_primary - 1}]"
            )

    def check_aux_labels(self, aux: Tensor, primary: Tensor) -> None:
        """Raise ValueError unless every fixed auxiliary label lies in its sample's ψ block.

        Args:
            aux: int64 ``[N]`` auxiliary labels, each in ``[0, sum(ψ))``.
            primary: int64 ``[N]`` primary labels of the same samples.

        Raises:
            ValueError: shapes or dtypes differ from the above, a primary label is out of
                range, or an auxiliary label lies outside the block of its primary class
                (the message names the first such sample).
        """
        self.check_labels(primary)
        if aux.dtype.is_floating_point or aux.dtype == torch.bool or aux.shape != primary.shape:
            raise ValueError(
                f"auxiliary labels must be integers of shape {tuple(primary.shape)} (one per sample), "
                f"got {aux.dtype} {tuple(aux.shape)}"
            )
        starts = torch.tensor(self.starts, device=aux.device)[primary]  # [N] first column of each block
        ends = starts + torch.tensor(self.psi, device=aux.device)[primary]
        bad = ((aux < starts) | (aux >= ends)).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            p = int(primary[i])
            raise ValueError(
                f"auxiliary label {int(aux[i])} of sample {i} (primary class {p}) lies outside the "
                f"block of class {p}, which is [{int(starts[i])}, {int(ends[i])}) for psi = {list(self.psi)} "
                f"({len(bad)} of {len(aux)} samples are outside their block)"
            )

    def block_mask(self, primary: Tensor) -> Tensor:
        """The mask rows of a batch: bool ``[B, K]``, True inside each sample's block.

        Args:
            primary: int64 ``[B]`` primary labels.

        Raises:
            ValueError: a label is outside ``[0, len(ψ))``.
        """
        self.check_labels(primary)
        return self.mask.to(primary.device)[primary]

    def masked_softmax(self, logits: Tensor, primary: Tensor) -> Tensor:
        """See :func:`masked_softmax`."""
        return masked_softmax(logits, primary, self)

    def masked_log_softmax(self, logits: Tensor, primary: Tensor) -> Tensor:
        """See :func:`masked_log_softmax`."""
        return masked_log_softmax(logits, primary, self)


def _as_hierarchy(psi: Hierarchy | Sequence[int]) -> Hierarchy:
    return psi if isinstance(psi, Hierarchy) else Hierarchy(psi)


@float32_ops
def masked_log_softmax(logits: Tensor, primary: Tensor, psi: Hierarchy | Sequence[int]) -> Tensor:
    """Log of the hierarchy-masked softmax; ``-inf`` outside each sample's block.

    Numerically stable: the entries outside the block are set to ``-inf`` *before* the
    log-sum-exp, so no ``exp`` of a large logit is ever formed (the reference code's
    ``exp(x) * mask / sum`` overflows for logits above ~88 in float32).

    Args:
        logits: float ``[B, K]`` generator logits, ``K = sum(ψ)``.
        primary: int64 ``[B]`` ground-truth primary labels.
        psi: the hierarchy ψ (a :class:`Hierarchy` or a list of ints).

    Returns:
        float ``[B, K]``: ``log softmax`` over each sample's block, ``-inf`` elsewhere.

    Raises:
        ValueError: bad ψ, ``K != sum(ψ)``, a batch size mismatch or a label out of range.
    """
    h = _as_hierarchy(psi)
    if logits.ndim != 2 or logits.shape[1] != h.num_aux:
        raise ValueError(f"logits must have shape [B, sum(psi)] = [B, {h.num_aux}], got {tuple(logits.shape)}")
    if primary.shape != logits.shape[:1]:
        raise ValueError(f"primary labels must have shape [B] = [{logits.shape[0]}], got {tuple(primary.shape)}")
    mask = h.block_mask(primary)
    return torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=1)


def masked_softmax(logits: Tensor, primary: Tensor, psi: Hierarchy | Sequence[int]) -> Tensor:
    """Hierarchy-masked softmax: MAXL's generated auxiliary label distribution.

    ``p[b, k] = exp(x[b, k]) / Σ_{j ∈ block(y_b)} exp(x[b, j])`` for ``k`` in the block of
    the sample's primary class ``y_b`` and exactly ``0`` elsewhere (Liu et al. 2019, Sec. 3.2,
    ``softmax(M ⊙ ŷ)`` with the mask applied as ``-inf``).

    Args:
        logits: float ``[B, K]`` generator logits, ``K = sum(ψ)``.
        primary: int64 ``[B]`` ground-truth primary labels.
        psi: the hierarchy ψ (a :class:`Hierarchy` or a list of ints).

    Returns:
        float ``[B, K]``, each row a probability distribution supported on its block.

    Raises:
        ValueError: bad ψ, ``K != sum(ψ)``, a batch size mismatch or a label out of range.
    """
    return masked_log_softmax(logits, primary, psi).exp()
