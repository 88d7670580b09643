"""experiments/task_weights_report.py on hand-made run folders: means, paired differences, weights."""

import json
from pathlib import Path

from experiments.task_weights_report import report


def _run(folder: Path, val: float, test: float, **weights):
    folder.mkdir(parents=True)
    record = {"epoch": 1, "val_acc": val, "test_acc": test, "epoch_time_s": 10.0}
    record.update({f"train_weight_{k}": v for k, v in weights.items()})
    (folder / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    (folder / "summary.json").write_text("{}")


def _seeded_runs(root: Path, runs: dict[str, list[float]]):
    """One run folder per config and seed (seed = position), validation accuracy = test accuracy."""
    for config, accs in runs.items():
        for seed, a in enumerate(accs):
            _run(root / config / f"seed{seed}", a, a)


def test_report_pairs_the_seeds(tmp_path):
    for seed, (s, e, a) in enumerate([(0.30, 0.32, 0.35), (0.40, 0.41, 0.42)]):
        _run(tmp_path / "single" / f"seed{seed}", s, s)
        _run(tmp_path / "equal" / f"seed{seed}", e, e, primary=1.0, rotation=1.0)
        _run(tmp_path / "auto-lambda" / f"seed{seed}", a, a, primary=1.5, rotation=0.5 + seed)
    table = report(tmp_path)
    assert "| single | 2 | 35.00 ± 7.07 | 35.00 ± 7.07 | — | — | — | — | 10 |" in table
    # auto-lambda − single: +5, +2 -> +3.50 ± 2.12, SE 1.50; − equal: +3, +1 -> +2.00 ± 1.41 (SE 1.00)
    assert "+3.50 ± 2.12 (SE 1.50)" in table and "+2.00 ± 1.41 (SE 1.00)" in table
    assert "primary 1.50, rotation 1.00" in table


def test_report_lists_grid_configs_after_the_known_ones_with_validation_differences(tmp_path):
    for seed, (s, r, g) in enumerate([(0.50, 0.52, 0.55), (0.40, 0.43, 0.44)]):
        _run(tmp_path / "single" / f"seed{seed}", s, s)
        _run(tmp_path / "rotation-0.3" / f"seed{seed}", g, s, rotation=0.3)
        _run(tmp_path / "rotation" / f"seed{seed}", r, s)
    table = report(tmp_path, "30-epoch")
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == ["| config", "| single", "| rotation", "| rotation-0.3"]
    # rotation-0.3 − single on validation: +5, +4 -> +4.50 ± 0.71 (SE 0.50); on test: 0, 0
    row = next(line for line in table.splitlines() if line.startswith("| rotation-0.3 |"))
    assert "+4.50 ± 0.71 (SE 0.50)" in row and "+0.00 ± 0.00 (SE 0.00)" in row
    assert table.startswith("# Auxiliary tasks and their weights on CIFAR-10, 30 epochs")


def test_mnist_long_averages_the_last_five_epochs(tmp_path):
    for config, accs in {
        "single": [0.10, 0.90, 0.91, 0.92, 0.93, 0.94],
        "human": [0.0, 0.91, 0.93, 0.93, 0.95, 0.98],
    }.items():
        folder = tmp_path / config / "seed0"
        folder.mkdir(parents=True)
        lines = [
            json.dumps({"epoch": i + 1, "val_acc": a, "test_acc": a, "epoch_time_s": 1.0}) for i, a in enumerate(accs)
        ]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        (folder / "summary.json").write_text("{}")
    table = report(tmp_path, "mnist-long")
    # single: mean(0.90..0.94) = 92.00; human: mean(0.91, 0.93, 0.93, 0.95, 0.98) = 94.00 (the first epoch left out)
    assert "| single | 1 | 92.00 | 92.00 |" in table and "| human | 1 | 94.00 | 94.00 |" in table
    assert table.startswith("# Auxiliary tasks and their weights on MNIST-long")


def test_the_goal_section_picks_the_best_of_each_kind_on_validation_and_compares_on_test(tmp_path):
    # val, test per seed (3 seeds); epoch_time_s 10 for fixed weights, 12 for the meta-learned ones
    runs = {
        "single": ([0.90, 0.91, 0.92], [0.90, 0.91, 0.92]),
        "equal": ([0.91, 0.92, 0.93], [0.91, 0.92, 0.93]),
        "human-0.3": ([0.95, 0.96, 0.97], [0.93, 0.93, 0.94]),  # the best fixed on validation
        "both-3-0.3": ([0.94, 0.95, 0.96], [0.99, 0.99, 0.99]),  # best on test: must not be chosen
        "auto-lambda": ([0.93, 0.94, 0.95], [0.94, 0.95, 0.95]),
        "auto-lambda-s0": ([0.96, 0.96, 0.96], [0.93, 0.95, 0.96]),  # the best meta-learned on validation
        "ol-aux": ([0.10, 0.10, 0.10], [0.99, 0.99, 0.99]),
        "ol-aux-lr0.01": ([0.20, 0.20, 0.20], [0.99, 0.99, 0.99]),
        "auto-lambda-lr1e-3-s0": ([0.955, 0.955, 0.955], [0.99, 0.99, 0.99]),  # second best meta-learned
        "uncertainty": ([0.99, 0.99, 0.99], [0.99, 0.99, 0.99]),  # neither fixed nor meta-learned
    }
    for config, (vals, tests) in runs.items():
        for seed, (v, t) in enumerate(zip(vals, tests)):
            _run(tmp_path / config / f"seed{seed}", v, t)
    for config in ("auto-lambda", "auto-lambda-s0", "ol-aux", "ol-aux-lr0.01", "auto-lambda-lr1e-3-s0"):
        for seed in range(3):
            path = tmp_path / config / f"seed{seed}" / "metrics.jsonl"
            path.write_text(path.read_text().replace('"epoch_time_s": 10.0', '"epoch_time_s": 12.0'))
    # a config with fewer seeds is left out of the choice: its mean would be over other seeds
    _run(tmp_path / "both-1-0.3" / "seed0", 0.999, 0.5)
    table = report(tmp_path, "mnist-long")
    goal = table[table.index("## Against the goal") :]
    assert "over the seeds 0, 1, 2" in goal
    assert "The best fixed weights on validation: `human-0.3`" in goal
    assert "best meta-learned weighting on validation: `auto-lambda-s0`" in goal
    # auto-lambda-s0 − human-0.3 on test: 0, +2, +2 -> +1.33 ± 1.15 (SE 0.67)
    # at least as good as the best fixed weights: Δ > −2 SE
    assert "| best meta-learned − best fixed | +1.33 ± 1.15 (SE 0.67) | > −2 SE | yes |" in goal
    # auto-lambda-s0 − equal on test: +2, +3, +3 -> +2.67 ± 0.58 (SE 0.33): more than 2 SE
    assert "| best meta-learned − equal | +2.67 ± 0.58 (SE 0.33) | > 2 SE | yes |" in goal
    # seconds per epoch 12 / 10; the grid (equal, human-0.3, both-3-0.3: 3 runs of 10 s) against one run of 12 s
    assert "1.20× equal weighting's seconds per epoch" in goal
    assert "4 fixed-weight configs" in goal and "3.3× one meta-learned run" in goal


def test_meta_learned_and_fixed_configs_are_told_apart_by_name():
    from experiments.task_weights_report import FIXED, META

    for name in (
        "auto-lambda",
        "auto-lambda-s0",
        "auto-lambda-lr1e-3-s0",
        "ol-aux-lr0.01",
        "maxl-auto-lambda-s0",
        "ol-aux-sgd-lr0.3",
        "ol-aux-sgd-lr0.3-init3",
        "auto-lambda-init0.1-s0",
    ):
        assert META.match(name) and not FIXED.match(name), name
    for name in ("equal", "human", "human-0.3", "rotation-3", "both-3-0.3"):
        assert FIXED.match(name) and not META.match(name), name
    for name in ("single", "uncertainty", "maxl", "pcgrad", "ol-aux-init3-sgd", "human-init3"):
        assert not FIXED.match(name) and not META.match(name), name


def test_the_goal_fails_when_the_meta_learned_weighting_is_worse_than_the_best_fixed_by_more_than_2_se(tmp_path):
    runs = {
        "equal": [0.90, 0.91, 0.92],
        "human-3": [0.95, 0.96, 0.97],
        "auto-lambda": [0.93, 0.935, 0.95],  # − human-3: −2, −2.5, −2 -> −2.17 ± 0.29 (SE 0.17)
    }
    _seeded_runs(tmp_path, runs)
    goal = report(tmp_path, "mnist-long").split("## Against the goal")[1]
    assert "| best meta-learned − best fixed | -2.17 ± 0.29 (SE 0.17) | > −2 SE | no |" in goal
    assert "| best meta-learned − equal | +2.83 ± 0.29 (SE 0.17) | > 2 SE | yes |" in goal


def test_a_grid_extended_past_the_issues_weights_adds_a_row_for_the_best_of_0_1_to_3(tmp_path):
    runs = {  # val = test per seed
        "equal": [0.90, 0.91, 0.92],
        "human-3": [0.92, 0.93, 0.94],  # the best of {0.1, 0.3, 1, 3}
        "human-0.3": [0.91, 0.91, 0.91],
        "human-30": [0.95, 0.96, 0.97],  # the best fixed: outside the issue's grid
        "ol-aux-sgd-lr10": [0.94, 0.955, 0.96],
    }
    _seeded_runs(tmp_path, runs)
    goal = report(tmp_path, "animal-vehicle").split("## Against the goal")[1]
    assert "The best fixed weights on validation: `human-30`" in goal
    # − human-30: −1, −0.5, −1 -> −0.83 ± 0.29 (SE 0.17); − human-3: +2, +2.5, +2 -> +2.17 ± 0.29 (SE 0.17)
    assert "| best meta-learned − best fixed | -0.83 ± 0.29 (SE 0.17) | > −2 SE | no |" in goal
    assert (
        "| best meta-learned − best of {0.1, 0.3, 1, 3} (`human-3`) | +2.17 ± 0.29 (SE 0.17) | > −2 SE | yes |" in goal
    )
    # when the best fixed weights are in the issue's grid, no second row
    for seed in range(3):
        for child in (tmp_path / "human-30" / f"seed{seed}").iterdir():
            child.unlink()
        (tmp_path / "human-30" / f"seed{seed}").rmdir()
    assert "best of {0.1, 0.3, 1, 3}" not in report(tmp_path, "animal-vehicle")


def test_the_issues_grid_holds_only_weights_0_1_to_3():
    from experiments.task_weights_report import FIXED, ISSUE_GRID

    for name in ("equal", "human", "human-0.1", "rotation-3", "both-3-0.3", "both-1-0.1"):
        assert ISSUE_GRID.match(name), name
    for name in ("human-10", "human-30", "both-10-0.3", "human-0.31", "ol-aux-sgd-lr1"):
        assert not ISSUE_GRID.match(name), name
    assert FIXED.match("human-30")


def test_a_validation_tie_goes_to_the_config_with_the_fewer_options(tmp_path):
    # ol-aux-sgd-lr10 and its -init10 variant tie on validation (the same mean over seeds 0-2, as on
    # animal / vehicle); the variant is better on test, which must not decide
    runs = {
        "single": ([0.90, 0.90, 0.90], [0.90, 0.90, 0.90]),
        "equal": ([0.91, 0.91, 0.91], [0.90, 0.91, 0.92]),
        "human-3": ([0.92, 0.92, 0.92], [0.92, 0.92, 0.92]),
        "ol-aux-sgd-lr10-init10": ([0.94, 0.92, 0.93], [0.99, 0.99, 0.99]),
        "ol-aux-sgd-lr10": ([0.93, 0.93, 0.93], [0.93, 0.94, 0.95]),
    }
    for config, (val, test) in runs.items():
        for seed, (v, t) in enumerate(zip(val, test)):
            _run(tmp_path / config / f"seed{seed}", v, t)
    table = report(tmp_path, "animal-vehicle")
    assert "the best meta-learned weighting on validation: `ol-aux-sgd-lr10` (" in table
    # ol-aux-sgd-lr10 − equal on test: +3, +3, +3 -> +3.00 ± 0.00
    assert "| best meta-learned − equal | +3.00 ± 0.00 (SE 0.00) | > 2 SE | yes |" in table


def test_the_resnet20_calibration_reads_the_last_epoch_and_names_its_backbone(tmp_path):
    for config, accs in {"single": [0.10, 0.50], "equal": [0.90, 0.40]}.items():
        folder = tmp_path / config / "seed0"
        folder.mkdir(parents=True)
        lines = [
            json.dumps({"epoch": i + 1, "val_acc": a, "test_acc": a, "epoch_time_s": 1.0}) for i, a in enumerate(accs)
        ]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        (folder / "summary.json").write_text("{}")
    table = report(tmp_path, "30-epoch-resnet20")
    assert table.startswith("# Auxiliary tasks on CIFAR-10, 30 epochs, ResNet-20")
    assert "`BACKBONE=resnet20 bash experiments/task_weights_calibrate.sh" in table
    assert "| single | 1 | 50.00 | 50.00 |" in table and "| equal | 1 | 40.00 | 40.00 |" in table
