"""Fixed auxiliary labels of the baselines: random and k-means labels inside each ψ block.

MAXL compares its learnt auxiliary labels with labels that come from somewhere else and stay
fixed for the whole run (Liu, Davison, Johns, NeurIPS 2019, Sec. 4): a human hierarchy
(:mod:`maxl.data.datasets`), a random class per image, and k-means clusters of each primary class.
Every label here respects the hierarchy: a sample of primary class ``i`` gets a label in its
own block ``sum(ψ[:i]) .. sum(ψ[:i+1]) - 1``, so that only the source of the labels differs
between methods.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933, Sec. 4 (the "random" and "K-means" baselines, which
    cluster the latent space of an autoencoder).
    Lloyd. "Least squares quantization in PCM". IEEE Trans. Inf. Theory, 1982 (k-means).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence, Sized
from dataclasses import asdict
from typing import cast

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_mutual_info_score
from torch import Tensor

from maxl.baselines.autoencoder import AutoencoderConfig, encode, train_autoencoder
from maxl.core.hierarchy import Hierarchy
from maxl.data.datasets import DataBundle, ImageTensorDataset

__all__ = ["random_aux_labels", "kmeans_aux_labels", "check_block_labels", "fixed_aux_labels"]


def _as_hierarchy(psi: Hierarchy | Sequence[int]) -> Hierarchy:
    return psi if isinstance(psi, Hierarchy) else Hierarchy(psi)


def _primary_labels(primary: Tensor, h: Hierarchy) -> Tensor:
    primary = torch.as_tensor(primary)
    if primary.dim() != 1:
        raise ValueError(f"primary labels must be [N], got shape {tuple(primary.shape)}")
    h.check_labels(primary)
    return primary.to(torch.int64).cpu()


def random_aux_labels(primary: Tensor, psi: Hierarchy | Sequence[int], seed: int) -> Tensor:
    """One auxiliary class per sample, drawn uniformly inside its primary class's block.

    The draw depends only on ``primary``, ψ and ``seed``: the labels are made once and kept
    for the whole run (the paper's "random" baseline).

    Args:
        primary: int64 ``[N]`` primary labels in ``[0, len(ψ))``.
        psi: the hierarchy ψ.
        seed: seed of the draw.

    Returns:
        int64 ``[N]``; sample ``n`` gets ``start[y_n] + u_n`` with ``u_n`` uniform on
        ``{0, ..., ψ[y_n] - 1}``.

    Raises:
        ValueError: bad ψ, or a primary label out of range.
    """
    h = _as_hierarchy(psi)
    primary = _primary_labels(primary, h)
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(len(primary), generator=generator, dtype=torch.float64)  # [N] in [0, 1)
    sizes = torch.tensor(h.psi)[primary]
    offset = (u * sizes).floor().long().clamp_max(sizes - 1)  # uniform on {0..ψ[y]-1}
    return torch.tensor(h.starts)[primary] + offset


def kmeans_aux_labels(
    features: Tensor, primary: Tensor, psi: Hierarchy | Sequence[int], seed: int, n_init: int = 10
) -> Tensor:
    """Cluster the samples of each primary class ``i`` into ``ψ[i]`` clusters with k-means.

    scikit-learn's :class:`~sklearn.cluster.KMeans` (k-means++ initialisation, ``n_init``
    restarts) runs separately on the features of each primary class; cluster ``j`` of class
    ``i`` becomes auxiliary class ``sum(ψ[:i]) + j``. Every one of the ψ[i] clusters is used:
    when k-means leaves a cluster empty (duplicate images, fewer distinct points than ψ[i]),
    the sample farthest from its centre among clusters with more than one member moves into
    it. Clusters are numbered by their smallest sample index, so the labels do not depend
    on k-means' internal order.

    Args:
        features: float ``[N, F]`` features of the samples (e.g. an autoencoder's latent codes).
        primary: int64 ``[N]`` primary labels in ``[0, len(ψ))``.
        psi: the hierarchy ψ.
        seed: ``random_state`` of k-means.
        n_init: k-means restarts per class.

    Returns:
        int64 ``[N]`` auxiliary labels, each inside its sample's block.

    Raises:
        ValueError: bad ψ, shapes that do not fit, non-finite features, or a primary class
            with fewer samples than ψ[i] (it cannot fill ψ[i] clusters; a class without any
            sample needs no labels and is allowed).
    """
    h = _as_hierarchy(psi)
    primary = _primary_labels(primary, h)
    features = torch.as_tensor(features)
    if features.dim() != 2 or len(features) != len(primary):
        raise ValueError(
            f"features must be [N, F] with N = {len(primary)} (one row per label), got {tuple(features.shape)}"
        )
    x_all = features.detach().cpu().double().numpy()
    if not np.isfinite(x_all).all():
        raise ValueError("features contain NaN or Inf")
    counts = torch.bincount(primary, minlength=h.num_primary)
    too_small = [(i, int(counts[i]), k) for i, k in enumerate(h.psi) if 0 < counts[i] < k]
    if too_small:
        detail = ", ".join(f"class {i} has {n} < psi[{i}] = {k}" for i, n, k in too_small)
        raise ValueError(f"k-means labels need at least psi[i] samples in each primary class: {detail}")
    labels = torch.empty(len(primary), dtype=torch.int64)
    for i, k in enumerate(h.psi):
        members = (primary == i).nonzero().squeeze(1)
        if len(members) == 0:  # a class absent from the data gets no labels (and needs none)
            continue
        x = x_all[members.numpy()]
        if k == 1:
            cluster = np.zeros(len(x), dtype=np.int64)
        else:
            with warnings.catch_warnings():  # duplicates: "found fewer distinct clusters"; repaired below
                warnings.simplefilter("ignore", ConvergenceWarning)
                km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
            cluster = _fill_empty_clusters(x, km.labels_.astype(np.int64), km.cluster_centers_, k)
        labels[members] = h.starts[i] + torch.from_numpy(_renumber_by_first_member(cluster))
    return labels


def _fill_empty_clusters(x: np.ndarray, cluster: np.ndarray, centres: np.ndarray, k: int) -> np.ndarray:
    """Move samples into empty clusters until all ``k`` are used (needs ``len(x) >= k``)."""
    cluster = cluster.copy()
    while True:
        sizes = np.bincount(cluster, minlength=k)
        empty = np.flatnonzero(sizes == 0)
        if len(empty) == 0:
            return cluster
        distance = ((x - centres[cluster]) ** 2).sum(1)  # squared distance to own centre
        distance[sizes[cluster] < 2] = -np.inf  # never empty another cluster
        donor = int(np.argmax(distance))  # first index among ties
        cluster[donor] = empty[0]
        centres = centres.copy()
        centres[empty[0]] = x[donor]


def _renumber_by_first_member(cluster: np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... in the order of their first sample."""
    ids, first = np.unique(cluster, return_index=True)
    new_id = np.empty(ids.max() + 1, dtype=np.int64)
    new_id[ids[np.argsort(first)]] = np.arange(len(ids))  # the earliest cluster becomes 0
    return new_id[cluster]


def check_block_labels(aux: Tensor, primary: Tensor, psi: Hierarchy | Sequence[int]) -> None:
    """Raise ValueError unless every ``aux[n]`` lies in the block of ``primary[n]``.

    Args:
        aux: int64 ``[N]`` auxiliary labels.
        primary: int64 ``[N]`` primary labels.
        psi: the hierarchy ψ.
    """
    h = _as_hierarchy(psi)
    primary = _primary_labels(primary, h)
    aux = torch.as_tensor(aux).cpu()
    if aux.shape != primary.shape or aux.dtype != torch.int64:
        raise ValueError(f"aux labels must be int64 {tuple(primary.shape)}, got {aux.dtype} {tuple(aux.shape)}")
    start = torch.tensor(h.starts)[primary]
    outside = ((aux < start) | (aux >= start + torch.tensor(h.psi)[primary])).nonzero().squeeze(1)
    if len(outside):
        n = int(outside[0])
        raise ValueError(
            f"{len(outside)} auxiliary labels lie outside their primary class's block, e.g. sample {n}: "
            f"primary {int(primary[n])}, aux {int(aux[n])}, "
            f"block {int(start[n])}..{int(start[n]) + h.psi[primary[n]] - 1}"
        )


def _plain_training_images(data: DataBundle, chunk: int = 4096) -> Tensor:
    """The training images as the networks see them, without augmentation: float32 [N, C, H, W]."""
    if not isinstance(data.train, ImageTensorDataset) or not isinstance(data.test, ImageTensorDataset):
        raise TypeError(
            f"k-means labels need the in-memory data sets of maxl.data.datasets, got {type(data.train).__name__}"
        )
    plain = data.test.transform  # normalisation only: load_dataset never augments test images
    if plain is None:
        return data.train.images.float().div(255)
    return torch.cat([plain(x) for x in data.train.images.split(chunk)])


def _ami_within_class(labels: Tensor, human: Tensor, primary: Tensor) -> float:
    """Adjusted mutual information of two labelings inside each primary class, weighted by class
    size: 0 for clusters unrelated to the human classes, 1 for the human classes themselves."""
    total = 0.0
    for i in primary.unique().tolist():
        members = primary == i
        total += members.sum().item() * adjusted_mutual_info_score(human[members].numpy(), labels[members].numpy())
    return total / len(primary)


def fixed_aux_labels(
    method: str,
    data: DataBundle,
    psi: Sequence[int],
    seed: int,
    autoencoder: AutoencoderConfig | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, dict]:
    """The fixed auxiliary labels of a baseline method for the training set of ``data``.

    * ``human``: the data set's own hierarchy (``data.aux_train``); ψ must be the human one.
    * ``random``: :func:`random_aux_labels` of the primary labels with ``seed``.
    * ``kmeans``: an autoencoder (:func:`maxl.baselines.autoencoder.train_autoencoder`) is trained on the
      un-augmented training images, and :func:`kmeans_aux_labels` clusters its latent codes
      per primary class (the paper's K-means baseline).

    Args:
        method: ``"human"``, ``"random"`` or ``"kmeans"``.
        data: the data set (:func:`maxl.data.datasets.load_dataset`).
        psi: the hierarchy ψ, one entry per primary class of ``data``.
        seed: seed of the random draw, the autoencoder and k-means.
        autoencoder: settings of the autoencoder (``kmeans``); its ``seed`` is replaced by ``seed``.
        device: where the autoencoder trains.

    Returns:
        ``(labels, info)``: int64 ``[N_train]`` labels indexed like the training set, each inside
        its sample's block; ``info`` a JSON-ready dict of how they were made (time in seconds,
        the sizes of the auxiliary classes, for ``kmeans`` the autoencoder's settings and loss
        per epoch and, when the data set has a human hierarchy with the same ψ, the adjusted
        mutual information between the clusters and the human classes inside each primary class).

    Raises:
        ValueError: unknown method, ψ not fitting the data, ``human`` without a matching human
            hierarchy, or a primary class with fewer images than ψ[i] (``kmeans``).
    """
    start = time.time()
    h = Hierarchy(psi)
    if h.num_primary != data.num_primary:
        raise ValueError(f"psi has {h.num_primary} entries but {data.name} has {data.num_primary} primary classes")
    primary = data.train.labels if isinstance(data.train, ImageTensorDataset) else None
    if primary is None:
        primary = torch.tensor([int(data.train[i][1]) for i in range(len(cast(Sized, data.train)))])  # has a length
    info: dict = {"method": method, "seed": seed}
    if method == "human":
        if data.aux_train is None or data.psi is None or list(data.psi) != list(h.psi):  # psi: None with aux_train
            raise ValueError(
                f"method 'human' needs a data set with a human hierarchy matching psi={list(h.psi)}; "
                f"{data.name} has psi={data.psi}"
            )
        labels = data.aux_train.clone()
    elif method == "random":
        labels = random_aux_labels(primary, h, seed)
    elif method == "kmeans":
        config = AutoencoderConfig(**{**asdict(autoencoder or AutoencoderConfig()), "seed": seed})
        images = _plain_training_images(data)
        model, losses = train_autoencoder(images, config, device)
        labels = kmeans_aux_labels(encode(model, images), primary, h, seed)  # codes [N, latent_dim]
        info.update(autoencoder=asdict(config), reconstruction_mse=losses)
        if data.aux_train is not None and data.psi is not None and list(data.psi) == list(h.psi):
            info["ami_with_human_within_class"] = _ami_within_class(labels, data.aux_train, primary)
    else:
        raise ValueError(f"unknown fixed-label method {method!r}; expected 'human', 'random' or 'kmeans'")
    check_block_labels(labels, primary, h)
    info["aux_class_sizes"] = torch.bincount(labels, minlength=h.num_aux).tolist()
    info["time_s"] = time.time() - start
    return labels, info
