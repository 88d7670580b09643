"""Tests of maxl.baselines.labels: random and k-means auxiliary labels, and the labels the CLI trains on."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from auxtasks import SupervisedLabels
from maxl.baselines.autoencoder import AutoencoderConfig
from maxl.baselines.labels import check_block_labels, fixed_aux_labels, kmeans_aux_labels, random_aux_labels
from maxl.cli import commands as cli
from maxl.data.datasets import load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def block_bounds(psi):
    ends = torch.tensor(psi).cumsum(0)
    return ends - torch.tensor(psi), ends  # block i is [start[i], end[i])


def assert_in_blocks(primary, aux, psi):
    start, end = block_bounds(psi)
    assert aux.dtype == torch.int64 and aux.shape == primary.shape
    assert ((start[primary] <= aux) & (aux < end[primary])).all()


@pytest.fixture(scope="module")
def digits_eo():
    return load_dataset("digits", hierarchy="even-odd")


# --------------------------------------------------------------------------- random
def test_random_labels_inside_blocks_and_uniform():
    psi = [1, 4, 2, 7]
    primary = torch.arange(4).repeat_interleave(20000)  # 20000 samples per primary class
    aux = random_aux_labels(primary, psi, seed=3)
    assert_in_blocks(primary, aux, psi)
    start, _ = block_bounds(psi)
    for i, k in enumerate(psi):
        counts = torch.bincount(aux[primary == i] - start[i], minlength=k).double()
        expected = 20000 / k
        sigma = (20000 * (1 / k) * (1 - 1 / k)) ** 0.5
        assert (counts - expected).abs().max() < 5 * sigma + 1e-9, (i, counts)  # binomial, 5 sigma


def test_random_labels_depend_only_on_the_seed():
    psi = [3, 5]
    primary = torch.randint(0, 2, (1000,), generator=torch.Generator().manual_seed(0))
    a = random_aux_labels(primary, psi, seed=7)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(a, random_aux_labels(primary, psi, seed=7))
    b = random_aux_labels(primary, psi, seed=8)
    assert (a != b).float().mean() > 0.5  # another seed, another draw (expected 0.73 differ)


def test_random_labels_reject_bad_input():
    with pytest.raises(ValueError, match="out of range"):
        random_aux_labels(torch.tensor([0, 2]), [2, 2], seed=0)
    with pytest.raises(ValueError, match=r"psi\[1\] = 0"):
        random_aux_labels(torch.tensor([0, 1]), [2, 0], seed=0)


# --------------------------------------------------------------------------- k-means
def planted_clusters(psi, per_cluster=30, dim=4, seed=0):
    """Features with well-separated planted clusters inside each primary class."""
    rng = np.random.default_rng(seed)
    feats, primary, truth = [], [], []
    for i, k in enumerate(psi):
        for j in range(k):
            centre = rng.normal(0, 10, dim)
            feats.append(centre + rng.normal(0, 0.1, (per_cluster, dim)))
            primary += [i] * per_cluster
            truth += [j] * per_cluster
    order = rng.permutation(len(primary))  # interleave the classes
    return (torch.tensor(np.concatenate(feats)[order]), torch.tensor(primary)[order], torch.tensor(truth)[order])


def test_kmeans_labels_recover_planted_clusters_inside_blocks():
    psi = [3, 1, 4]
    feats, primary, truth = planted_clusters(psi)
    aux = kmeans_aux_labels(feats, primary, psi, seed=0)
    assert_in_blocks(primary, aux, psi)
    start, _ = block_bounds(psi)
    for i, k in enumerate(psi):
        mine = primary == i
        assert (aux[mine] - start[i]).unique().tolist() == list(range(k))  # all psi[i] clusters used
        assert adjusted_rand_score(truth[mine].numpy(), aux[mine].numpy()) == pytest.approx(1.0)
        assert aux[mine][0] == start[i]  # clusters numbered by their first sample
    assert torch.equal(aux, kmeans_aux_labels(feats, primary, psi, seed=0))


def test_kmeans_labels_use_every_cluster_even_with_duplicate_images():
    # class 0: 6 copies of one image and 1 other -> only 2 distinct points for 4 clusters;
    # class 1: exactly psi[1] = 3 identical images.
    feats = torch.tensor([[0.0, 0.0]] * 6 + [[5.0, 5.0]] + [[1.0, 1.0]] * 3)
    primary = torch.tensor([0] * 7 + [1] * 3)
    psi = [4, 3]
    aux = kmeans_aux_labels(feats, primary, psi, seed=0)
    assert_in_blocks(primary, aux, psi)
    assert aux[:7].unique().tolist() == [0, 1, 2, 3]
    assert aux[7:].unique().tolist() == [4, 5, 6]


def test_kmeans_labels_need_psi_images_per_class():
    feats = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"class 1 has 2 < psi\[1\] = 3"):
        kmeans_aux_labels(feats, torch.tensor([0, 0, 0, 1, 1]), [2, 3], seed=0)
    # a primary class without any sample needs no clusters
    aux = kmeans_aux_labels(feats, torch.tensor([0, 0, 0, 2, 2]), [2, 3, 2], seed=0)
    assert sorted(aux[:3].unique().tolist()) == [0, 1] and sorted(aux[3:].tolist()) == [5, 6]
    with pytest.raises(ValueError, match=r"features must be \[N, F\] with N = 4"):
        kmeans_aux_labels(feats, torch.tensor([0, 0, 1, 1]), [1, 1], seed=0)
    with pytest.raises(ValueError, match="NaN"):
        kmeans_aux_labels(torch.full((2, 2), float("nan")), torch.tensor([0, 1]), [1, 1], seed=0)


def test_check_block_labels_names_the_offender():
    check_block_labels(torch.tensor([0, 3]), torch.tensor([0, 1]), [2, 2])
    with pytest.raises(ValueError, match="sample 1: primary 1, aux 1, block 2..3"):
        check_block_labels(torch.tensor([0, 1]), torch.tensor([0, 1]), [2, 2])


# --------------------------------------------------------------------------- methods on real data
def test_fixed_aux_labels_of_every_method_on_digits(digits_eo):
    primary = digits_eo.train.labels
    human, info = fixed_aux_labels("human", digits_eo, [5, 5], seed=0)
    assert torch.equal(human, digits_eo.aux_train) and info["aux_class_sizes"] == torch.bincount(human).tolist()
    with pytest.raises(ValueError, match="human hierarchy matching psi=\\[3, 3\\]"):
        fixed_aux_labels("human", digits_eo, [3, 3], seed=0)
    rand, _ = fixed_aux_labels("random", digits_eo, [3, 4], seed=5)
    assert torch.equal(rand, random_aux_labels(primary, [3, 4], 5))

    config = AutoencoderConfig(epochs=3)
    kmeans, info = fixed_aux_labels("kmeans", digits_eo, [5, 5], seed=0, autoencoder=config)
    assert_in_blocks(primary, kmeans, [5, 5])
    assert sorted(kmeans.unique().tolist()) == list(range(10))
    assert info["reconstruction_mse"][-1] < 0.7 * info["reconstruction_mse"][0]  # the autoencoder learnt
    # the clusters of the autoencoder's codes carry real information about the digits
    assert info["ami_with_human_within_class"] > 0.2
    with pytest.raises(ValueError, match="unknown fixed-label method 'magic'"):
        fixed_aux_labels("magic", digits_eo, [5, 5], seed=0)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["random", "kmeans"])
def test_cli_trains_on_fixed_labels_that_never_change(tmp_path, monkeypatch, method):
    """Through `maxl train`: the auxiliary target of every training image is the same in every
    epoch and lies in the image's block."""
    seen: dict[int, list[int]] = {}
    original = SupervisedLabels.make_inputs_and_targets

    def recording(self, x, y, *, index=None, target=None):
        inputs, targets = original(self, x, y, index=index, target=target)
        assert targets.dtype == torch.int64 and targets.shape == y.shape  # one class per image
        for i, t, p in zip(index.tolist(), targets.tolist(), y.tolist()):
            assert 5 * p <= t < 5 * p + 5, (i, p, t)
            seen.setdefault(i, []).append(t)
        return inputs, targets

    monkeypatch.setattr(SupervisedLabels, "make_inputs_and_targets", recording)
    argv = [
        "train",
        "--dataset",
        "digits",
        "--hierarchy",
        "even-odd",
        "--method",
        method,
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--hidden",
        "16",
        "--train-subset",
        "256",
        "--test-subset",
        "64",
        "--ae-epochs",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    summary = cli.run_training(cli.build_parser().parse_args(argv))[method]
    assert summary["epochs"] == 3
    assert sum(len(v) for v in seen.values()) == 3 * 256  # every image, every epoch (256 = 4 full batches)
    assert all(len(set(v)) == 1 for v in seen.values())
    assert len({v[0] for v in seen.values()}) == 10  # and the labels are not constant
