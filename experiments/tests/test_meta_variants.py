"""experiments/meta_variants.py on a tiny digits grid: every variant runs with its own settings
and the report compares them with the reference schedule."""

import json

import pytest

from experiments import meta_variants
from maxl.train.overlays import dotted

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]  # experiments/tests/conftest.py


def tiny_grid(tmp_path):
    """The mnist grid's variants (maxl/grids/mnist.toml) on a tiny digits base."""
    lines = [
        'methods = ["single", "maxl"]',
        "seeds = [0]",
        "[base]",
        'preset = "paper"',
        'data.dataset = "digits"',
        'data.hierarchy = "even-odd"',
        "data.train_subset = 128",
        "data.test_subset = 64",
        "model.hidden = 16",
        "train.epochs = 2",
        "train.batch_size = 32",
        "train.lr = 0.05",
        "train.momentum = 0.9",
    ]
    for name, overlay in meta_variants.VARIANTS.items():
        lines.append(f"[variants.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in dotted(overlay).items()]
    path = tmp_path / "tiny.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_variants_run_with_their_settings_and_are_compared_with_the_reference(tmp_path):
    runs = tmp_path / "runs"
    assert (
        meta_variants.main(
            [
                "run",
                "--grid",
                str(tiny_grid(tmp_path)),
                "--data-root",
                str(tmp_path),
                "--out",
                str(runs),
                "--seeds",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    for variant, overlay in meta_variants.VARIANTS.items():
        method = overlay["train"]["method"]
        config = json.loads((runs / variant / method / "seed0" / "config.json").read_text())
        schedule, engine = config["generator"]["schedule"], config["train"].get("meta", {}).get("engine")
        if variant in ("maxl-fused-jvp", "maxl-every4"):
            assert (schedule, engine) == ("per-step", "jvp")
            assert config["generator"]["every"] == (4 if variant == "maxl-every4" else 1)
        elif variant == "maxl":
            assert (schedule, engine) == ("alternate", "func")
    prefix = tmp_path / "figs" / "variants"
    assert meta_variants.main(["report", "--runs", str(runs), "--prefix", str(prefix)]) == 0
    table = prefix.with_suffix(".md").read_text()
    for variant in meta_variants.VARIANTS:
        assert f"| {variant} | 0 |" in table
    assert "maxl − method" in table and prefix.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
