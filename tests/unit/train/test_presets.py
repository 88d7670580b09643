"""Presets (maxl.train.presets) as the command line applies them: flags > --config file > preset >
dataclass defaults, the resolved values in the run's configuration."""

import json

import pytest

from maxl.cli.commands import DEMO_ARGS, build_parser, run_configs
from maxl.train.build import RunConfig
from maxl.train.presets import PRESET_OF, PRESETS, preset_settings


def parse(*argv):
    [run], _ = run_configs(build_parser().parse_args(["train", *argv]))
    return run


def setting(run, path):
    node = run.to_dict()
    for key in path.split("."):
        node = node[key]
    return node


@pytest.mark.parametrize("dataset", ["digits", "mnist", "kmnist", "emnist-letters", "svhn", "imagefolder"])
def test_each_data_set_starts_from_its_preset(dataset):
    run = parse("--dataset", dataset)
    name, settings = preset_settings("auto", dataset)
    assert run.preset == name != "paper" and settings
    for path, value in settings.items():
        assert setting(run, path) == value, path
    assert run.generator.lr == RunConfig().generator.lr  # what the preset leaves alone stays the default


def test_paper_preset_is_the_dataclass_defaults():
    run = parse("--dataset", "mnist", "--preset", "paper")
    assert run == RunConfig(data=run.data, preset="paper") and run.train.lr == 0.01 and run.train.epochs == 200


def test_flags_beat_the_file_which_beats_the_preset(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[data]\ndataset = "mnist"\n[train]\nlr = 0.2\nbatch_size = 50\n')
    run = parse("--config", str(toml), "--batch-size", "20")
    assert (run.train.lr, run.train.batch_size) == (0.2, 20)  # file, flag
    assert run.train.lr_schedule == PRESETS["mnist"]["train.lr_schedule"] and run.preset == "mnist"  # preset
    other = parse("--config", str(toml), "--preset", "digits")  # another data set's preset
    assert other.model.backbone == "tiny-cnn" and other.train.lr == 0.2


def test_a_runs_config_json_reruns_with_its_own_values(tmp_path):
    run = parse("--dataset", "digits", "--lr", "0.3")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(run.to_dict()))
    assert parse("--config", str(path)) == run
    # a config.json from before presets (no "preset" key) keeps every value it holds
    old = RunConfig().to_dict()
    del old["preset"]
    path.write_text(json.dumps(old))
    again = parse("--config", str(path))
    assert again.train == RunConfig().train and again.model == RunConfig().model


def test_demo_flags_cover_the_digits_preset():
    """`maxl demo` must not change: every setting of the digits preset is one of its flags or the
    backbone it had before."""
    demo = parse(*DEMO_ARGS[:3], *DEMO_ARGS[4:], "--epochs", "15")
    before = parse(*DEMO_ARGS[:3], *DEMO_ARGS[4:], "--epochs", "15", "--preset", "paper")
    assert demo.train == before.train and demo.model.hidden == before.model.hidden
    assert demo.model.backbone == "tiny-cnn" and before.model.backbone is None  # the builder's digits default
    assert set(PRESET_OF) | {"emnist-balanced"} >= {"digits", "mnist", "imagefolder"}


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        preset_settings("fast", "digits")
