"""experiments/meta_variants.py on a tiny digits grid: every variant runs with its own flags
and the report compares them with the reference schedule."""

import json

import pytest

from experiments import meta_variants
from experiments.harness import GridConfig

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py

TINY = GridConfig(
    name="tiny", description="tiny digits grid", dataset="digits", hierarchy="even-odd",
    methods=("single", "maxl"), seeds=(0,),
    train_args=("--epochs", "2", "--batch-size", "32", "--hidden", "16", "--train-subset", "128",
                "--test-subset", "64", "--lr", "0.05", "--momentum", "0.9"),
)


def test_variants_run_with_their_flags_and_are_compared_with_the_reference(tmp_path, monkeypatch):
    monkeypatch.setitem(meta_variants.CONFIGS, meta_variants.GRID, TINY)
    runs = tmp_path / "runs"
    assert meta_variants.main(["run", "--data-root", str(tmp_path), "--out", str(runs), "--seeds", "0",
                               "--device", "cpu"]) == 0
    for variant, (method, _) in meta_variants.VARIANTS.items():
        config = json.loads((runs / variant / method / "seed0" / "config.json").read_text())
        schedule, engine = config["train"]["schedule"], config["train"].get("meta", {}).get("engine")
        if variant in ("maxl-fused-jvp", "maxl-every4"):
            assert (schedule, engine) == ("per-step", "jvp")
            assert config["train"]["gen_every"] == (4 if variant == "maxl-every4" else 1)
        elif variant == "maxl":
            assert (schedule, engine) == ("alternate", "func")
    prefix = tmp_path / "figs" / "variants"
    assert meta_variants.main(["report", "--runs", str(runs), "--prefix", str(prefix)]) == 0
    table = prefix.with_suffix(".md").read_text()
    for variant in meta_variants.VARIANTS:
        assert f"| {variant} | 0 |" in table
    assert "maxl − method" in table and prefix.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
