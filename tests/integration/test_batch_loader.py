"""The trainer's batch data path (``--loader batch``, :mod:`maxl.data.augment`) on RGB images.

* Without augmentation it trains bit for bit like the per-image path (the same values, and the
  same draws from torch's generator, so the pinned digits runs do not move).
* With augmentation, a run stopped after an epoch and resumed equals the uninterrupted run.
* The batches of two processes are the halves of the one-process batch: the same images with
  the same crops and flips (the draws depend on the seed, the pass and the image alone).
"""

import json

import pytest
import torch

from maxl.cli.commands import main
from maxl.data.datasets import load_dataset
from maxl.train import distributed
from maxl.train.config import TrainConfig
from maxl.train.trainer import Trainer

from tests.integration.test_user_hierarchy_runs import write_pngs

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def rgb_tree(tmp_path_factory):
    """A flat ImageFolder of four classes of 8 x 8 RGB images (12 training, 3 test images each)."""
    return write_pngs(tmp_path_factory.mktemp("rgb"), ["a", "b", "c", "d"], per_class=(12, 3))


def run(root, out, *extra):
    args = [
        "train",
        "--dataset",
        "imagefolder",
        "--data-root",
        str(root),
        "--backbone",
        "tiny-cnn",
        "--hidden",
        "8",
        "--batch-size",
        "8",
        "--lr",
        "0.05",
        "--momentum",
        "0.9",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]
    assert main(args) == 0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    weights = torch.load(out / "checkpoint.pt", weights_only=True)["net"]
    for r in rows:
        r.pop("epoch_time_s")
    return rows, weights


@pytest.mark.parametrize("method", ["single", "maxl"])
def test_batch_path_without_augmentation_trains_like_the_per_image_path(rgb_tree, tmp_path, method):
    common = ("--method", method, "--epochs", "2", "--no-augment")
    batch = run(rgb_tree, tmp_path / "batch", *common, "--loader", "batch")
    per_image = run(rgb_tree, tmp_path / "per-image", *common, "--loader", "per-image")
    assert batch[0] == per_image[0]
    for k in batch[1]:
        assert torch.equal(batch[1][k], per_image[1][k]), k


class Killed(Exception):
    """Stands for the process being killed."""


def test_augmented_batch_run_resumed_mid_epoch_equals_the_uninterrupted_run(rgb_tree, tmp_path, monkeypatch):
    common = ("--method", "maxl", "--epochs", "3", "--checkpoint-every", "4")
    whole = run(rgb_tree, tmp_path / "whole", *common, "--padding-mode", "reflect")

    save = Trainer.save_checkpoint

    def killed_inside_epoch_2(self, path, epoch_part=None):  # after its step-level checkpoint
        save(self, path, epoch_part)
        if self.epoch == 1 and epoch_part is not None:
            raise Killed

    monkeypatch.setattr(Trainer, "save_checkpoint", killed_inside_epoch_2)
    with pytest.raises(Killed):
        run(rgb_tree, tmp_path / "part", *common, "--padding-mode", "reflect")
    monkeypatch.undo()
    torch.manual_seed(1234)  # whatever state the new process starts in
    assert main(["train", "--resume", str(tmp_path / "part"), "--no-progress"]) == 0
    resumed = [json.loads(r) for r in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    for r in resumed:
        r.pop("epoch_time_s")
    assert resumed == whole[0]
    weights = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["net"]
    for k, w in whole[1].items():
        assert torch.equal(weights[k], w), k
    # and the augmentation changed the images: an un-augmented run ends elsewhere
    plain = run(rgb_tree, tmp_path / "plain", *common, "--no-augment")
    assert plain[0] != whole[0]


def test_two_processes_see_the_halves_of_the_one_process_batch(rgb_tree, monkeypatch):
    data = load_dataset("imagefolder", rgb_tree)
    assert data.train.batch_transform is not None and data.train.batch_transform.augment

    def batches(rank: int, size: int, pass_index: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
        monkeypatch.setattr(distributed, "rank", lambda: rank)
        monkeypatch.setattr(distributed, "world_size", lambda: size)
        trainer = Trainer.__new__(Trainer)  # only the data path: no networks
        trainer.config, trainer.device, trainer.net = TrainConfig(batch_size=8, seed=3), torch.device("cpu"), None
        return [(x, idx) for x, _, idx in trainer._batches(data.train, True, pass_index)]

    one = batches(0, 1)
    halves = [batches(0, 2), batches(1, 2)]
    assert len(one) == len(halves[0]) == len(halves[1]) == 48 // 8
    for k, (x, idx) in enumerate(one):
        # global batch k: process r holds its positions r, r + 2, ...
        for r in (0, 1):
            assert torch.equal(halves[r][k][1], idx[r::2])
            assert torch.equal(halves[r][k][0], x[r::2])
    # the crops differ from pass to pass
    other = dict(zip(one[0][1].tolist(), one[0][0]))
    later = batches(0, 1, pass_index=5)
    same = [torch.equal(x[i], other[int(j)]) for x, idx in later for i, j in enumerate(idx) if int(j) in other]
    assert len(same) == 8 and not all(same)
