"""``--arch`` and the soft-sharing flags: settings, validation, what the builder makes of them."""

import pytest
import torch

from maxl.cli.commands import build_parser, run_configs
from maxl.nn.architectures import SoftSharing, TaskView
from maxl.nn.networks import FeatureLabelGenerator
from maxl.train.build import ModelConfig, RunConfig, build

SMALL = [
    "--dataset",
    "digits",
    "--hierarchy",
    "even-odd",
    "--epochs",
    "1",
    "--hidden",
    "8",
    "--train-subset",
    "64",
    "--test-subset",
    "32",
    "--no-progress",
    "--threads",
    "1",
]


def parse(*argv):
    return run_configs(build_parser().parse_args(["train", *argv]))[0]


def test_flags_set_the_model_section_and_default_to_hard_sharing():
    assert RunConfig().model.arch == "hard"
    [run] = parse("--arch", "soft", "--soft-penalty", "trace", "--soft-weight", "0.5")
    assert (run.model.arch, run.model.soft_penalty, run.model.soft_weight) == ("soft", "trace", 0.5)
    assert RunConfig.from_dict(run.to_dict()) == run
    with pytest.raises(ValueError, match="unknown architecture"):
        ModelConfig(arch="sluice")
    with pytest.raises(ValueError, match="soft_penalty"):
        ModelConfig(soft_weight=-1.0)
    with pytest.raises(SystemExit):
        parse("--arch", "sluice")


def test_the_builder_makes_the_architecture_and_refuses_aux_tasks_beside_it(tmp_path):
    [run] = parse(*SMALL, "--method", "human", "--arch", "soft", "--soft-weight", "0.3", "--out", str(tmp_path / "a"))
    trainer = build(run, log=lambda *_: None)
    trunk = trainer.net.backbone
    assert isinstance(trunk, SoftSharing) and trunk.weight == 0.3
    [run] = parse(*SMALL, "--method", "maxl", "--arch", "mtan", "--aux", "rotation", "--out", str(tmp_path / "b"))
    with pytest.raises(ValueError, match="needs --arch hard"):
        build(run, log=lambda *_: None)


def test_the_feature_generator_reads_the_primary_tasks_features(tmp_path):
    [run] = parse(
        *SMALL, "--method", "maxl", "--arch", "cross-stitch", "--generator", "features", "--out", str(tmp_path)
    )
    trainer = build(run, log=lambda *_: None)
    gen = trainer.learner.generated.generator
    assert isinstance(gen, FeatureLabelGenerator) and isinstance(gen.shared_backbone, TaskView)
    x = torch.randn(3, 1, 8, 8)
    soft = gen(x, torch.tensor([0, 1, 0]))
    assert soft.shape == (3, 10) and torch.allclose(soft.sum(1), torch.ones(3))
    assert not any(p is q for p in gen.parameters() for q in trainer.net.parameters())
