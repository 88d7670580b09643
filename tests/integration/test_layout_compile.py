"""``channels_last`` and ``compile`` (TrainConfig) change how the steps run, not what they compute:
the multi-task gradients and the meta-gradient of one batch equal the default path's within float
rounding. With an engine that needs a double backward, ``compile`` trains eager and says so."""

import json

import pytest
import torch

from maxl.data.augment import BatchAugment
from maxl.data.datasets import ImageTensorDataset, make_transform
from maxl.meta import MetaConfig
from maxl.nn.backbones import build_backbone
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork
from maxl.train.config import TrainConfig
from maxl.train.trainer import CompileFallbackWarning, Trainer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

PSI = [2, 2, 2]


def data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(24) % 3
    mean, std = [0.5] * 3, [0.25] * 3
    train = ImageTensorDataset(
        images, labels, make_transform(8, mean, std, True), BatchAugment(mean, std, True, 2, "constant")
    )
    test = ImageTensorDataset(images[:6], labels[:6], make_transform(8, mean, std, False))
    return train, test


def gradients(engine: str, **options) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The multi-task gradients and the generator's meta-gradient of the first batch, from a
    trainer with ``options``; the networks start from seed 0 whatever the options."""
    torch.manual_seed(0)
    net = MultiTaskNetwork(build_backbone("tiny-cnn", 3), 3, sum(PSI), 16)
    gen = LabelGenerator(build_backbone("tiny-cnn", 3), PSI, hidden=16)
    train, test = data()
    config = TrainConfig(
        method="maxl", batch_size=8, device="cpu", progress=False, meta=MetaConfig(engine=engine), **options
    )
    trainer = Trainer(net, train, test, config, generator=gen)
    compiled = trainer.net.backbone._compiled_call_impl is not None
    assert compiled == (options.get("compile", False) and engine != "func")
    x, y, idx = next(trainer._batches(train, True))
    trainer.steps.multitask(x, y, idx)
    net_grads = [p.grad.clone() for p in trainer.net.parameters()]
    gen_grads = [g.clone() for g in trainer.steps.generator(x, y, idx).grads]
    return net_grads, gen_grads


def assert_close_lists(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        torch.testing.assert_close(u.contiguous(), v.contiguous(), rtol=1e-4, atol=1e-6)


def test_channels_last_gives_the_default_gradients():
    default = gradients("func")
    nhwc = gradients("func", channels_last=True)
    assert_close_lists(default[0], nhwc[0])
    assert_close_lists(default[1], nhwc[1])


def test_compile_with_a_double_backward_engine_trains_eager_and_says_so():
    with pytest.warns(CompileFallbackWarning, match="double backward"):
        net_grads, gen_grads = gradients("func", compile=True)
    assert_close_lists(gradients("func")[1], gen_grads)


@pytest.mark.slow
def test_compile_gives_the_default_gradients():
    default = gradients("jvp")
    compiled = gradients("jvp", compile=True)
    assert_close_lists(default[0], compiled[0])
    assert_close_lists(default[1], compiled[1])


def test_a_run_resumes_with_channels_last_turned_on(tmp_path):
    """The layout changes only the float rounding, so it is one of the resumable changes."""
    from maxl.cli.commands import main

    run = ["train", "--dataset", "digits", "--method", "single", "--batch-size", "32", "--train-subset", "320"]
    run += ["--hidden", "16", "--device", "cpu", "--no-progress"]
    assert main([*run, "--epochs", "2", "--out", str(tmp_path / "whole")]) == 0
    assert main([*run, "--epochs", "1", "--out", str(tmp_path / "part")]) == 0
    resume = ["train", "--resume", str(tmp_path / "part"), "--epochs", "2", "--channels-last", "--no-progress"]
    assert main(resume) == 0
    last = [json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1]) for name in ("whole", "part")]
    assert last[1]["epoch"] == 2
    assert last[1]["train_primary_loss"] == pytest.approx(last[0]["train_primary_loss"], rel=1e-4)
