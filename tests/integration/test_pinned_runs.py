"""Behaviour pinned across the one-step-path redesign (issue 12).

Before the trainer, the run builder and the package layout were redesigned, every method was
run for two deterministic epochs on the embedded digits data through the command line, and its
per-epoch metrics and final weights were stored in ``pinned_runs.golden`` (``python -m
tests.integration.test_pinned_runs --write`` with the code of that time). The redesigned code
must reproduce them bit for bit on a CPU with one thread: the redesign moves code, it does not
change what it computes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from maxl.cli.commands import main

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).with_name("pinned_runs.golden")

COMMON = ["--dataset", "digits", "--hierarchy", "even-odd", "--epochs", "2", "--batch-size", "32", "--lr", "0.05",
          "--momentum", "0.9", "--hidden", "32", "--train-subset", "320", "--test-subset", "200", "--seed", "0",
          "--device", "cpu", "--no-progress", "--ae-epochs", "1"]

PINNED = {
    "single": ["--method", "single"],
    "human": ["--method", "human"],
    "random": ["--method", "random"],
    "kmeans": ["--method", "kmeans"],
    "maxl-alternate": ["--method", "maxl"],
    "maxl-per-step-fused": ["--method", "maxl", "--schedule", "per-step"],
    "maxl-rotation": ["--method", "maxl", "--aux", "rotation"],
}

VOLATILE = {"epoch_time_s"}  # wall-clock measurements

# Records the old code got wrong, so that the redesign differs on purpose: the old trainer's
# learner path (auxiliary tasks beside MAXL) never updated the label-usage statistics, whose
# records were NaN / zero counts; the one step path records them as for every other MAXL run.
LABEL_USAGE = {"label_entropy", "label_used_fraction", "label_max_prob", "label_sharpness", "label_counts",
               "label_warnings"}
FIXED_IN_REDESIGN = {"maxl-rotation": LABEL_USAGE}
# Records added since (new diagnostics; the records that were there must not change).
ADDED_SINCE = {"label_nmi_human"}


def run_pinned(name: str, out: Path) -> dict:
    """Train the pinned run ``name`` into ``out``; its metrics and the networks' weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the golden values were made on one thread
    try:
        assert main(["train", *COMMON, *PINNED[name], "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    metrics = [{k: v for k, v in json.loads(line).items() if k not in VOLATILE}
               for line in (out / "metrics.jsonl").read_text().splitlines()]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    return {"metrics": metrics, "net": state["net"], "generator": state.get("generator")}


def _differences(expected, actual, where: str) -> list[str]:
    if isinstance(expected, dict):
        if set(expected) != set(actual):
            return [f"{where}: keys {sorted(set(expected) ^ set(actual))} differ"]
        return [d for k in expected for d in _differences(expected[k], actual[k], f"{where}.{k}")]
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return [f"{where}: length {len(expected)} != {len(actual)}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in _differences(e, a, f"{where}[{i}]")]
    if isinstance(expected, torch.Tensor):
        if expected.shape != actual.shape or not torch.equal(expected, actual):
            diff = (expected.double() - actual.double()).abs().max().item() if expected.shape == actual.shape else "shape"
            return [f"{where}: tensors differ (max abs {diff})"]
        return []
    if isinstance(expected, float) and math.isnan(expected) and isinstance(actual, float) and math.isnan(actual):
        return []
    return [] if expected == actual else [f"{where}: {expected!r} != {actual!r}"]


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_run_is_bit_identical_to_before_the_redesign(name, golden, tmp_path):
    actual = run_pinned(name, tmp_path / name)
    fixed = FIXED_IN_REDESIGN.get(name, set())
    expected = {**golden[name], "metrics": [{k: v for k, v in r.items() if k not in fixed} for r in golden[name]["metrics"]]}
    for record in actual["metrics"]:
        if fixed:  # now recorded: a real distribution of labels over the training images
            assert sum(record["label_counts"]) == 320 and 0 < record["label_used_fraction"] <= 1, record
    seen = {**actual, "metrics": [{k: v for k, v in r.items() if k not in fixed | ADDED_SINCE}
                                  for r in actual["metrics"]]}
    differences = _differences(expected, seen, name)
    assert not differences, "\n".join(differences[:20])


if __name__ == "__main__":  # python -m tests.integration.test_pinned_runs --write
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.integration.test_pinned_runs --write")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        values = {name: run_pinned(name, Path(tmp) / name) for name in PINNED}
    torch.save(values, GOLDEN)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
