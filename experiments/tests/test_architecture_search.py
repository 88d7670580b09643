"""experiments/architecture_search.py's ``time`` (on ResNet-20, a fake image folder, one round) and
``report --timing`` (on fabricated run folders): what the files hold, not how fast anything is."""

import json

import pytest

from experiments import architecture_search as search

pytestmark = pytest.mark.integration


def test_time_writes_steps_arch_steps_and_parameters_of_the_configs_asked(tmp_path, one_thread):
    out = tmp_path / "timing.json"
    argv = ["time", "--configs", "hard", "adashare-search", "adashare-derived"]
    assert search.main([*argv, "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["repeats"], result["warmup"], result["batch"], result["threads"]) == (1, 0, 100, 1)
    assert len(result["loadavg"]) == 3 and all(float(v) >= 0 for v in result["loadavg"])
    steps = result["steps"]
    assert list(steps) == ["hard", "adashare-search", "adashare-derived"]  # the script's order
    assert all(r["step_s"] > 0 for r in steps.values())
    # a policy step for the search only: hard sharing and a fixed policy have no architecture to update
    assert steps["adashare-search"]["arch_step_s"] > 0
    assert "arch_step_s" not in steps["hard"] and "arch_step_s" not in steps["adashare-derived"]
    assert steps["adashare-search"]["phase"] == "search" and steps["adashare-derived"]["phase"] == "fixed"
    # the derived policy skips the last stage: fewer parameters at inference than in training
    derived = steps["adashare-derived"]
    assert derived["inference_parameters"] < derived["parameters"]
    assert steps["hard"]["inference_parameters"] == steps["hard"]["parameters"]
    assert result["fixed"]["adashare-derived"] == search.TIMING_POLICY


def test_timing_edges_keep_all_but_the_edges_from_layer_0_above_it():
    from maxl.nn.architectures.mtl_nas import search_space

    edges = search_space(2, 10)
    kept = [int(v) for v in search.timing_edges().split(",")]
    assert len(kept) == len(edges) == 110 and sum(kept) == 110 - 18
    assert {e for e, k in zip(edges, kept) if not k} == {(t, i, 1 - t, 0) for t in (0, 1) for i in range(1, 10)}


def test_unknown_configs_are_refused_by_name(capsys):
    with pytest.raises(SystemExit) as stop:
        search.main(["time", "--configs", "hard", "adashare-derivd", "--out", "unused.json"])
    assert stop.value.code == 2 and "adashare-derivd" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        search.main(["run", "--data-root", "nowhere", "--configs", "cross_stitch"])
    assert "cross_stitch" in capsys.readouterr().err


def _fake_run(root, name, seed, final, epoch_s, setup=None):
    folder = root / name / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"setup_seconds": setup} if setup is not None else {}))
    (folder / "summary.json").write_text(json.dumps({"final_test_acc": final, "last5_mean_test_acc": final - 0.01}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch_time_s": epoch_s}) + "\n" for _ in range(5)))
    (folder / "command.txt").write_text(f"maxl train ... --out {folder}\n")


def _rows(table: str) -> dict[str, list[str]]:
    """``{architecture: cells}`` of the report's human-hierarchy rows."""
    rows = [line.strip("|").split(" | ") for line in table.splitlines() if line.startswith("| human |")]
    return {cells[1].strip(): [c.strip() for c in cells] for cells in rows}


@pytest.fixture
def runs(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    _fake_run(root, "hard", 0, 0.80, 100.0)
    _fake_run(root, "soft", 0, 0.82, 180.0)
    _fake_run(root, "adashare-search", 0, 0.78, 250.0)
    # the parameters come from the runs' checkpoints, which fabricated folders do not have
    monkeypatch.setattr(search, "_parameters", lambda folder: (1000, None))
    return root


def test_report_with_timing_adds_ms_per_step_ratio_to_hard_and_arch_step(runs, tmp_path):
    timing = tmp_path / "timing.json"
    steps = {
        "hard": {"step_s": 0.8, "parameters": 1000},
        "soft": {"step_s": 1.7, "parameters": 2000},
        "adashare-search": {"step_s": 1.9, "arch_step_s": 0.6, "parameters": 1036},
    }
    timing.write_text(json.dumps({"repeats": 3, "steps": steps}))
    figures = tmp_path / "figures"
    assert search.main(["report", "--runs", str(runs), "--figures", str(figures), "--timing", str(timing)]) == 0
    table = (figures / "architecture-search.md").read_text()
    head = next(line for line in table.splitlines() if line.startswith("| auxiliary labels"))
    columns = [c.strip() for c in head.strip("|").split(" | ")]
    assert columns[-3:] == ["ms / step", "× hard", "arch step ms"] and "s / epoch" in columns and "vs hard" in columns
    separator = table.splitlines()[table.splitlines().index(head) + 1]
    assert separator.count("---") == len(columns)
    rows = _rows(table)
    assert set(rows) == {"hard", "soft", "adashare-search"}
    at = {c: columns.index(c) for c in ("ms / step", "× hard", "arch step ms", "vs hard")}
    assert [rows["hard"][at[c]] for c in ("ms / step", "× hard", "arch step ms")] == ["800", "1.00", ""]
    assert [rows["soft"][at[c]] for c in ("ms / step", "× hard", "arch step ms")] == ["1700", f"{1.7 / 0.8:.2f}", ""]
    assert rows["soft"][at["× hard"]] == "2.12"
    assert [rows["adashare-search"][at[c]] for c in ("ms / step", "× hard", "arch step ms")] == [
        "1900",
        f"{1.9 / 0.8:.2f}",
        "600",
    ]
    assert rows["soft"][at["vs hard"]] == "1.80"  # the runs' own s / epoch ratio stays


def test_report_without_timing_keeps_its_columns(runs, tmp_path):
    figures = tmp_path / "figures"
    assert search.main(["report", "--runs", str(runs), "--figures", str(figures)]) == 0
    table = (figures / "architecture-search.md").read_text()
    assert "ms / step" not in table and "× hard" not in table
    rows = _rows(table)
    assert len(rows["soft"]) == 12 and rows["soft"][-3] == "1.80"


def test_recipe_cost_counts_searches_before_training_and_the_search_a_derived_run_came_from(runs, tmp_path):
    _fake_run(runs, "sparse", 0, 0.81, 120.0, setup={"sparse_masks": 400.0})
    _fake_run(runs, "adashare-derived", 0, 0.79, 60.0)
    _fake_run(runs, "maxl-hard", 0, 0.81, 300.0)  # MAXL's rows: their own hard sharing
    _fake_run(runs, "maxl-adashare-derived", 0, 0.80, 90.0)  # its search run missing: no recipe
    figures = tmp_path / "figures"
    assert search.main(["report", "--runs", str(runs), "--figures", str(figures)]) == 0
    table = (figures / "architecture-search.md").read_text()
    rows = _rows(table)
    hard = 5 * 100.0  # 5 epochs of 100 s
    assert rows["hard"][-2:] == ["500", "1.00"]
    assert rows["soft"][-2:] == [f"{5 * 180:.0f}", f"{5 * 180 / hard:.2f}"]
    assert rows["sparse"][-2:] == [f"{400 + 5 * 120:.0f}", f"{(400 + 5 * 120) / hard:.2f}"]
    recipe = 5 * 60 + 5 * 250  # the derived run and the search run it came from
    assert rows["adashare-derived"][-2:] == [f"{recipe:.0f}", f"{recipe / hard:.2f}"]
    maxl = {
        c[1].strip(): [x.strip() for x in c]
        for c in (line.strip("|").split(" | ") for line in table.splitlines() if line.startswith("| maxl |"))
    }
    assert maxl["hard"][-2:] == ["1500", "1.00"] and maxl["adashare-derived"][-2:] == ["—", "—"]


def test_parameters_show_the_range_where_the_seeds_derived_architectures_differ(runs, tmp_path, monkeypatch):
    for seed in (0, 1):
        _fake_run(runs, "mtl-nas-derived", seed, 0.8, 100.0)
        _fake_run(runs, "mtl-nas-search", seed, 0.7, 100.0)
    counts = {"mtl-nas-derived/seed0": (710_572, None), "mtl-nas-derived/seed1": (705_000, None)}
    monkeypatch.setattr(
        search, "_parameters", lambda folder: counts.get(f"{folder.parent.name}/{folder.name}", (1000, 900))
    )
    figures = tmp_path / "figures"
    assert search.main(["report", "--runs", str(runs), "--figures", str(figures)]) == 0
    rows = _rows((figures / "architecture-search.md").read_text())
    assert rows["mtl-nas-derived"][6:8] == ["705,000–710,572", "—"]
    assert rows["hard"][6:8] == ["1,000", "900"]  # the same count on every seed: one number
