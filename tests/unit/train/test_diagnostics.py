"""Label-usage statistics against hand computations, and the collapse / uniform warnings,
on their own and fired by the trainer."""

import json
import math
import warnings

import pytest
import torch
from torch import nn

from maxl.core.hierarchy import Hierarchy
from maxl.data.datasets import load_dataset
from maxl.meta import MetaConfig
from maxl.nn.backbones import tiny_cnn
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork
from maxl.train import GeneratorConfig, TrainConfig, Trainer, seed_everything
from maxl.train.diagnostics import GeneratorLabelWarning, LabelUsage, UsageThresholds, label_usage_warnings

PSI = [2, 3]


def test_label_usage_by_hand():
    # two images of primary 0 (columns 0-1), one of primary 1 (columns 2-4)
    soft = torch.tensor([[0.8, 0.2, 0, 0, 0], [0.4, 0.6, 0, 0, 0], [0, 0, 0.5, 0.25, 0.25]])
    primary = torch.tensor([0, 0, 1])
    usage = LabelUsage(PSI)
    usage.update(soft, primary)
    s = usage.summary()
    mean = [0.4, 0.8 / 3, 0.5 / 3, 0.25 / 3, 0.25 / 3]
    assert s["label_entropy"] == pytest.approx(-sum(m * math.log(m) for m in mean))
    assert s["label_counts"] == [1, 1, 1, 0, 0]
    assert s["label_used_fraction"] == pytest.approx(3 / 5)
    assert s["label_max_prob"] == pytest.approx((0.8 + 0.6 + 0.5) / 3)
    # sharpness (max - 1/psi) / (1 - 1/psi): (0.8-0.5)/0.5, (0.6-0.5)/0.5, (0.5-1/3)/(2/3)
    assert s["label_sharpness"] == pytest.approx((0.6 + 0.2 + 0.25) / 3)

    # a second batch: the entropy is the mean of the two batches' entropies, counts add up
    usage.update(torch.tensor([[0, 0, 0, 0, 1.0]]), torch.tensor([1]))
    s2 = usage.summary()
    assert s2["label_entropy"] == pytest.approx(s["label_entropy"] / 2)  # H of a one-hot mean is 0
    assert s2["label_counts"] == [1, 1, 1, 0, 1]
    assert s2["label_sharpness"] == pytest.approx((0.6 + 0.2 + 0.25 + 1.0) / 4)


def test_blocks_of_one_class_are_left_out_of_the_sharpness():
    usage = LabelUsage([1, 2])
    usage.update(torch.tensor([[1.0, 0, 0], [0, 0.5, 0.5]]), torch.tensor([0, 1]))
    assert usage.summary()["label_sharpness"] == pytest.approx(0.0)


def test_label_usage_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        LabelUsage(PSI).update(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))


def labels_of(kind: str, n: int = 300, seed: int = 0):
    """Soft labels for n images, half per primary class: 'forced' (one label per class),
    'healthy' (sharp and spread over all classes) or 'uniform'."""
    g = torch.Generator().manual_seed(seed)
    hierarchy = Hierarchy(PSI)
    primary = torch.arange(n) % 2
    if kind == "forced":
        logits = torch.zeros(n, 5)
        logits[:, [0, 2]] = 20.0  # the first class of each block always wins
    elif kind == "healthy":
        logits = 4 * torch.randn(n, 5, generator=g)
    else:
        logits = 1e-3 * torch.randn(n, 5, generator=g)
    return hierarchy.masked_softmax(logits, primary), primary


def record_of(kind: str, epoch: int = 3) -> dict:
    usage = LabelUsage(PSI)
    soft, primary = labels_of(kind)
    for batch in range(0, len(primary), 100):
        usage.update(soft[batch : batch + 100], primary[batch : batch + 100])
    return {"epoch": epoch, **usage.summary()}


def test_warnings_fire_for_forced_and_uniform_labels_only():
    forced = label_usage_warnings(record_of("forced"), PSI)
    assert len(forced) == 1 and "collapsed" in forced[0] and "40%" in forced[0]
    assert "primary classes [0, 1] use one auxiliary class only" in forced[0]
    uniform = label_usage_warnings(record_of("uniform"), PSI)
    assert len(uniform) == 1 and "near uniform" in uniform[0]
    assert label_usage_warnings(record_of("healthy"), PSI) == []
    # the first epoch's labels come from the untrained generator: no warning yet
    assert label_usage_warnings(record_of("forced", epoch=1), PSI) == []
    assert label_usage_warnings(record_of("forced", epoch=1), PSI, UsageThresholds(first_epoch=1)) != []
    # records of other methods have no label statistics
    assert label_usage_warnings({"epoch": 5, "test_acc": 0.9}) == []


def test_a_collapse_present_from_the_first_epoch_is_told_apart_from_one_during_training():
    # labels that were spread at epoch 1 and collapsed later: a collapse of training
    [later] = label_usage_warnings(record_of("forced"), PSI, first_record=record_of("healthy", epoch=1))
    assert "collapsed" in later and "epoch 1" not in later
    # labels as concentrated at epoch 1 as now: the generator never spread them
    [never] = label_usage_warnings(record_of("forced"), PSI, first_record=record_of("forced", epoch=1))
    assert "collapsed" in never and "already at epoch 1 (40%)" in never and "has not spread them" in never


class FixedLogitGenerator(nn.Module):
    """A generator with a real backbone whose label logits are pinned by a huge head bias
    (forced) or by a fixed sharp random projection of the image (healthy)."""

    def __init__(self, psi, kind: str):
        super().__init__()
        self.inner = LabelGenerator(tiny_cnn(1), psi, hidden=8)
        self.hierarchy = self.inner.hierarchy
        self.kind = kind
        self.register_buffer(
            "projection", torch.randn(64, self.hierarchy.num_aux, generator=torch.Generator().manual_seed(1))
        )

    def forward(self, x, primary):
        if self.kind == "forced":
            logits = 0 * self.inner.logits(x)
            logits = logits + 50.0 * (torch.arange(self.hierarchy.num_aux) % 5 == 0)  # class 0 of every block
        else:  # sharp labels that differ between images, spread by the image content
            z = x.flatten(1) @ self.projection
            logits = 0 * self.inner.logits(x) + 8 * (z - z.mean(0)) / z.std(0)
        return self.hierarchy.masked_softmax(logits, primary)


def train_with_fixed_generator(out, kind: str, epochs: int, batch_size: int):
    """Train 200 digits with a :class:`FixedLogitGenerator`; returns the GeneratorLabelWarning
    messages issued and the records of ``metrics.jsonl``."""
    data = load_dataset("digits", train_subset=200, test_subset=60)
    psi = [5] * 10
    seed_everything(0)
    net = MultiTaskNetwork(tiny_cnn(1), 10, sum(psi), hidden=8)
    cfg = TrainConfig(
        method="maxl",
        epochs=epochs,
        batch_size=batch_size,
        lr=0.05,
        device="cpu",
        progress=False,
        meta=MetaConfig(inner_lr=0.05),
    )
    trainer = Trainer(
        net,
        data.train,
        data.test,
        cfg,
        out,
        generator=FixedLogitGenerator(psi, kind),
        gen_config=GeneratorConfig(lr=1e-9),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit()
    messages = [str(w.message) for w in caught if issubclass(w.category, GeneratorLabelWarning)]
    return messages, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["forced", "healthy"])
def test_trainer_warns_on_a_forced_generator_and_not_on_a_healthy_one(tmp_path, kind):
    ours, records = train_with_fixed_generator(tmp_path, kind, epochs=2, batch_size=50)
    assert all({"label_entropy", "label_used_fraction", "label_max_prob", "label_sharpness"} <= set(r) for r in records)
    if kind == "forced":
        assert records[-1]["label_used_fraction"] == pytest.approx(10 / 50)
        assert len(ours) == 1 and "epoch 2: generator collapsed" in ours[0]
        assert len(records[1]["label_warnings"]) == 1 and "label_warnings" not in records[0]
        assert ours[0].startswith(records[1]["label_warnings"][0])
    else:
        assert records[-1]["label_used_fraction"] > 0.9 and records[-1]["label_sharpness"] > 0.5
        assert ours == [] and all("label_warnings" not in r for r in records)


@pytest.mark.integration
def test_a_lasting_collapse_is_warned_once_per_run_and_recorded_every_epoch(tmp_path):
    ours, records = train_with_fixed_generator(tmp_path, "forced", epochs=3, batch_size=100)
    assert len(ours) == 1 and ours[0].startswith("epoch 2: generator collapsed") and "once per run" in ours[0]
    assert ["generator collapsed" in " ".join(r.get("label_warnings", [])) for r in records] == [False, True, True]
