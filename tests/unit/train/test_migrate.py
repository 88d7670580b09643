"""The sections that follow the components (issue 24): ``objective`` beside ``train.meta``, through
``--help``, ``config.json`` and ``--config``; configurations of the old shape (J's settings under
``train.meta``) migrated by ``--config``, ``--resume``, overlays and the analysis."""

import json
import warnings

import pytest
import torch

from maxl.cli.commands import build_parser, main, run_configs
from maxl.cli.schema import option_table
from maxl.meta import MetaConfig, ObjectiveConfig
from maxl.train.build import ModelConfig, RunConfig
from maxl.train.config import MOVED_TO_GENERATOR, GeneratorConfig, TrainConfig
from maxl.train.migrate import MOVED, MovedSettingsWarning, complete_run_record, migrate
from maxl.train.overlays import merge_overlays

SMALL = ["--dataset", "digits", "--train-subset", "64", "--test-subset", "32", "--batch-size", "32"]
SMALL += ["--hidden", "8", "--no-progress", "--threads", "1"]


def parse(*argv):
    return run_configs(build_parser().parse_args(["train", *argv]))


def old_shape(config: dict) -> dict:
    """``config`` as a run of before issue 24 wrote it: J's settings under ``train.meta``, the
    generator's under ``model`` and ``train`` (``model.generator``, ``train.gen_lr``, ``train.schedule``, ...)."""
    old = json.loads(json.dumps(config))
    old["train"]["meta"].update(old.pop("objective"))
    generator = old.pop("generator")
    for path, name in MOVED_TO_GENERATOR.items():
        section, key = path.split(".")
        old[section][key] = generator[name]
    return old


def test_the_objective_and_generator_sections_round_trip_through_help_config_json_and_config(tmp_path):
    table = option_table()
    assert table["--entropy-weight"][0] == "objective.entropy_weight"
    assert table["--centre-meta-gradient"][0] == "objective.centre_by_class"
    assert table["--meta-engine"][0] == "train.meta.engine"
    assert (table["--generator"][0], table["--gen-lr"][0], table["--gen-every"][0]) == (
        "generator.network",
        "generator.lr",
        "generator.every",
    )
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "objective J of the label-generation network (maxl):" in help_text
    assert "--image-entropy-weight OBJECTIVE.IMAGE_ENTROPY_WEIGHT" in help_text
    assert "label-generation network (maxl): network, optimiser, schedule:" in help_text
    assert "--gen-lr GENERATOR.LR SGD learning rate of the label-generation network (default: 0.001)" in help_text
    [run], _ = parse(
        *("--entropy-weight", "0.3", "--consistency-weight", "0.5", "--consistency-no-flip"),
        *("--generator", "features", "--gen-lr", "0.01", "--schedule", "per-step", "--gen-every", "2"),
    )
    assert run.objective == ObjectiveConfig(entropy_weight=0.3, consistency_weight=0.5, consistency_flip=False)
    assert run.generator == GeneratorConfig(network="features", lr=0.01, schedule="per-step", every=2)
    saved = run.to_dict()
    assert saved["objective"]["entropy_weight"] == 0.3 and "entropy_weight" not in saved["train"]["meta"]
    assert set(saved["train"]["meta"]) == {"inner_lr", "order", "engine", "fd_epsilon", "inner_steps", "neumann_terms"}
    assert saved["generator"]["every"] == 2 and not {"gen_lr", "schedule", "gen_every"} & set(saved["train"])
    assert "generator" not in saved["model"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    [again], _ = parse("--config", str(tmp_path / "config.json"))
    assert again == run
    (tmp_path / "c.toml").write_text('[objective]\nimage_entropy_weight = 0.2\n[train.meta]\nengine = "jvp"\n')
    [toml], _ = parse("--config", str(tmp_path / "c.toml"))
    assert (toml.objective.image_entropy_weight, toml.train.meta.engine) == (0.2, "jvp")
    with pytest.raises(ValueError, match=r"unknown settings \['weight'\] in section \[objective\]"):
        RunConfig.from_dict({"objective": {"weight": 1.0}})


def test_an_old_shape_is_migrated_with_one_notice_and_a_conflict_is_refused():
    old = {"train": {"lr": 0.5, "meta": {"entropy_weight": 0.4, "record_parts": True, "engine": "jvp"}}}
    with pytest.warns(MovedSettingsWarning) as caught:
        new = migrate(old, "old.json")
    assert len(caught) == 1 and str(caught[0].message) == (
        "old.json names settings by their old paths, read at the new ones: "
        "train.meta -> objective: entropy_weight, record_parts"
    )
    assert new == {
        "train": {"lr": 0.5, "meta": {"engine": "jvp"}},
        "objective": {"entropy_weight": 0.4, "record_parts": True},
    }
    assert old["train"]["meta"]["entropy_weight"] == 0.4  # the argument is left as it was
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert migrate(new) is new  # the current shape: nothing to do, no notice
    with pytest.raises(
        ValueError, match=r"sets objective.entropy_weight = 0.2 and, by its old name, train.meta.entropy_weight = 0.4"
    ):
        migrate({**old, "objective": {"entropy_weight": 0.2}}, announce=False)
    # overlays: an old dotted path merged onto the current defaults lands at its new path
    with pytest.warns(MovedSettingsWarning):
        merged = merge_overlays(RunConfig().to_dict(), {"train": {"meta": {"consistency_weight": 1.0}}})
    assert RunConfig.from_dict(merged).objective.consistency_weight == 1.0
    assert set(MOVED) == {f"train.meta.{f}" for f in ObjectiveConfig.__dataclass_fields__} | set(MOVED_TO_GENERATOR)
    assert set(MOVED_TO_GENERATOR.values()) == set(GeneratorConfig.__dataclass_fields__)


def test_the_configs_refuse_a_moved_setting_and_say_where_it_went():
    with pytest.raises(TypeError, match=r"consistency_weight moved to maxl.ObjectiveConfig\(consistency_weight=...\)"):
        MetaConfig(inner_lr=0.1, consistency_weight=1.0)
    with pytest.raises(TypeError, match=r"gen_every moved to GeneratorConfig\(every=...\)"):
        TrainConfig(gen_every=4)
    with pytest.raises(TypeError, match=r"generator moved to GeneratorConfig\(network=...\)"):
        ModelConfig(generator="features")


@pytest.mark.filterwarnings("ignore::maxl.train.diagnostics.GeneratorLabelWarning")
def test_an_old_runs_config_json_reruns_with_config_and_resumes(tmp_path, capsys):
    out = tmp_path / "old"
    argv = ["train", *SMALL, "--method", "maxl", "--epochs", "1", "--entropy-weight", "0.3", "--gen-lr", "0.01"]
    assert main([*argv, "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(old_shape(config)))  # as an old run wrote it
    (tmp_path / "copy.json").write_text(json.dumps(old_shape(config)))
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    checkpoint["config"] = old_shape(checkpoint["config"])  # its checkpoint's record too
    torch.save(checkpoint, out / "checkpoint.pt")
    # --config: the old file's settings at their new paths
    with pytest.warns(MovedSettingsWarning, match="copy.json names settings by their old paths"):
        [rerun], _ = parse("--config", str(tmp_path / "copy.json"), "--out", str(tmp_path / "new"))
    assert (rerun.objective.entropy_weight, rerun.generator.lr, rerun.train.epochs) == (0.3, 0.01, 1)
    with pytest.warns(MovedSettingsWarning, match=r"train -> generator: [^;]*gen_lr \(as lr\), [^;]*schedule"):
        migrate({"train": {"gen_lr": 0.1, "schedule": "per-step"}}, "names.toml")
    # --resume: continues the old run (the checkpoint's old record compares equal) to epoch 2
    with pytest.warns(
        MovedSettingsWarning, match="train.meta -> objective: entropy_weight, image_entropy_weight"
    ) as caught:
        assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    assert len([w for w in caught if w.category is MovedSettingsWarning]) == 1  # one notice
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    resumed = json.loads((out / "config.json").read_text())
    assert resumed["objective"]["entropy_weight"] == 0.3 and "entropy_weight" not in resumed["train"]["meta"]
    assert resumed["generator"]["lr"] == 0.01 and "gen_lr" not in resumed["train"]
    # a resumed run of other objective settings is still refused
    with pytest.raises(ValueError, match="--entropy-weight"):
        parse("--resume", str(out), "--entropy-weight", "0.5")


def test_the_grid_runner_and_the_results_table_read_an_old_runs_folder(tmp_path):
    """A finished run of the old shape counts as the same settings for ``maxl grid`` (not a
    mismatch), and the results table describes it from its migrated keys."""
    from maxl.analysis.results import collect_runs, describe_setting
    from maxl.train.grid import GridMismatchError, folder_state

    [run], _ = parse("--method", "maxl", "--gen-lr", "0.01", "--entropy-weight", "0.3", "--out", str(tmp_path))
    folder = tmp_path / "maxl" / "seed0"
    folder.mkdir(parents=True)
    stored = old_shape(run.to_dict())
    stored["data"].update(name="digits", num_train=10, num_test=5, num_val=0)
    stored["model"].update(psi=[5] * 10, backbone="tiny-cnn", num_primary=10)
    (folder / "config.json").write_text(json.dumps(stored))
    (folder / "summary.json").write_text(json.dumps({"final_test_acc": 0.5}))
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": 0.5}) + "\n")
    with pytest.warns(MovedSettingsWarning, match="config.json names settings by their old paths"):
        assert folder_state(folder, run) == "finished"
    with pytest.raises(GridMismatchError, match="objective.entropy_weight"):
        folder_state(folder, RunConfig.from_dict(merge_overlays(run.to_dict(), {"objective": {"entropy_weight": 0.5}})))
    text = describe_setting(collect_runs(tmp_path))
    assert "generator lr 0.01" in text and "alternate schedule" in text and "entropy weight 0.3" in text


def test_a_run_written_before_the_batch_data_path_resumes_on_the_per_image_path(tmp_path):
    # issue 27 made the batch-level data path the default; it draws other crops and flips than the
    # per-image transforms, so an older run (its config.json has no data.loader) continues per image
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--method", "single", "--epochs", "1", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["loader"] == "batch"
    [resumed], is_resume = parse("--resume", str(out), "--epochs", "2")
    assert is_resume and resumed.data.loader == "batch"  # a run that recorded its data path keeps it
    del config["data"]["loader"]
    (out / "config.json").write_text(json.dumps(config))
    [resumed], _ = parse("--resume", str(out), "--epochs", "2")
    assert resumed.data.loader == "per-image"
    # a settings file that leaves the data path out means the default, not an old run's path
    (tmp_path / "mine.json").write_text(json.dumps({"data": {"dataset": "digits"}}))
    [fresh], _ = parse("--config", str(tmp_path / "mine.json"), "--out", str(tmp_path / "fresh"))
    assert fresh.data.loader == "batch"
    assert complete_run_record({"data": {}})["data"]["loader"] == "per-image"
