"""experiments/label_signal.py: its statistics on matrices with known structure, and a run on digits."""

import json

import numpy as np
import pytest

from experiments.label_signal import block_statistics, main, reliability


def test_a_push_along_one_axis_has_rank_one_and_a_shared_push_is_all_shared():
    rng = np.random.default_rng(0)
    psi = [4, 3]
    y = np.array([0] * 50 + [1] * 40)
    grads = np.zeros((90, 7))
    axis = np.array([1.0, -1.0, 0.5, -0.5])
    grads[:50, :4] = rng.standard_normal((50, 1)) * axis  # class 0: one number per image
    grads[50:, 4:] = np.array([1.0, -0.5, -0.5])  # class 1: the same push for every image
    grads[50:, 4:] += 1e-9 * rng.standard_normal((40, 3))
    human = np.where(grads[:, 0] > 0, 1, 0)
    rows = block_statistics(grads, grads, y, human, psi, rng)
    zero, one = rows
    assert zero["top1"] == pytest.approx(1.0) and zero["eff_rank"] == pytest.approx(1.0, abs=1e-6)
    assert zero["null_top1"] < 0.7  # noise of that shape is not one-dimensional
    assert zero["nmi_signal"] == pytest.approx(1.0)  # argmin follows the sign, as the "human" label does
    assert one["shared"] == pytest.approx(1.0)


def test_reliability_is_one_for_the_same_push_and_near_zero_for_independent_noise():
    rng = np.random.default_rng(1)
    y = np.array([0] * 200 + [1] * 200)
    a = rng.standard_normal((400, 5))
    assert reliability(a, a, y, [2, 3]) == pytest.approx(1.0)
    assert abs(reliability(a, rng.standard_normal((400, 5)), y, [2, 3])) < 0.1


def test_a_run_on_digits_writes_its_table(tmp_path):
    out = tmp_path / "signal.json"
    main(
        [
            "--grid",
            "digits",
            "--data-root",
            str(tmp_path),
            "--epochs-at",
            "0",
            "1",
            "--batches",
            "2",
            "--horizons",
            "1",
            "3",
            "--outer-images",
            "64",
            "--neumann",
            "0",
            "2",
            "--neumann-step",
            "0.05",
            "0.01",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert [p["epoch"] for p in result["points"]] == [0, 1]
    for point in result["points"]:
        s = point["summary"]
        assert 0 <= s["shared"] <= 1 and 1 <= s["eff_rank"] <= 4 and -1 <= s["reliability"] <= 1
        assert 0 <= s["nmi_signal"] <= 1
        assert s["J_uniform"] > 0 and np.isfinite(s["h3_human_minus_random"]) and s["h3_human_minus_random_se"] >= 0
        assert s["neumann_step"] == 0.05 and s["s1_neumann_step"] == 0.01
        assert np.isfinite(s["n2_human_minus_random"]) and s["n2_human_minus_random_se"] > 0
        assert s["n0_growth"] == 1 and 0 < s["n2_growth"] < 1  # ‖(I − γH)² g‖ < ‖g‖ for a small step
        assert s["n0_human_minus_uniform"] != s["n2_human_minus_uniform"]  # the Hessian terms change the horizon
        # K = 0 does not depend on H: ΔJ_0 = −γ ⟨∇L_aux, ∇L_pri(x_o)⟩ scales with γ
        assert s["n0_human_minus_random"] == pytest.approx(5 * s["s1_n0_human_minus_random"], rel=1e-4)
    table = out.with_suffix(".md").read_text()
    assert "| epoch | α | val acc |" in table and table.count("| epoch | γ | K | human − random |") == 2
    main(["--plot", str(out), "--out", str(tmp_path / "signal.png")])
    assert (tmp_path / "signal.png").stat().st_size > 10_000
