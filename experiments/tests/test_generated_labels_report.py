"""The ablation table of experiments/generated_labels.py reads run folders correctly."""

import json

import pytest

from experiments.generated_labels import ablation_rows


def fake_run(root, variant, seed, val_last5, max_prob, nmi, val_losses=(0.5,)):
    folder = root / variant / ("maxl" if variant not in ("single", "human") else variant) / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train": {"seed": seed}}))
    record = {"label_max_prob": max_prob, "label_used_fraction": 1.0, "label_nmi_human": nmi}
    lines = [json.dumps({**record, "val_loss": loss}) for loss in val_losses]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(
        json.dumps({"final_val_acc": val_last5, "last5_mean_val_acc": val_last5, "mean_epoch_time_s": 2.0})
    )


def test_paired_differences_and_label_statistics(tmp_path):
    for seed, (s, p, a) in enumerate([(0.80, 0.81, 0.84), (0.82, 0.82, 0.85)]):
        fake_run(tmp_path, "single", seed, s, None, None)
        fake_run(tmp_path, "paper", seed, p, 0.25, 0.02)
        fake_run(tmp_path, "adam", seed, a, 0.9, 0.2)
    rows = {r["variant"]: r for r in ablation_rows(tmp_path, ["single", "paper", "adam"])}
    assert rows["adam"]["minus_single"] == "3.50 ± 0.71"  # paired: +4 and +3 points
    assert rows["adam"]["minus_paper"] == "3.00 ± 0.00"
    assert rows["paper"]["minus_paper"] == "–" and rows["single"]["max_prob"] == "–"
    assert rows["adam"]["max_prob"] == "0.900 ± 0.000" and rows["paper"]["nmi"] == "0.020 ± 0.000"


def test_paired_validation_loss_of_the_last_five_epochs(tmp_path):
    # single: last-5 mean 0.50 (the first epoch, 9.0, is left out); adam: 0.40 and 0.45
    fake_run(tmp_path, "single", 0, 0.8, None, None, val_losses=(9.0, 0.5, 0.5, 0.5, 0.5, 0.5))
    fake_run(tmp_path, "single", 1, 0.8, None, None, val_losses=(0.5,) * 5)
    fake_run(tmp_path, "adam", 0, 0.8, 0.9, 0.2, val_losses=(0.4,) * 6)
    fake_run(tmp_path, "adam", 1, 0.8, 0.9, 0.2, val_losses=(0.3, 0.6, 0.3, 0.6, 0.45))
    rows = {r["variant"]: r for r in ablation_rows(tmp_path, ["single", "adam"])}
    assert rows["adam"]["val_loss_minus_single"] == "-0.075 ± 0.035"  # -0.10 and -0.05
    assert rows["single"]["val_loss_minus_single"] == "–"


def test_dynamics_plots_one_line_per_variant_with_its_seed_mean(tmp_path, monkeypatch):
    import argparse

    import matplotlib.axes

    from experiments.generated_labels import dynamics

    for seed, weight in enumerate([1.0, 2.0]):
        fake_run(tmp_path, "wamal", seed, 0.8, 0.3, 0.02)
        record = {"label_max_prob": 0.3, "meta_image_weight_mean": weight, "val_acc": 0.8}
        (tmp_path / "wamal" / "maxl" / f"seed{seed}" / "metrics.jsonl").write_text(json.dumps(record) + "\n")
        fake_run(tmp_path, "paper", seed, 0.8, 0.25, 0.02)
    plotted = []
    original = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        plotted.append((self.get_title(), kwargs.get("label"), list(args[1])))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    out = tmp_path / "dyn.png"
    dynamics(argparse.Namespace(runs=str(tmp_path), variants=["paper", "wamal"], out=str(out), mean=True, title="t"))
    assert out.stat().st_size > 0
    weights = [(label, ys) for title, label, ys in plotted if label and "wamal" in label and ys == [1.5]]
    assert len(weights) == 1 and weights[0][0] == "wamal (2 seeds)"  # the mean of 1.0 and 2.0
    assert not any(label and label.startswith("paper") and ys == [1.5] for _, label, ys in plotted)


def _grid_run(folder, method, seed, acc):
    folder.mkdir(parents=True)
    config = {
        "data": {"name": "mnist:even-odd", "num_train": 800, "num_test": 2000},
        "model": {"psi": [5, 5], "backbone": "cnn3", "hidden": 0},
        "train": {
            "method": method,
            "seed": seed,
            "epochs": 1,
            "batch_size": 100,
            "lr": 0.1,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "lr_schedule": "onecycle",
            "loss": "ce",
            "gen_lr": 0.001,
            "schedule": "alternate",
        },
        "labels": None,
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": acc}) + "\n")
    (folder / "summary.json").write_text(
        json.dumps({"final_test_acc": acc, "best_test_acc": acc, "last5_mean_test_acc": acc, "wall_time_s": 1.0})
    )


def test_final_table_holds_every_chosen_variant_beside_the_grid(tmp_path):
    import argparse

    from experiments.generated_labels import report_final

    for seed in (0, 1):
        _grid_run(tmp_path / "grid" / "single" / f"seed{seed}", "single", seed, 0.80)
        _grid_run(tmp_path / "grid" / "maxl" / f"seed{seed}", "maxl", seed, 0.81)
        _grid_run(tmp_path / "final" / "ps-adam-w1" / "maxl" / f"seed{seed}", "maxl", seed, 0.83)
        _grid_run(tmp_path / "final" / "ps-features-adam-iic" / "maxl" / f"seed{seed}", "maxl", seed, 0.79)
    prefix = tmp_path / "table"
    report_final(
        argparse.Namespace(
            grid_runs=str(tmp_path / "grid"),
            runs=str(tmp_path / "final"),
            variant=["ps-adam-w1", "ps-features-adam-iic"],
            prefix=str(prefix),
            title="t",
        )
    )
    rows = {
        line.split("|")[1].strip(): line
        for line in prefix.with_suffix(".md").read_text().splitlines()
        if line.startswith("| ")
    }
    assert {"single", "maxl", "maxl-ps-adam-w1", "maxl-ps-features-adam-iic"} <= set(rows)
    assert "83.00" in rows["maxl-ps-adam-w1"] and "79.00" in rows["maxl-ps-features-adam-iic"]
    text = prefix.with_suffix(".md").read_text()
    assert (  # the grid's overlay: [train.meta] and [generator] tables, in the order TOML gives them
        "`maxl-ps-adam-w1` adds `--meta-engine jvp --image-weight-range 1 --schedule per-step --gen-optimizer adam "
        "--gen-weight-decay 0`" in text
    )
    assert "--gen-weight-decay 0 --consistency-weight 1`" in text


def test_dynamics_keeps_the_classes_used_when_no_run_has_image_weights(tmp_path):
    import argparse

    import matplotlib.axes

    from experiments.generated_labels import dynamics

    for seed in (0, 1):
        fake_run(tmp_path, "paper", seed, 0.8, 0.25, 0.02)
    titles = []
    original = matplotlib.axes.Axes.set_title

    def spy(self, label, *args, **kwargs):
        titles.append(label)
        return original(self, label, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.axes.Axes, "set_title", spy)
        dynamics(
            argparse.Namespace(
                runs=str(tmp_path), variants=["paper"], out=str(tmp_path / "d.png"), mean=True, title="t"
            )
        )
    assert "classes used" in titles and "auxiliary-loss weight (WAMAL)" not in titles


def test_the_remedies_table_puts_each_protocols_paired_gain_and_labels_side_by_side(tmp_path):
    import argparse

    from experiments.generated_labels import report_remedies

    for seed, (s, p) in enumerate([(0.80, 0.81), (0.82, 0.84)]):
        fake_run(tmp_path / "a", "single", seed, s, None, None)
        fake_run(tmp_path / "a", "paper", seed, p, 0.25, 0.02)
    fake_run(tmp_path / "b", "single", 0, 0.70, None, None)
    fake_run(tmp_path / "b", "ps-adam-w1", 0, 0.69, 0.5, 0.1)
    prefix = tmp_path / "rem"
    report_remedies(
        argparse.Namespace(
            runs=[f"A={tmp_path / 'a'}", f"B={tmp_path / 'b'}"], variants=None, prefix=str(prefix), title="t"
        )
    )
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in prefix.with_suffix(".md").read_text().splitlines()
        if line.startswith("| `")
    }
    assert rows["`paper`"] == ["1.50 ± 0.71 · 2 · 0.250 / 1.000 / 0.020", ""]  # +1 and +2 points; not run on B
    assert rows["`ps-adam-w1`"] == ["", "-1.00 · 1 · 0.500 / 1.000 / 0.100"]
    assert "`human`" not in rows  # no protocol ran it
    with pytest.raises(SystemExit, match="NAME=FOLDER"):
        report_remedies(argparse.Namespace(runs=[str(tmp_path)], variants=None, prefix=str(prefix), title="t"))


def test_a_torn_last_line_of_metrics_jsonl_is_skipped_with_a_warning(tmp_path):
    from maxl.analysis.run import TornLineWarning

    fake_run(tmp_path, "adam", 0, 0.8, 0.9, 0.2)
    metrics = tmp_path / "adam" / "maxl" / "seed0" / "metrics.jsonl"
    with open(metrics, "a") as f:  # the run was killed while appending its second epoch
        f.write('{"label_max_prob": 0.')
    with pytest.warns(TornLineWarning, match=f"{metrics}: skipping the truncated last line 2"):
        [row] = ablation_rows(tmp_path, ["adam"])
    assert row["max_prob"] == "0.900"  # the whole line of epoch 1 (one seed)
