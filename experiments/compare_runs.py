"""Compare two run folders: are their metrics and weights the same?

    python -m experiments.compare_runs RUN_A RUN_B [RUN_A2 RUN_B2 ...]

For each pair prints the number of epochs, whether ``metrics.jsonl`` is identical apart from
its wall-time fields (``*_time_s``), the largest absolute difference of any metric, the largest
absolute difference of any weight in ``checkpoint.pt`` (both networks) and the final test
accuracy of both. Reads only the run folders' files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from maxl.analysis.run import read_metrics


def records(run: Path) -> list[dict]:
    """The run's metrics.jsonl records without their wall times (``*_time_s``); a torn last
    line is skipped with a warning.

    Raises:
        ValueError: a corrupt metrics.jsonl.
    """
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in read_metrics(run)]


def weight_gap(a: Path, b: Path) -> float:
    sa, sb = (torch.load(r / "checkpoint.pt", weights_only=True) for r in (a, b))
    gap = 0.0
    for part in ("net", "generator"):
        if part in sa:
            for k, v in sa[part].items():
                gap = max(gap, (v.double() - sb[part][k].double()).abs().max().item())
    return gap


def compare(a: Path, b: Path) -> dict:
    ra, rb = records(a), records(b)
    metric_gap = max((abs(x[k] - y[k]) for x, y in zip(ra, rb) for k in x if isinstance(x[k], float)), default=0.0)
    return {
        "a": str(a),
        "b": str(b),
        "epochs": (len(ra), len(rb)),
        "metrics_identical": ra == rb,
        "max_metric_gap": metric_gap,
        "max_weight_gap": weight_gap(a, b),
        "final_test_acc": (ra[-1]["test_acc"], rb[-1]["test_acc"]),
    }


def main(argv: list[str]) -> None:
    if len(argv) < 2 or len(argv) % 2:
        raise SystemExit(__doc__)
    for a, b in zip(argv[::2], argv[1::2]):
        print(json.dumps(compare(Path(a), Path(b))))


if __name__ == "__main__":
    main(sys.argv[1:])
