"""The command line generated from the settings dataclasses (issue 24, part 1): every field is an
option with its default in ``--help``, the flags of before keep working, a new setting is one
field, and a flag that would have no effect is refused with the reason."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from maxl.cli import commands
from maxl.cli.schema import add_options, cli_reference_markdown, option_table, options
from maxl.core.fields import setting
from maxl.train.build import RunConfig, sections_of

# The flags of the hand-written table this replaced, with their settings: each must still work.
OLD_FLAGS = {
    "--dataset": "data.dataset",
    "--data-root": "data.data_root",
    "--hierarchy": "data.hierarchy",
    "--download": "data.download",
    "--train-subset": "data.train_subset",
    "--test-subset": "data.test_subset",
    "--val-subset": "data.val_subset",
    "--no-augment": "data.augment",
    "--padding-mode": "data.padding_mode",
    "--resize": "data.resize",
    "--normalisation": "data.normalisation",
    "--method": "train.method",
    "--backbone": "model.backbone",
    "--arch": "model.arch",
    "--soft-penalty": "model.soft_penalty",
    "--soft-weight": "model.soft_weight",
    "--hidden": "model.hidden",
    "--no-batchnorm": "model.batchnorm",
    "--generator": "generator.network",
    "--image-weight-range": "generator.image_weight_range",
    "--gumbel-tau": "generator.gumbel_tau",
    "--gumbel-tau-end": "generator.gumbel_tau_end",
    "--psi": "model.psi",
    "--epochs": "train.epochs",
    "--batch-size": "train.batch_size",
    "--lr": "train.lr",
    "--momentum": "train.momentum",
    "--weight-decay": "train.weight_decay",
    "--gen-lr": "generator.lr",
    "--gen-weight-decay": "generator.weight_decay",
    "--lr-step": "train.lr_step",
    "--lr-gamma": "train.lr_gamma",
    "--lr-schedule": "train.lr_schedule",
    "--warmup": "train.warmup",
    "--gen-optimizer": "generator.optimizer",
    "--loss": "train.loss",
    "--focal-gamma": "train.focal_gamma",
    "--entropy-weight": "objective.entropy_weight",
    "--inner-lr": "train.meta.inner_lr",
    "--meta-order": "train.meta.order",
    "--neumann-terms": "train.meta.neumann_terms",
    "--image-entropy-weight": "objective.image_entropy_weight",
    "--consistency-weight": "objective.consistency_weight",
    "--consistency-colour": "objective.consistency_colour",
    "--consistency-no-flip": "objective.consistency_flip",
    "--consistency-rotation": "objective.consistency_rotation",
    "--inner-steps": "train.meta.inner_steps",
    "--meta-batch": "generator.meta_batch",
    "--centre-meta-gradient": "objective.centre_by_class",
    "--record-meta-parts": "objective.record_parts",
    "--meta-engine": "train.meta.engine",
    "--schedule": "generator.schedule",
    "--gen-every": "generator.every",
    "--no-fused": "generator.fused",
    "--aux": "aux.tasks",
    "--weighting": "aux.weighting",
    "--aux-weight": "aux.weights",
    "--rotation-mode": "aux.rotation_mode",
    "--colourisation-mode": "aux.colourisation_mode",
    "--ae-epochs": "baselines.ae_epochs",
    "--ae-latent": "baselines.ae_latent",
    "--preset": "preset",
    "--seed": "train.seed",
    "--device": "train.device",
    "--out": "out",
    "--no-progress": "train.progress",
    "--threads": "threads",
    "--deterministic": "train.deterministic",
    "--tensorboard": "train.tensorboard",
    "--checkpoint-every": "train.checkpoint_every",
}


def all_fields(config, prefix=""):
    """``{dotted path: field}`` of every setting of a configuration instance."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(all_fields(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f
    return out


def train_help() -> str:
    parser = commands.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"].format_help()


def test_every_setting_is_an_option_with_its_help_and_default():
    table = option_table()
    paths = {path: flag for flag, (path, _) in table.items()}
    fields = all_fields(RunConfig())
    assert set(paths) == set(fields)
    text = " ".join(train_help().split())
    for path, f in fields.items():
        assert f.metadata.get("help"), f"{path} has no help text in its setting()"
        assert paths[path] in text, path
    assert "--lr LR SGD learning rate of the multi-task network (default: 0.01)" in text.replace("TRAIN.", "")
    assert "(default: 200)" in text and "(default: runs/maxl)" in text


def test_the_flags_of_before_set_the_same_settings():
    table = option_table()
    for flag, path in OLD_FLAGS.items():
        assert table[flag][0] == path, flag
    args = commands.build_parser().parse_args(
        [
            "train",
            "--dataset",
            "digits",
            "--method",
            "single",
            "maxl",
            "--aux",
            "rotation",
            "--aux-weight",
            "rotation=0.5",
            "--no-progress",
            "--normalisation",
            "0.5",
            "0.25",
            "--psi",
            "6,4",
            "--meta-order",
            "first",
            "--centre-meta-gradient",
            "--consistency-no-flip",
            "--lr",
            "0.1",
        ]
    )
    assert vars(args)["train.method"] == ["single", "maxl"] and vars(args)["aux.tasks"] == ["rotation"]
    assert vars(args)["aux.weights"] == ["rotation=0.5"] and vars(args)["train.progress"] is False
    assert vars(args)["data.normalisation"] == [0.5, 0.25] and vars(args)["model.psi"] == "6,4"
    assert vars(args)["objective.centre_by_class"] is True and vars(args)["objective.consistency_flip"] is False
    assert vars(args)["train.lr"] == 0.1


@dataclasses.dataclass
class Extra:
    knob: int = setting(3, "a test-only knob, in units of knobs")
    mode: str = setting("a", "a test-only choice", choices=("a", "b"))


@dataclasses.dataclass
class WithExtra(RunConfig):
    extra: Extra = dataclasses.field(default_factory=Extra)


def test_a_new_setting_is_one_field(tmp_path):
    parser = argparse.ArgumentParser()
    add_options(parser, WithExtra)
    text = " ".join(parser.format_help().split())
    assert "--knob EXTRA.KNOB a test-only knob, in units of knobs (default: 3)" in text
    assert "--mode {a,b} a test-only choice (default: a)" in text
    assert vars(parser.parse_args(["--knob", "5"]))["extra.knob"] == 5
    assert sections_of(WithExtra)["extra"] is Extra
    saved = WithExtra(extra=Extra(knob=7)).to_dict()  # what config.json holds
    assert saved["extra"] == {"knob": 7, "mode": "a"}
    (tmp_path / "c.json").write_text(json.dumps(saved))
    (tmp_path / "c.toml").write_text('[extra]\nknob = 9\nmode = "b"\n[train]\nlr = 0.5\n')
    assert WithExtra.from_dict(commands.read_config_file(tmp_path / "c.json")) == WithExtra(extra=Extra(knob=7))
    again = WithExtra.from_dict(commands.read_config_file(tmp_path / "c.toml"))
    assert (again.extra.knob, again.extra.mode, again.train.lr) == (9, "b", 0.5)
    with pytest.raises(ValueError, match="unknown settings"):
        WithExtra.from_dict({"extra": {"knobs": 1}})


@dataclasses.dataclass
class Twice:
    lr: float = setting(0.1, "another lr")


@dataclasses.dataclass
class Clash(RunConfig):
    other: Twice = dataclasses.field(default_factory=Twice)


def test_two_settings_of_one_flag_are_refused():
    with pytest.raises(ValueError, match="train.lr and other.lr would both be --lr"):
        options(Clash)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--gen-every", "2"],
            "--gen-every has no effect here: the generator takes a step every k steps only with --schedule per-step",
        ),
        (
            ["--neumann-terms", "5"],
            "--neumann-terms has no effect here: the Neumann series is the inverse Hessian of --meta-order implicit",
        ),
        (["--soft-weight", "0.1"], "--soft-weight has no effect here: the penalty ties the towers of --arch soft"),
        (["--rotation-mode", "random"], "--rotation-mode has no effect here: it sets the rotation task"),
        (["--consistency-colour", "0.4"], "whose weight --consistency-weight is 0"),
    ],
)
def test_a_flag_without_effect_is_refused_with_the_reason(flags, message, capsys):
    assert commands.main(["train", "--dataset", "digits", "--epochs", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maxl: error: ") and message in err and err.count("\n") == 1


def test_the_same_flags_with_what_they_need_are_taken():
    for flags in (
        ["--gen-every", "2", "--schedule", "per-step"],
        ["--neumann-terms", "5", "--meta-order", "implicit"],
        ["--rotation-mode", "random", "--aux", "rotation"],
        ["--soft-weight", "0.1", "--arch", "soft"],
    ):
        runs, _ = commands.run_configs(commands.build_parser().parse_args(["train", "--dataset", "digits", *flags]))
        assert runs[0].inert_settings().keys().isdisjoint(commands.OPTIONS[f][0] for f in flags if f.startswith("--"))


def test_the_cli_reference_page_is_up_to_date():
    page = Path(__file__).resolve().parents[3] / "docs" / "reference" / "cli.md"
    assert page.read_text() == cli_reference_markdown(), (
        "docs/reference/cli.md is out of date: python -m maxl.cli.schema > docs/reference/cli.md"
    )
