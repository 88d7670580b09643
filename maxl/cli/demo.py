"""The end of ``maxl demo``: the MAXL run's ``report.html`` (:func:`maxl.analysis.visualise.visualise_run`,
the report of ``maxl visualise``) and one plain sentence on what its generated labels did."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["describe_generated_labels", "finish_demo"]

# Where the wording of describe_generated_labels changes (label_sharpness: 0 = uniform, 1 = one-hot).
UNIFORM_BELOW = 0.05  # the trainer's own "near uniform" warning threshold (UsageThresholds.min_sharpness)
LITTLE_BELOW = 0.25
ONE_HOT_FROM = 0.6
FEW_USED_BELOW = 0.5  # the trainer's collapse threshold (UsageThresholds.min_used_fraction)


def describe_generated_labels(record: dict) -> str:
    """One honest sentence on a MAXL run's generated labels, from its last ``metrics.jsonl``
    record: how peaked they are inside each primary class (``label_sharpness``), how many of
    the auxiliary classes are some training image's most probable label
    (``label_used_fraction``), their agreement with the human sub-classes where the data set
    has them (``label_nmi_human``), and what that means for the auxiliary task.

    Args:
        record: a ``metrics.jsonl`` record of a ``maxl`` run.

    Returns:
        The sentence, starting with "the generated labels" and without a final full stop.

    Raises:
        ValueError: the record has no label statistics (not a ``maxl`` run).
    """
    if "label_sharpness" not in record or "label_used_fraction" not in record:
        raise ValueError(
            "the metrics record has no label statistics (label_sharpness, label_used_fraction): not a maxl run"
        )
    sharpness, used = record["label_sharpness"], record["label_used_fraction"]
    if sharpness is None or math.isnan(sharpness):
        return (
            "the generated labels carry no information: every primary class has a single auxiliary class "
            "(psi of 1), so there is nothing to choose"
        )
    scale = f"sharpness {sharpness:.2f}; 0 = uniform, 1 = one-hot"
    if sharpness < UNIFORM_BELOW:
        shape = f"stayed uniform inside each primary class ({scale})"
    elif sharpness < LITTLE_BELOW:
        shape = f"stayed near uniform inside each primary class ({scale})"
    elif sharpness < ONE_HOT_FROM:
        shape = f"are soft inside each primary class ({scale})"
    else:
        shape = f"became nearly one-hot inside each primary class ({scale})"
    counts = record.get("label_counts")
    share = f"{used * 100:.0f} %"
    classes = (
        f"{sum(c > 0 for c in counts)} of the {len(counts)} auxiliary classes ({share})"
        if counts
        else f"{share} of the auxiliary classes"
    )
    usage = (
        f"only {classes} are any training image's most probable label"
        if used < FEW_USED_BELOW
        else f"{classes} are some training image's most probable label"
    )
    nmi = record.get("label_nmi_human")
    agreement = ""
    if nmi is not None and not math.isnan(nmi):
        agreement = f"; they agree with the human sub-classes at NMI {nmi:.2f} (0 = unrelated, 1 = the same grouping)"
    if sharpness < LITTLE_BELOW:
        verdict = "on this data MAXL's labels carry little information"
    elif used < FEW_USED_BELOW:
        verdict = (
            "the labels collapsed onto a few auxiliary classes per primary class, so the auxiliary task "
            "is little more than the primary one"
        )
    elif nmi is not None and not math.isnan(nmi):
        verdict = "the labels split each primary class into groups " + (
            "unrelated to the human ones"
            if nmi < 0.1
            else "close to the human ones"
            if nmi >= 0.5
            else "that partly follow the human ones"
        )
    else:
        verdict = (
            "the labels split each primary class into groups; whether the groups mean anything, only "
            "the label grids can tell"
        )
    return f"the generated labels {shape} and {usage}{agreement}: {verdict}"


def finish_demo(out: str | os.PathLike) -> Path:
    """Write ``OUT/maxl/report.html`` (the ``maxl visualise`` report, with ``OUT/single``
    beside it) and print what the generated labels did and where the report is.

    Returns:
        The report's path.

    Raises:
        FileNotFoundError: the runs' files are missing.
        ValueError: the MAXL run has no label statistics.
    """
    from maxl.analysis.run import read_metrics
    from maxl.analysis.visualise import visualise_run  # matplotlib, scikit-learn's manifold: only here

    out = Path(out)
    maxl_run, single_run = out / "maxl", out / "single"
    print(f"\nwriting the report of {maxl_run} (label grids, label usage, curves, embedding) ...", flush=True)
    result = visualise_run(maxl_run, against=single_run if (single_run / "config.json").is_file() else None)
    metrics = read_metrics(maxl_run)
    last = metrics[-1] if metrics else {}
    report = result["report"]
    epoch = last.get("epoch", len(metrics))
    print(f"after epoch {epoch} {describe_generated_labels(last)}; see {report}")
    print(f"report: {report}")
    return report
