"""Label-usage diagnostics of the label-generation network, per epoch.

A MAXL generator can fail in two quiet ways (users of the reference code met both, e.g.
lorenmt/maxl issue #5): it *collapses*, giving every image of a primary class the same
auxiliary label, or its soft labels *stay uniform*, so the auxiliary head learns nothing.
Neither shows in the primary accuracy until late. :class:`LabelUsage` accumulates, over the
generator's soft labels of the batches the multi-task network learns from in one epoch (the
distribution, also where it learns from per-image scaled or hard Gumbel samples of it),

* the entropy of the batch-mean generated distribution, ``−Σ_k ȳ_k log ȳ_k`` with
  ``ȳ = mean_b ŷ_b`` (the quantity the generator's entropy term maximises, Liu et al. 2019,
  Eq. 4), averaged over the batches;
* the fraction of the ``sum(ψ)`` auxiliary classes that were the argmax of at least one image;
* the mean max-probability of the soft labels, and its *sharpness*: the max-probability
  rescaled so that a uniform label over the image's block gives 0 and a one-hot label 1;

and :func:`label_usage_warnings` turns a record into warnings.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933, Sec. 3.3 (the collapsing-class problem and the entropy term).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from maxl.core.hierarchy import Hierarchy
from maxl.core.losses import negative_entropy

__all__ = [
    "LabelUsage",
    "UsageThresholds",
    "GeneratorLabelWarning",
    "label_usage_warnings",
    "warn_label_usage",
    "nmi_within_primary",
]


class GeneratorLabelWarning(UserWarning):
    """The generated auxiliary labels collapsed onto few classes or stayed uniform."""


@dataclass(frozen=True)
class UsageThresholds:
    """When :func:`label_usage_warnings` warns.

    Attributes:
        min_used_fraction: collapse when fewer than this fraction of the auxiliary classes was
            the argmax of any training image in the epoch ("most classes unused").
        min_sharpness: uniform when the mean sharpness (0 = uniform, 1 = one-hot) is below this.
        first_epoch: no warning before this epoch: in the reference schedule the labels of
            epoch 1 come from the untrained generator, whose random features already send most
            images of a class to one or two auxiliary classes.
    """

    min_used_fraction: float = 0.5
    min_sharpness: float = 0.05
    first_epoch: int = 2


class LabelUsage:
    """Accumulate usage statistics of generated soft labels over an epoch.

    Args:
        psi: the hierarchy ψ of the generator.

    Example:
        >>> usage = LabelUsage([2, 3])
        >>> usage.update(soft_labels, primary)  # once per batch
        >>> record.update(usage.summary())
    """

    def __init__(self, psi: Hierarchy | Sequence[int]):
        self.hierarchy = psi if isinstance(psi, Hierarchy) else Hierarchy(psi)
        self.counts = torch.zeros(self.hierarchy.num_aux, dtype=torch.int64)  # argmax count per class
        self.entropy_sum = self.max_prob_sum = self.sharpness_sum = 0.0
        self.batches = self.images = self.sharpness_images = 0
        self.pairs: list[Tensor] = []  # [B, 3] (primary, generated argmax, human label) per batch

    @torch.no_grad()
    def update(self, soft_labels: Tensor, primary: Tensor, human: Tensor | None = None) -> None:
        """Add one batch.

        Args:
            soft_labels: float ``[B, sum(ψ)]``, zero outside each image's block; rows are
                normalised to sum 1 (a per-image weighted target's row sums to its weight).
            primary: int64 ``[B]``, the primary labels that chose the blocks.
            human: int64 ``[B]``, the images' human auxiliary labels if the data set has them
                (for ``label_nmi_human``).

        Raises:
            ValueError: shapes that do not fit ψ.
        """
        k = self.hierarchy.num_aux
        if soft_labels.dim() != 2 or soft_labels.shape[1] != k or primary.shape != soft_labels.shape[:1]:
            raise ValueError(
                f"expected soft labels [B, {k}] and primary labels [B], got {tuple(soft_labels.shape)} "
                f"and {tuple(primary.shape)}"
            )
        p = soft_labels.detach().to("cpu", torch.float64)
        sums = p.sum(1, keepdim=True)
        if (sums - 1).abs().max() > 1e-3:  # weighted targets (WAMAL): their labels
            p = p / sums
        primary = primary.detach().cpu()
        self.entropy_sum += -float(negative_entropy(p))  # entropy of ȳ
        self.batches += 1
        self.counts += torch.bincount(p.argmax(1), minlength=k)
        max_prob = p.max(1).values  # [B]
        self.max_prob_sum += float(max_prob.sum())
        self.images += len(p)
        psi = torch.tensor(self.hierarchy.psi, dtype=torch.float64)[primary]  # ψ of each image's block
        has_choice = psi > 1  # a block of one class is always one-hot: no information
        uniform = 1.0 / psi[has_choice]
        self.sharpness_sum += float(((max_prob[has_choice] - uniform) / (1 - uniform)).sum())
        self.sharpness_images += int(has_choice.sum())
        if human is not None:
            self.pairs.append(torch.stack([primary, p.argmax(1), human.detach().cpu()], 1))

    _STATE = (
        "counts",
        "entropy_sum",
        "max_prob_sum",
        "sharpness_sum",
        "batches",
        "images",
        "sharpness_images",
        "pairs",
    )

    def state_dict(self) -> dict:
        """The statistics so far (tensors, numbers, a list of tensors), for a step-level checkpoint."""
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            setattr(self, k, state[k])
        self.pairs = list(self.pairs)

    def summary(self) -> dict:
        """The epoch's statistics, ready for ``metrics.jsonl``.

        Returns:
            ``label_entropy`` (nats, mean over batches of H(ȳ); at most log sum(ψ)),
            ``label_used_fraction`` (fraction of auxiliary classes that were some image's argmax),
            ``label_max_prob`` (mean over images of max_k ŷ_k), ``label_sharpness`` (mean of
            (max_k ŷ_k − 1/ψ_i) / (1 − 1/ψ_i) over images of classes with ψ_i > 1; NaN if none),
            ``label_counts`` (argmax count of each auxiliary class, a list of sum(ψ) ints), and
            with human labels ``label_nmi_human``: the normalised mutual information of the
            generated argmax with the human auxiliary label inside each primary class, averaged
            over the classes weighted by their images (0: unrelated, 1: the same partition).
        """
        nan = math.nan
        extra = {"label_nmi_human": nmi_within_primary(torch.cat(self.pairs))} if self.pairs else {}
        return {
            **extra,
            "label_entropy": self.entropy_sum / self.batches if self.batches else nan,
            "label_used_fraction": float((self.counts > 0).double().mean()),
            "label_max_prob": self.max_prob_sum / self.images if self.images else nan,
            "label_sharpness": self.sharpness_sum / self.sharpness_images if self.sharpness_images else nan,
            "label_counts": self.counts.tolist(),
        }


def nmi_within_primary(pairs: Tensor) -> float:
    """Weighted mean over primary classes of NMI(generated, human) of their images.

    Args:
        pairs: int64 ``[N, 3]`` rows (primary label, generated label, human label).

    References:
        Strehl, Ghosh. "Cluster Ensembles". JMLR 2002 (NMI); scikit-learn's implementation.
    """
    from sklearn.metrics import normalized_mutual_info_score

    total, weighted = 0, 0.0
    for c in pairs[:, 0].unique():
        rows = pairs[pairs[:, 0] == c]
        weighted += len(rows) * normalized_mutual_info_score(rows[:, 2].numpy(), rows[:, 1].numpy())
        total += len(rows)
    return weighted / total if total else math.nan


def label_usage_findings(
    record: dict,
    psi: Hierarchy | Sequence[int] | None = None,
    thresholds: UsageThresholds = UsageThresholds(),
    first_record: dict | None = None,
) -> list[tuple[str, str]]:
    """Problems of one epoch's labels as ``(kind, message)`` pairs; kind is ``"collapsed"`` or
    ``"uniform"``. See :func:`label_usage_warnings` for the arguments."""
    if "label_used_fraction" not in record or record.get("epoch", thresholds.first_epoch) < thresholds.first_epoch:
        return []
    findings = []
    epoch = record.get("epoch", "?")
    used = record["label_used_fraction"]
    if used < thresholds.min_used_fraction:
        counts = record.get("label_counts")
        detail = ""
        if counts is not None and psi is not None:
            hierarchy = psi if isinstance(psi, Hierarchy) else Hierarchy(psi)
            single = [
                i
                for i, (s, k) in enumerate(zip(hierarchy.starts, hierarchy.psi))
                if k > 1 and sum(c > 0 for c in counts[s : s + k]) <= 1
            ]
            if single:
                detail = f"; primary classes {single} use one auxiliary class only"
        first_used = (first_record or {}).get("label_used_fraction")
        if first_used is not None and first_used <= used:  # as concentrated from the start
            detail += (
                f"; already at epoch 1 ({first_used:.0%}): the untrained generator's labels were this "
                "concentrated and training has not spread them"
            )
        findings.append(
            (
                "collapsed",
                f"epoch {epoch}: generator collapsed: only {used:.0%} of the auxiliary classes were the argmax of any "
                f"training image (warning below {thresholds.min_used_fraction:.0%}){detail}; label sharpness "
                f"{record.get('label_sharpness', math.nan):.3f} (0 = uniform, 1 = one-hot). The entropy term "
                f"(--entropy-weight) should spread the labels; check it and the generator's learning rate (--gen-lr).",
            )
        )
    sharpness = record.get("label_sharpness", math.nan)
    if sharpness < thresholds.min_sharpness:  # False for NaN
        findings.append(
            (
                "uniform",
                f"epoch {epoch}: generated labels stay near uniform: sharpness {sharpness:.3f} (0 = uniform, "
                f"1 = one-hot; warning below {thresholds.min_sharpness}), mean max-probability "
                f"{record.get('label_max_prob', math.nan):.3f}. The auxiliary task carries little information; check "
                f"that the generator learns (meta_outer_loss, --gen-lr).",
            )
        )
    return findings


def label_usage_warnings(
    record: dict,
    psi: Hierarchy | Sequence[int] | None = None,
    thresholds: UsageThresholds = UsageThresholds(),
    first_record: dict | None = None,
) -> list[str]:
    """Warnings for one epoch's record (a ``metrics.jsonl`` line with :meth:`LabelUsage.summary`).

    Args:
        record: needs ``epoch``, ``label_used_fraction``, ``label_sharpness``; records without
            label statistics (methods other than ``maxl``) give no warning.
        psi: the hierarchy, to name the primary classes whose block collapsed to one class.
        thresholds: :class:`UsageThresholds`.
        first_record: the run's first epoch; a collapse whose argmax usage was no better
            then is reported as present from the start, not as a collapse during training.

    Returns:
        Human-readable messages, empty for healthy labels.
    """
    return [message for _, message in label_usage_findings(record, psi, thresholds, first_record)]


def warn_label_usage(
    record: dict,
    psi: Hierarchy | Sequence[int] | None = None,
    thresholds: UsageThresholds = UsageThresholds(),
    already_warned: set[str] | None = None,
    first_record: dict | None = None,
) -> list[str]:
    """Store the messages of :func:`label_usage_warnings` in ``record["label_warnings"]`` (so
    that every epoch's reach ``metrics.jsonl``) and issue them as :class:`GeneratorLabelWarning`
    (printed to stderr by Python's default warning filter).

    Args:
        already_warned: kinds (``"collapsed"``, ``"uniform"``) shown before in this run; a kind in
            it is recorded but not issued again, and each issued kind is added to it. A trainer
            passes one set per run, so a lasting problem is shown once, not every epoch.
            ``None``: issue every message.
        first_record: see :func:`label_usage_warnings`.

    Returns:
        The messages (issued or not).
    """
    findings = label_usage_findings(record, psi, thresholds, first_record)
    messages = [message for _, message in findings]
    if messages:
        record["label_warnings"] = messages
    for kind, message in findings:
        if already_warned is None:
            warnings.warn(message, GeneratorLabelWarning, stacklevel=2)
        elif kind not in already_warned:
            already_warned.add(kind)
            warnings.warn(
                f"{message} (Shown once per run; every epoch's label warnings are in metrics.jsonl.)",
                GeneratorLabelWarning,
                stacklevel=2,
            )
    return messages
