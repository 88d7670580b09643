"""A short real-data run per multi-task architecture that learns: the embedded scikit-learn
digits, even / odd primary task with the digits as human auxiliary labels, through the command
line, and MAXL through the fused step with the NDDR architecture."""

from __future__ import annotations

import json

import pytest
import torch

from maxl.cli.commands import main
from maxl.nn.architectures import ARCHITECTURES

pytestmark = pytest.mark.integration

COMMON = [
    "--dataset",
    "digits",
    "--hierarchy",
    "even-odd",
    "--epochs",
    "3",
    "--batch-size",
    "32",
    "--lr",
    "0.02",
    "--momentum",
    "0.9",
    "--hidden",
    "32",
    "--train-subset",
    "600",
    "--test-subset",
    "300",
    "--seed",
    "0",
    "--device",
    "cpu",
    "--no-progress",
    "--threads",
    "1",
]


def final_accuracy(out) -> float:
    return json.loads((out / "summary.json").read_text())["final_test_acc"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_learns_on_real_digits(arch, tmp_path):
    extra = ["--soft-penalty", "trace"] if arch == "soft" else []
    if arch == "sparse":  # a short mask search: 2 rounds of 10 steps per task after 20 warm-up steps
        extra = ["--sparse-rounds", "2", "--sparse-steps", "10", "--sparse-warmup", "20"]
    if arch == "adashare":  # residual blocks: ResNet-20 at lr 0.01, one warm-up epoch, then the search
        extra = ["--backbone", "resnet20", "--adashare-warmup", "1", "--lr", "0.01"]
    assert main(["train", *COMMON, "--method", "human", "--arch", arch, *extra, "--out", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["arch"] == arch
    assert final_accuracy(tmp_path) > 0.75  # chance: 0.5


def test_maxl_with_a_per_task_architecture_learns_and_its_run_reloads(tmp_path):
    import torch

    from maxl.analysis.run import load_run

    argv = ["train", *COMMON, "--method", "maxl", "--arch", "nddr", "--schedule", "per-step", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert final_accuracy(tmp_path) > 0.75
    run = load_run(tmp_path)  # what `maxl visualise` reads: the NDDR network, not a hard-sharing one
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["net"]
    assert set(run.net.state_dict()) == set(state)
    assert type(run.net.backbone).__name__ != "ConvNet"


def test_mgda_and_dtp_learn(tmp_path):
    for weighting in ("mgda", "dtp"):
        out = tmp_path / weighting
        assert main(["train", *COMMON, "--method", "human", "--weighting", weighting, "--out", str(out)]) == 0
        assert final_accuracy(out) > 0.75


@pytest.mark.parametrize("method", ["human", "maxl"])
def test_a_residual_backbone_learns_on_real_digits(method, tmp_path):
    """ResNet-20 (option-A shortcuts) as the multi-task backbone and, with MAXL, the generator's."""
    common = [a if a != "0.02" else "0.01" for a in COMMON]  # lr 0.01: ResNet-20 with momentum 0.9
    argv = ["train", *common, "--method", method, "--backbone", "resnet20", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert json.loads((tmp_path / "config.json").read_text())["model"]["backbone"] == "resnet20"
    assert final_accuracy(tmp_path) > 0.8  # chance: 0.5


def test_adashare_search_then_its_derived_architecture_retrained_from_scratch(tmp_path):
    """MAXL through AdaShare's search (warm-up, then the Gumbel-softmax policy), the policy derived
    from the reloaded run, and that architecture re-trained from scratch with ``--adashare-policy`` by
    MAXL, its last block skipped by both tasks (never computed: frozen); the derived run reloads."""
    from maxl.analysis.run import load_run
    from maxl.nn.architectures.adashare import derive_policy, policy_text

    common = [a if a != "0.02" else "0.01" for a in COMMON]
    ada = ["--backbone", "resnet20", "--arch", "adashare", "--adashare-warmup", "1"]
    search = tmp_path / "search"
    assert main(["train", *common, "--method", "maxl", *ada, "--out", str(search)]) == 0
    records = [json.loads(line) for line in (search / "metrics.jsonl").read_text().splitlines()]
    assert [r["adashare_tau"] for r in records] == [0.0, 5.0, 5.0 * 0.965]
    assert final_accuracy(search) > 0.8
    trunk = load_run(search).net.backbone
    assert trunk.phase == "search" and trunk.controlled == 2
    chosen = derive_policy(trunk)
    chosen[:, -1] = 0  # a block that no task executes (issue 25: frozen, not computed)
    policy = policy_text(chosen)
    derived = tmp_path / "derived"
    # MAXL again: its meta-gradient through the derived architecture (no policy logits; the look-ahead
    # differentiates every trainable parameter, the frozen block not among them)
    assert main(["train", *common, "--method", "maxl", *ada, "--adashare-policy", policy, "--out", str(derived)]) == 0
    assert final_accuracy(derived) > 0.8
    net = load_run(derived).net
    assert net.backbone.derived and "backbone.policy_logits" not in net.state_dict()
    assert policy_text(derive_policy(net.backbone)) == policy
    assert not any(p.requires_grad for p in net.backbone.backbone.blocks[-1].parameters())


def test_maxl_with_sparse_sharing_learns_and_keeps_its_masks(tmp_path):
    """MAXL through sparse sharing (masks found before training, the auxiliary task's on the
    untrained generator's labels); the checkpoint holds the masks, and the weights outside both
    masks are still exactly zero after training with momentum."""
    import torch

    from maxl.analysis.run import load_run

    search = ["--sparse-rounds", "2", "--sparse-steps", "10", "--sparse-warmup", "20"]
    assert main(["train", *COMMON, "--method", "maxl", "--arch", "sparse", *search, "--out", str(tmp_path)]) == 0
    assert final_accuracy(tmp_path) > 0.75
    setup = json.loads((tmp_path / "config.json").read_text())["setup_seconds"]
    assert set(setup) == {"sparse_masks"} and setup["sparse_masks"] > 0  # the search's cost, recorded
    trunk = load_run(tmp_path).net.backbone  # a config.json with setup_seconds loads
    assert trunk.density(0) == trunk.density(1) < 0.9  # 2 rounds of 1 − 0.5^(1/2) each: ≈ 0.5 kept
    for n in trunk.prunable:
        union = torch.maximum(trunk.mask(0, n), trunk.mask(1, n))
        assert torch.all(trunk.backbone.get_parameter(n)[union == 0] == 0)


def test_mtl_nas_search_then_its_derived_architecture_retrained(tmp_path):
    """MAXL through MTL-NAS's edge search, the edges with a positive logit derived from the reloaded
    run, and that architecture re-trained from scratch with ``--mtlnas-edges`` by MAXL."""
    from maxl.analysis.run import load_run
    from maxl.nn.architectures.mtl_nas import derive_edges, edges_text

    search = tmp_path / "search"
    assert main(["train", *COMMON, "--method", "maxl", "--arch", "mtl-nas", "--out", str(search)]) == 0
    records = [json.loads(line) for line in (search / "metrics.jsonl").read_text().splitlines()]
    assert [round(r["mtlnas_tau"], 12) for r in records] == [1.0, 0.9, 0.81]
    assert final_accuracy(search) > 0.75
    run = load_run(search)
    trunk = run.net.backbone
    assert trunk.gate_logits.abs().min() > 3e-3  # every gate moved (Adam architecture updates on split B)
    # the reloaded run's training images are the trainer's split A, split B apart, as in training
    from maxl.train.build import RunConfig, build

    config = json.loads((search / "config.json").read_text())
    trainer = build(RunConfig.from_dict({**config, "out": str(tmp_path / "again")}), log=lambda *a, **k: None)
    assert len(run.data.train) == config["data"]["num_train"] == len(trainer.train_set)
    assert torch.equal(run.data.train.images, trainer.train_set.images)
    assert torch.equal(run.data.arch_set.images, trainer.arch_set.images) and run.data.weight_set is None
    edges = edges_text(derive_edges(trunk))
    derived = tmp_path / "derived"
    # MAXL again: its meta-gradient through the derived architecture (issue 25: crashed on the unused gate logits)
    argv = ["train", *COMMON, "--method", "maxl", "--arch", "mtl-nas", "--mtlnas-edges", edges, "--out", str(derived)]
    assert main(argv) == 0
    assert final_accuracy(derived) > 0.75
