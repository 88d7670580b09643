"""Agreement of generated auxiliary labels with human labels, within each primary class.

The hierarchy mask lets an image of primary class *i* take only an auxiliary label of its
own block, so across primary classes any labelling agrees with the human hierarchy
trivially. The informative question is within a class: do the generator's ψ[i] clusters of,
say, the *even* digits follow the digits 0, 2, 4, 6, 8? This module answers it with three
scores computed separately for each primary class:

* normalised mutual information (NMI, arithmetic normalisation; Strehl & Ghosh 2002),
* adjusted Rand index (ARI; Hubert & Arabie 1985), both from scikit-learn,
* purity (Manning, Raghavan, Schütze 2008, Sec. 16.3): each generated cluster is credited
  with its most frequent human class, ``purity = (1/N) Σ_c max_h n_ch``.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933, Sec. 5 (visualisations of the generated labels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from maxl.core.hierarchy import Hierarchy

__all__ = ["contingency_table", "purity", "ClassAgreement", "agreement_within_primary", "mean_agreement"]


def _as_labels(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D array of integer labels, got dtype {array.dtype}, shape {array.shape}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be >= 0, got {int(array.min())}")
    return array.astype(np.int64)


def contingency_table(generated, human, num_generated: int | None = None, num_human: int | None = None) -> np.ndarray:
    """Counts ``n[c, h]`` of images with generated label ``c`` and human label ``h``.

    Args:
        generated: int ``[N]``, generated (cluster) labels in ``[0, num_generated)``.
        human: int ``[N]``, human labels in ``[0, num_human)``.
        num_generated, num_human: table size; default ``max + 1`` of the labels. Rows and
            columns of labels that never occur are kept (as zeros).

    Returns:
        int64 ``[num_generated, num_human]``.

    Raises:
        ValueError: lengths differ, labels negative, non-integer or beyond the given size.
    """
    generated, human = _as_labels(generated, "generated"), _as_labels(human, "human")
    if len(generated) != len(human):
        raise ValueError(f"generated and human labels differ in length: {len(generated)} vs {len(human)}")
    rows = num_generated if num_generated is not None else int(generated.max(initial=-1)) + 1
    cols = num_human if num_human is not None else int(human.max(initial=-1)) + 1
    if generated.size and (generated.max() >= rows or human.max() >= cols):
        raise ValueError(
            f"labels exceed the table size {rows} x {cols}: max generated {generated.max()}, max human {human.max()}"
        )
    table = np.zeros((rows, cols), dtype=np.int64)
    np.add.at(table, (generated, human), 1)
    return table


def purity(generated, human) -> float:
    """Purity of the generated clusters with respect to the human classes.

    ``purity = (1/N) Σ_c max_h n_ch``: 1 when every generated cluster holds one human class
    only; for ``N`` images it is at least the share of the largest human class.

    Args:
        generated: int ``[N]``, generated labels.
        human: int ``[N]``, human labels.

    Returns:
        Purity in ``(0, 1]``; NaN for ``N = 0``.
    """
    table = contingency_table(generated, human)
    total = table.sum()
    return float(table.max(axis=1).sum() / total) if total else math.nan


@dataclass
class ClassAgreement:
    """Agreement inside one primary class.

    Attributes:
        primary: the primary class.
        num_images: test images of this class.
        nmi, ari, purity: the scores; NMI and ARI are NaN when the human labels of the class
            take fewer than two values (nothing to agree with).
        chance_purity: purity of the same generated labels randomly permuted among the images
            (mean of ``permutations`` shuffles): what purity alone gives for this cluster count.
        table: int64 ``[ψ_gen[i], ψ_human[i]]`` contingency table, rows the class's generated
            auxiliary labels, columns its human auxiliary labels, both in block order.
    """

    primary: int
    num_images: int
    nmi: float
    ari: float
    purity: float
    chance_purity: float
    table: np.ndarray

    def to_dict(self) -> dict:
        out = asdict(self)
        out["table"] = self.table.tolist()
        return out


def agreement_within_primary(
    primary,
    generated,
    human,
    generated_psi: Hierarchy | Sequence[int],
    human_psi: Hierarchy | Sequence[int],
    permutations: int = 10,
    seed: int = 0,
) -> list[ClassAgreement]:
    """NMI, ARI and purity between generated and human auxiliary labels, per primary class.

    Args:
        primary: int ``[N]``, primary labels.
        generated: int ``[N]``, generated auxiliary labels in block order (argmax of the
            generator's soft labels), each inside its image's block of ``generated_psi``.
        human: int ``[N]``, human auxiliary labels in block order of ``human_psi``.
        generated_psi, human_psi: the two hierarchies; they must have the same primary classes
            but may give them different numbers of auxiliary classes.
        permutations: shuffles for :attr:`ClassAgreement.chance_purity`.
        seed: seed of the shuffles.

    Returns:
        One :class:`ClassAgreement` per primary class that has test images, in class order.

    Raises:
        ValueError: lengths differ, the hierarchies have different primary classes, or a label
            lies outside its image's block.
    """
    gen_h = generated_psi if isinstance(generated_psi, Hierarchy) else Hierarchy(generated_psi)
    hum_h = human_psi if isinstance(human_psi, Hierarchy) else Hierarchy(human_psi)
    if gen_h.num_primary != hum_h.num_primary:
        raise ValueError(
            f"the generated hierarchy has {gen_h.num_primary} primary classes, the human one {hum_h.num_primary}"
        )
    primary = _as_labels(primary, "primary")
    generated, human = _as_labels(generated, "generated"), _as_labels(human, "human")
    if not len(primary) == len(generated) == len(human):
        raise ValueError(
            f"primary, generated and human labels differ in length: {len(primary)}, {len(generated)}, {len(human)}"
        )
    rng = np.random.default_rng(seed)
    results = []
    for i in range(gen_h.num_primary):
        members = primary == i
        if not members.any():
            continue
        # block-local labels 0 .. ψ[i]-1
        g = generated[members] - gen_h.starts[i]
        h = human[members] - hum_h.starts[i]
        for name, labels, k in (("generated", g, gen_h.psi[i]), ("human", h, hum_h.psi[i])):
            if labels.min() < 0 or labels.max() >= k:
                raise ValueError(
                    f"a {name} auxiliary label of primary class {i} lies outside its block "
                    f"(block-local label {int(labels.min() if labels.min() < 0 else labels.max())}, "
                    f"block size {k})"
                )
        informative = len(np.unique(h)) >= 2
        results.append(
            ClassAgreement(
                primary=i,
                num_images=int(members.sum()),
                nmi=float(normalized_mutual_info_score(h, g)) if informative else math.nan,
                ari=float(adjusted_rand_score(h, g)) if informative else math.nan,
                purity=purity(g, h),
                chance_purity=float(np.mean([purity(rng.permutation(g), h) for _ in range(permutations)])),
                table=contingency_table(g, h, gen_h.psi[i], hum_h.psi[i]),
            )
        )
    return results


def mean_agreement(results: Sequence[ClassAgreement]) -> dict[str, float]:
    """Image-weighted means of the per-class scores (classes with NaN scores left out of that score).

    Returns:
        ``{"nmi", "ari", "purity", "chance_purity"}``; NaN where no class has a value.
    """
    out = {}
    for key in ("nmi", "ari", "purity", "chance_purity"):
        pairs = [(getattr(r, key), r.num_images) for r in results if not math.isnan(getattr(r, key))]
        weight = sum(n for _, n in pairs)
        out[key] = sum(v * n for v, n in pairs) / weight if weight else math.nan
    return out
