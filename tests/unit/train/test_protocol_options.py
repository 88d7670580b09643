"""Options of the generated-labels protocol (issue 13): one-cycle lr, α = the current lr, the
validation split, Adam for the generator, and the diagnostics (meta-gradient parts, NMI)."""

import math

import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from maxl.core.losses import classification_loss
from maxl.data import load_dataset
from maxl.meta import MetaConfig, ObjectiveConfig, meta_gradient
from maxl.nn import LabelGenerator, MultiTaskNetwork, tiny_cnn
from maxl.train import GeneratorConfig, TrainConfig, Trainer, seed_everything
from maxl.train.diagnostics import nmi_within_primary


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_subset=192, test_subset=40, val_subset=64)


def make(data, gen=None, **settings):
    seed_everything(0)
    psi = [2] * data.num_primary
    net = MultiTaskNetwork(tiny_cnn(1), data.num_primary, sum(psi), hidden=8)
    gen_config, gen = gen, LabelGenerator(tiny_cnn(1), psi, hidden=8)
    cfg = TrainConfig(
        **{"method": "maxl", "epochs": 2, "batch_size": 32, "lr": 0.1, "device": "cpu", "progress": False, **settings}
    )
    return Trainer(
        net,
        data.train,
        data.test,
        cfg,
        generator=gen,
        gen_config=gen_config,
        val_set=data.val,
        human_labels=torch.arange(len(data.train)) % 2 + 2 * data.train.labels,
    )


def test_the_validation_split_is_held_out_from_the_training_images(digits):
    assert (len(digits.train), len(digits.val)) == (128, 64)
    train = {tuple(x.flatten().tolist()) for x in digits.train.images}
    val = {tuple(x.flatten().tolist()) for x in digits.val.images}
    assert not train & val  # disjoint images
    assert sorted(digits.val.labels.bincount().tolist()) == [6] * 6 + [7] * 4  # stratified: 64 over 10 classes


def test_one_cycle_lr_and_alpha_follow_each_step(digits):
    trainer = make(digits, GeneratorConfig(schedule="per-step"), lr_schedule="onecycle", warmup=0.25)
    alphas, lrs = [], []
    meta_gradient_of = trainer.learner.meta_gradient

    def recording(*args, **kwargs):
        alphas.append(trainer.learner.generated.meta.inner_lr)
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        return meta_gradient_of(*args, **kwargs)

    trainer.learner.meta_gradient = recording
    trainer.gen_config.fused = False  # every step through meta_gradient
    trainer.fit()
    steps = 2 * (128 // 32)
    assert len(lrs) == steps and alphas == lrs  # α = the lr of the step about to be taken
    peak = lrs.index(max(lrs))
    assert peak == round(0.25 * steps) - 1 or peak == round(0.25 * steps)  # warm-up over a quarter
    assert lrs[0] == pytest.approx(0.1 / 25) and max(lrs) == pytest.approx(0.1, rel=1e-6)
    assert lrs[-1] < lrs[peak] / 10  # annealed
    assert [r["gen_lr"] for r in trainer.history] == [1e-3, 1e-3]  # the generator's lr stays


def test_validation_accuracy_is_recorded_and_summarised(digits):
    trainer = make(digits, GeneratorConfig(optimizer="adam"), method="maxl")
    assert isinstance(trainer.gen_optimizer, torch.optim.Adam)
    summary = trainer.fit()
    assert all(0 <= r["val_acc"] <= 1 and "val_loss" in r for r in trainer.history)
    assert summary["final_val_acc"] == trainer.history[-1]["val_acc"]
    assert 0 <= trainer.history[-1]["label_nmi_human"] <= 1


def test_meta_gradient_parts_add_up_to_the_gradient_in_float64():
    torch.manual_seed(0)
    psi = [2, 3]
    net = MultiTaskNetwork(tiny_cnn(1), 2, 5, hidden=4).double()
    gen = LabelGenerator(tiny_cnn(1), psi, hidden=4).double()
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    loss = classification_loss("ce")
    cfg = MetaConfig(inner_lr=0.1)
    plain = meta_gradient(net, gen, x, y, loss, cfg, objective=ObjectiveConfig(entropy_weight=0.3))
    parts = meta_gradient(net, gen, x, y, loss, cfg, objective=ObjectiveConfig(entropy_weight=0.3, record_parts=True))
    for a, b in zip(plain.grads, parts.grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    no_entropy = meta_gradient(net, gen, x, y, loss, cfg, objective=ObjectiveConfig(entropy_weight=0.0))
    lookahead = math.sqrt(sum(float((g**2).sum()) for g in no_entropy.grads))
    entropy = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(plain.grads, no_entropy.grads)))
    assert parts.lookahead_grad_norm.item() == pytest.approx(lookahead, rel=1e-10)
    assert parts.entropy_grad_norm.item() == pytest.approx(entropy, rel=1e-10)
    assert plain.lookahead_grad_norm is None


def test_nmi_within_primary_weights_the_classes_by_their_images():
    rows = torch.tensor(
        [
            [0, 0, 5],
            [0, 0, 5],
            [0, 1, 6],
            [0, 1, 6],  # class 0: the same partition, NMI 1
            [1, 2, 7],
            [1, 3, 7],
            [1, 2, 8],
            [1, 3, 8],
            [1, 2, 7],
            [1, 3, 8],
        ]
    )  # class 1
    second = normalized_mutual_info_score([7, 7, 8, 8, 7, 8], [2, 3, 2, 3, 2, 3])
    assert nmi_within_primary(rows) == pytest.approx((4 * 1.0 + 6 * second) / 10)
