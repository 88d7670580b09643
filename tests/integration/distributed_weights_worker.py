"""Started by tests/integration/test_distributed.py under torchrun (not a test module itself).

Each process takes its share of one fixed batch and runs a few multi-task steps of the
:class:`~maxl.train.trainer.Trainer` with a meta-learned weighting (Auto-λ, OL-AUX or AuxiLearn; a
weight step before each, fused or not); every rank saves its weighting's state and network.
``trainer(...)`` and ``batch()`` are imported by the test for its one-process reference.
"""

import sys

import torch
from torch.utils.data import Subset

from maxl.core.losses import classification_loss
from maxl.data.datasets import load_dataset
from maxl.nn.backbones import build_backbone
from maxl.nn.networks import MultiTaskNetwork
from maxl.train import TrainConfig, Trainer, distributed, seed_everything
from maxl.train.aux_learner import build_learner

STEPS = 3


#: the options of each weighting: weights from 1, a learning rate that moves them in 3 steps
#: (OL-AUX: a horizon of 2, so that the 3 steps hold an update and a sum under way)
OPTIONS = {
    "auto-lambda": {"lr": 0.05, "init": 1.0},
    "ol-aux": {"lr": 0.05, "horizon": 2},
    "auxilearn": {"lr": 0.05, "terms": 2},
}


def trainer(fused: bool, weight_every: int = 1, outer: str = "held-out", weighting: str = "auto-lambda") -> Trainer:
    """A single-task network without BatchNorm (so that the network's step over processes is the
    one-process step on the global batch), rotation, ``weighting`` (:data:`OPTIONS`; ``fused`` for
    Auto-λ and OL-AUX); the outer loss on 32 held-out images, or (``outer="training"``,
    ``--weight-split 0``) on the 96 training images (OL-AUX has none: it learns from the training
    batch)."""
    data = load_dataset("digits", train_subset=96, test_subset=20)
    seed_everything(0)
    net = MultiTaskNetwork(build_backbone("tiny-cnn", 1, batchnorm=False), 10, 0, 8)
    learner = build_learner(
        net,
        "single",
        ("rotation",),
        weighting,
        loss_fn=classification_loss("ce"),
        in_channels=1,
        image_size=8,
        weighting_options={**OPTIONS[weighting], **({} if weighting == "auxilearn" else {"fused": fused})},
        hidden=8,
    )
    config = TrainConfig(method="single", batch_size=16, lr=0.2, device="cpu", progress=False)
    weights: dict = {}
    if weighting == "ol-aux":
        pass
    elif outer == "training":  # digits are not augmented: the training set is its own un-augmented view
        weights = {"weight_set": data.train, "weight_from_training": True}
    else:
        weights = {"weight_set": Subset(data.train, range(64, 96))}
    return Trainer(net, data.train, data.test, config, learner=learner, weight_every=weight_every, **weights)


def batch(step: int):
    """The global batch of step ``step``: 16 training images, labels and indices."""
    data = load_dataset("digits", train_subset=96, test_subset=20)
    idx = torch.arange(16 * step, 16 * (step + 1)) % 64
    x = torch.stack([data.train[int(i)][0] for i in idx])  # [16, 1, 8, 8]
    y = torch.tensor([data.train[int(i)][1] for i in idx])
    return x, y, idx


def main(out: str, fused: str, outer: str = "held-out", weighting: str = "auto-lambda") -> None:
    with distributed.process_group("cpu"):
        t = trainer(fused == "fused", outer=outer, weighting=weighting)
        rank, size = distributed.rank(), distributed.world_size()
        share = slice(rank * 16 // size, (rank + 1) * 16 // size)
        for step in range(STEPS):
            x, y, idx = batch(step)
            t.steps.multitask(x[share], y[share], idx[share])  # a weight step first (step % 1 == 0)
            t.step += 1
        state = {"weighting": t.learner.weighting.state_dict(), "net": t.net.state_dict()}
        torch.save(state, f"{out}.{rank}")


if __name__ == "__main__":
    main(*sys.argv[1:])
