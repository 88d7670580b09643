"""Started by tests/test_distributed.py under torchrun (not a test module itself).

Each process takes its share of one fixed batch and runs one generator step of the
:class:`~maxl.train.trainer.Trainer`; rank 0 saves the generator's gradients, which the trainer has
all-reduced. ``networks()`` and ``batch()`` are imported by the test for its one-process reference.
"""

import sys

import torch

from maxl.data.datasets import load_dataset
from maxl.meta import MetaConfig
from maxl.nn.backbones import tiny_cnn
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork
from maxl.train import TrainConfig, Trainer, distributed, seed_everything

PSI = [2] * 10
META = MetaConfig(inner_lr=0.5)  # a large look-ahead step makes the meta-gradient clearly non-linear in the batch


def networks():
    # with BatchNorm: a replica-local look-ahead normalises with its share's statistics, as one
    # process does on that share
    seed_everything(0)
    return MultiTaskNetwork(tiny_cnn(1), 10, sum(PSI), hidden=8), LabelGenerator(tiny_cnn(1), PSI, hidden=8)


def batch():
    data = load_dataset("digits", train_subset=64, test_subset=20)
    x = torch.stack([data.train[i][0] for i in range(16)])  # [16, 1, 8, 8]
    y = torch.tensor([data.train[i][1] for i in range(16)])
    return data, x, y


def main(out: str) -> None:
    with distributed.process_group("cpu"):
        data, x, y = batch()
        net, gen = networks()
        config = TrainConfig(method="maxl", batch_size=16, device="cpu", progress=False)
        trainer = Trainer(net, data.train, data.test, config, generator=gen, meta=META)
        rank, size = distributed.rank(), distributed.world_size()
        share = slice(rank * len(x) // size, (rank + 1) * len(x) // size)
        result = trainer.steps.generator(x[share], y[share])  # result.grads: averaged over the processes
        if rank == 0:
            torch.save(result.grads, out)


if __name__ == "__main__":
    main(sys.argv[1])
