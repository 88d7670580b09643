"""See what the generator learned: figures, cluster analysis and an HTML report of a run.

:func:`visualise_run` (``maxl visualise RUN_DIR``) reloads a run (:func:`maxl.analysis.run.load_run`),
passes the test set through both networks and writes, under ``OUT/figures``:

* ``topk-<i>.png``: for primary class *i*, the ``k`` test images with the highest generated
  probability for each of its auxiliary classes (Liu et al. 2019, Fig. 4 and 6);
* ``embedding.png``: a 2-D embedding (t-SNE, or UMAP where installed) of the multi-task
  network's features, coloured by primary class and, within primary classes, by generated
  and by human auxiliary label; a second run (``against``, e.g. the single-task baseline) is
  shown beside it on the same images;
* ``contingency.png`` and ``agreement.json``: generated vs human auxiliary labels within each
  primary class (NMI, ARI, purity; :mod:`maxl.analysis.agreement`), where the data set has human labels;
* ``label-usage.png``: the share of each auxiliary class per epoch (:mod:`maxl.train.diagnostics`);
* ``curves.png``: accuracy, losses and label diagnostics per epoch;

and ``OUT/report.html``, one self-contained page with all of it. :func:`compare_runs`
(``maxl compare RUN_DIR...``) draws the curves of several runs on one figure.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933, Sec. 5.
    van der Maaten, Hinton. "Visualizing Data using t-SNE". JMLR 2008.
    McInnes, Healy, Melville. "UMAP". arXiv:1802.03426, 2018.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from maxl.analysis import plots
from maxl.analysis.agreement import agreement_within_primary, mean_agreement
from maxl.analysis.report import write_report
from maxl.analysis.run import Run, load_run, read_config, read_metrics, read_summary, run_label
from maxl.core.hierarchy import Hierarchy
from maxl.data.datasets import ImageTensorDataset
from maxl.nn.networks import MultiTaskNetwork

__all__ = [
    "EMBEDDINGS",
    "weights_png",
    "TestOutputs",
    "collect_outputs",
    "top_k_per_aux_class",
    "embed_2d",
    "visualise_run",
    "compare_runs",
]

EMBEDDINGS = ("tsne", "umap")


@dataclass
class TestOutputs:
    """What the networks say about every image of a data set.

    Attributes:
        features: float32 ``[N, F]``, the multi-task network's backbone features.
        primary: int64 ``[N]``, the true primary labels.
        primary_pred: int64 ``[N]``, the primary head's predictions.
        soft_labels: float32 ``[N, sum(ψ)]`` generated labels (given the true primary labels),
            None without a generator.
        aux_pred: int64 ``[N]``, the auxiliary head's prediction inside each image's block,
            None without an auxiliary head or without a generator to tell the blocks.
    """

    features: np.ndarray
    primary: np.ndarray
    primary_pred: np.ndarray
    soft_labels: np.ndarray | None
    aux_pred: np.ndarray | None


@torch.no_grad()
def collect_outputs(
    net: MultiTaskNetwork, generator: nn.Module | None, dataset: Dataset, batch_size: int = 256
) -> TestOutputs:
    """Run the networks (eval mode) over ``dataset``, which yields ``(image, primary, index)``.

    Returns:
        :class:`TestOutputs` in the data set's order.
    """
    device = next(net.parameters()).device
    net.eval()
    if generator is not None:
        generator.eval()
    hierarchy = getattr(generator, "hierarchy", None)
    features, primary, primary_pred, soft, aux_pred = [], [], [], [], []
    for x, y, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), torch.as_tensor(y).to(device)
        f = net.backbone(x)  # [B, F]
        features.append(f.float().cpu())
        primary.append(y.cpu())
        primary_pred.append(net.primary_head(f).argmax(1).cpu())
        if generator is not None:
            soft.append(generator(x, y).float().cpu())  # [B, sum(ψ)]
            aux_head = getattr(net, "aux_head", None)
            if aux_head is not None:
                assert hierarchy is not None, "a label-generation network has a hierarchy"
                if net.num_aux == hierarchy.num_aux:
                    logits = aux_head(f).masked_fill(~hierarchy.block_mask(y), -math.inf)
                    aux_pred.append(logits.argmax(1).cpu())
    return TestOutputs(
        features=torch.cat(features).numpy(),
        primary=torch.cat(primary).numpy(),
        primary_pred=torch.cat(primary_pred).numpy(),
        soft_labels=torch.cat(soft).numpy() if soft else None,
        aux_pred=torch.cat(aux_pred).numpy() if aux_pred else None,
    )


def top_k_per_aux_class(soft_labels, primary, psi: Hierarchy | Sequence[int], k: int) -> np.ndarray:
    """For each auxiliary class, the ``k`` images of its primary class with the highest
    generated probability for it, most probable first (ties: lower index first).

    Args:
        soft_labels: float ``[N, sum(ψ)]`` generated labels.
        primary: int ``[N]`` primary labels.
        psi: the hierarchy ψ.
        k: images per auxiliary class, >= 1.

    Returns:
        int64 ``[sum(ψ), k]`` image indices; −1 where a primary class has fewer than ``k`` images.

    Raises:
        ValueError: ``k < 1`` or shapes that do not fit ψ.
    """
    hierarchy = psi if isinstance(psi, Hierarchy) else Hierarchy(psi)
    soft_labels, primary = np.asarray(soft_labels), np.asarray(primary)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if soft_labels.ndim != 2 or soft_labels.shape != (len(primary), hierarchy.num_aux):
        raise ValueError(
            f"expected soft labels [N, {hierarchy.num_aux}] for N = {len(primary)} primary labels, "
            f"got {soft_labels.shape}"
        )
    out = np.full((hierarchy.num_aux, k), -1, dtype=np.int64)
    parent = hierarchy.parent.numpy()
    for c in range(hierarchy.num_aux):
        candidates = np.flatnonzero(primary == parent[c])
        order = np.argsort(-soft_labels[candidates, c], kind="stable")[:k]
        out[c, : len(order)] = candidates[order]
    return out


def embed_2d(features: np.ndarray, method: str = "tsne", seed: int = 0, threads: int | None = None) -> np.ndarray:
    """2-D embedding of feature vectors.

    Args:
        features: float ``[n, F]``, n >= 5.
        method: ``"tsne"`` (scikit-learn, PCA initialisation, perplexity min(30, (n−1)/3)) or
            ``"umap"`` (the ``umap-learn`` package, if installed).
        seed: random state.
        threads: cap on the OpenMP / BLAS threads of the embedding (None: the libraries'
            default). On a busy machine 1 can be many times faster than oversubscribed threads.

    Returns:
        float ``[n, 2]``.

    Raises:
        ValueError: unknown method, too few points.
        ImportError: ``"umap"`` without ``umap-learn``.
    """
    if method not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {method!r}; expected one of {EMBEDDINGS}")
    features = np.asarray(features, dtype=np.float32)
    if len(features) < 5:
        raise ValueError(f"need at least 5 points to embed, got {len(features)}")
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    with threadpool_limits(limits=threads):
        if method == "umap":
            try:
                import umap
            except ImportError as err:
                raise ImportError(
                    "embedding 'umap' needs the umap-learn package (pip install umap-learn); use 'tsne' otherwise"
                ) from err
            return umap.UMAP(random_state=seed).fit_transform(features)
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(features) - 1) / 3)
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


# --------------------------------------------------------------------------- the run's figures
def _same_test_set(a: Run, b: Run, names: tuple[str, str]) -> None:
    # cast: a run's test sets come from load_dataset (labels, and images where they are held)
    ta, tb = cast(ImageTensorDataset, a.data.test), cast(ImageTensorDataset, b.data.test)
    same = (
        len(ta) == len(tb)
        and torch.equal(ta.labels, tb.labels)
        and (not hasattr(ta, "images") or torch.equal(ta.images, tb.images))
    )
    if not same:
        raise ValueError(
            f"runs {names[0]} and {names[1]} were evaluated on different test sets "
            f"({a.data.name}, {len(ta)} images vs {b.data.name}, {len(tb)} images): compare runs "
            "with the same data set, hierarchy and test subset"
        )


def _aux_names(primary_names: Sequence[str], psi: Sequence[int]) -> list[str]:
    """Names of generated auxiliary classes: ``"<primary> #j"``, j = 1..ψ[i]."""
    return [f"{name} #{j + 1}" for name, k in zip(primary_names, psi) for j in range(k)]


def _topk_figures(run: Run, out: TestOutputs, figures_dir: Path, k: int, run_name: str) -> list[tuple[str, Path]]:
    assert run.generator is not None and out.soft_labels is not None  # a maxl run: visualise_run checks
    data, hierarchy = run.data, run.generator.hierarchy
    picks = top_k_per_aux_class(out.soft_labels, out.primary, hierarchy, k)
    generated = out.soft_labels.argmax(1)
    human = data.aux_test.numpy() if data.aux_test is not None else None
    names = _aux_names(data.primary_names, hierarchy.psi)
    written = []
    for i, primary_name in enumerate(data.primary_names):
        rows = range(hierarchy.starts[i], hierarchy.starts[i] + hierarchy.psi[i])
        row_labels = []
        for c in rows:
            members = generated == c
            text = f"{names[c]}\nargmax of {int(members.sum())}\ntest images"
            if human is not None and members.any():
                assert data.aux_names is not None  # it comes with aux_test
                counts = np.bincount(human[members], minlength=len(data.aux_names))
                text += f"\nmostly {data.aux_names[int(counts.argmax())]} ({counts.max() / members.sum():.0%})"
            row_labels.append(text)
        block = picks[rows.start : rows.stop]  # [ψ_i, k]
        probs = np.zeros(block.shape)
        for r, c in enumerate(rows):  # each row's probability of its own auxiliary class
            valid = block[r] >= 0
            probs[r, valid] = out.soft_labels[block[r][valid], c]
        test_images = cast(ImageTensorDataset, data.test).images  # cast: as in _same_test_set
        fig = plots.topk_grid(
            test_images,
            block,
            probs,
            row_labels,
            f"{run_name}: primary class '{primary_name}', top {k} test images per auxiliary class",
        )
        path = plots.save_png(fig, figures_dir / f"topk-{i}.png")
        written.append(
            (
                f"the {k} test images of primary class '{primary_name}' with the highest generated "
                "probability (number under each) for each of its auxiliary classes; left: how many "
                "test images take the class as argmax and their most common human label",
                path,
            )
        )
    return written


def _agreement(run: Run, out: TestOutputs, figures_dir: Path, run_name: str):
    assert run.generator is not None and out.soft_labels is not None  # a maxl run: visualise_run checks
    data, hierarchy = run.data, run.generator.hierarchy
    # a human hierarchy (visualise_run checks aux_test): psi and aux_names come with it
    assert data.aux_test is not None and data.psi is not None and data.aux_names is not None
    generated = out.soft_labels.argmax(1)
    results = agreement_within_primary(out.primary, generated, data.aux_test.numpy(), hierarchy, data.psi)
    mean = mean_agreement(results)
    human_h = Hierarchy(data.psi)
    gen_names = _aux_names(data.primary_names, hierarchy.psi)
    tables, row_names, col_names, titles = [], [], [], []
    for r in results:
        i = r.primary
        tables.append(r.table)
        row_names.append(gen_names[hierarchy.starts[i] : hierarchy.starts[i] + hierarchy.psi[i]])
        col_names.append(data.aux_names[human_h.starts[i] : human_h.starts[i] + human_h.psi[i]])
        titles.append(
            f"{data.primary_names[i]}: NMI {r.nmi:.2f}  ARI {r.ari:.2f}\npurity {r.purity:.2f} "
            f"(chance {r.chance_purity:.2f}), n={r.num_images}"
        )
    fig = plots.contingency_grid(
        tables, row_names, col_names, titles, f"{run_name}: generated (rows) vs human (columns)"
    )
    path = plots.save_png(fig, figures_dir / "contingency.png")
    aux_head = float(np.mean(out.aux_pred == generated)) if out.aux_pred is not None else None
    record = {
        "generated_psi": list(hierarchy.psi),
        "human_psi": list(data.psi),
        "primary_names": list(data.primary_names),
        "human_names": list(data.aux_names),
        "mean": mean,
        "aux_head_matches_generator": aux_head,
        "per_class": [{"primary_name": data.primary_names[r.primary], **r.to_dict()} for r in results],
    }
    rows = [
        {
            "primary class": data.primary_names[r.primary],
            "images": r.num_images,
            "NMI": r.nmi,
            "ARI": r.ari,
            "purity": r.purity,
            "chance purity": r.chance_purity,
        }
        for r in results
    ]
    rows.append(
        {
            "primary class": "mean (image-weighted)",
            "images": sum(r.num_images for r in results),
            "NMI": mean["nmi"],
            "ARI": mean["ari"],
            "purity": mean["purity"],
            "chance purity": mean["chance_purity"],
        }
    )
    caption = (
        "contingency tables of generated auxiliary labels (argmax, rows) against the human auxiliary "
        "labels (columns) inside each primary class; colour: share of the row"
    )
    return (caption, path), record, rows


def _embedding_figure(
    runs: Sequence[tuple[str, Run, TestOutputs]],
    maxl: tuple[str, Run, TestOutputs] | None,
    classes: int,
    max_points: int,
    method: str,
    seed: int,
    threads: int | None,
    figures_dir: Path,
    title: str,
) -> tuple[str, Path]:
    """First row: every run's embedding of all points by primary class. Then one row per chosen
    primary class: for every run, that class's own embedding coloured by the generated label (of
    the run ``maxl``) and by the human label."""
    data = runs[0][1].data
    n = len(runs[0][2].primary)
    points = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_points), replace=False))
    primary = runs[0][2].primary[points]
    chosen = [i for i in range(data.num_primary) if (primary == i).sum() >= 5][:classes]
    human = data.aux_test.numpy()[points] if data.aux_test is not None else None
    methods = [run.config["train"]["method"] for _, run, _ in runs]
    names = methods if len(set(methods)) == len(methods) else [label for label, _, _ in runs]
    rows: list[list] = [[]]
    for name, (_, _, out) in zip(names, runs):
        xy = embed_2d(out.features[points], method, seed, threads)
        rows[0].append(plots.EmbeddingPanel(xy, primary, data.primary_names, f"{name}: all {len(points)}, by primary"))
    for i in chosen:
        members = primary == i
        row = []
        for name, (_, _, out) in zip(names, runs):
            xy = embed_2d(out.features[points[members]], method, seed, threads)
            where = f"{name}: '{data.primary_names[i]}'"
            if maxl is not None:
                assert maxl[1].generator is not None and maxl[2].soft_labels is not None  # the maxl run
                hierarchy = maxl[1].generator.hierarchy
                start, size = hierarchy.starts[i], hierarchy.psi[i]
                generated = maxl[2].soft_labels[points[members]].argmax(1) - start
                source = "generated" if maxl[2] is out else f"{maxl[1].config['train']['method']}-generated"
                row.append(
                    plots.EmbeddingPanel(xy, generated, [f"#{j + 1}" for j in range(size)], f"{where} by {source}")
                )
            if human is not None:
                assert data.psi is not None and data.aux_names is not None  # they come with aux_test
                h = Hierarchy(data.psi)
                start, size = h.starts[i], h.psi[i]
                row.append(
                    plots.EmbeddingPanel(
                        xy, human[members] - start, data.aux_names[start : start + size], f"{where} by human"
                    )
                )
        if row:
            rows.append(row)
    fig = plots.embedding_grid(rows, title)
    path = plots.save_png(fig, figures_dir / "embedding.png")
    caption = (
        f"{method} of the multi-task network's backbone features on {len(points)} test images: first by "
        f"primary class, then for {len(chosen)} primary class(es) a separate embedding of that class's images, "
        f"coloured by generated auxiliary label (argmax)"
        + (" and by human label" if human is not None else "")
        + (f"; runs: {', '.join(label for label, _, _ in runs)}, on the same images" if len(runs) > 1 else "")
    )
    return caption, path


def visualise_run(
    run_dir: str | os.PathLike,
    *,
    against: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    top_k: int = 8,
    embedding: str = "tsne",
    max_points: int = 2000,
    embed_classes: int = 2,
    data_root: str | os.PathLike | None = None,
    device: str = "cpu",
    seed: int = 0,
    batch_size: int = 256,
    threads: int | None = None,
) -> dict:
    """Write the figures, ``agreement.json`` and ``report.html`` of a run.

    Args:
        run_dir: a run folder of ``maxl train``.
        against: a second run on the same test set (e.g. ``single`` next to ``maxl``): its
            embedding is drawn beside this run's and its curves with this run's.
        out_dir: where ``figures/`` and ``report.html`` go; default ``run_dir``.
        top_k: images per auxiliary class in the top-k grids.
        embedding: ``"tsne"`` or ``"umap"`` (see :func:`embed_2d`).
        max_points: test images in the embeddings (a seeded random subset).
        embed_classes: primary classes (the first ones) that get their own embedding panels.
        data_root: where the data set lies if it moved since training.
        device: where the networks run.
        seed: seed of the subset, the embeddings and the chance purity.
        batch_size: images per forward pass.
        threads: cap on the threads of the embeddings (see :func:`embed_2d`).

    Returns:
        ``{"figures": [PNG paths], "report": path, "agreement": dict or None}``.

    Raises:
        ValueError: bad settings, or ``against`` evaluated on a different test set.
        FileNotFoundError: missing run files or data.
    """
    if top_k < 1 or max_points < 10 or embed_classes < 0:
        raise ValueError(
            f"need top_k >= 1, max_points >= 10 and embed_classes >= 0; got {top_k}, {max_points}, {embed_classes}"
        )
    if embedding not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {embedding!r}; expected one of {EMBEDDINGS}")
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    figures_dir = out_dir / "figures"
    run = load_run(run_dir, data_root=data_root, device=device)
    label = run_label(run_dir, run.config)
    runs = [(label, run, collect_outputs(run.net, run.generator, run.data.test, batch_size))]
    if against is not None:
        other = load_run(against, data_root=data_root, device=device)
        other_label = run_label(against, other.config)
        if other_label == label:
            other_label += " [2]"
        _same_test_set(run, other, (str(run_dir), str(against)))
        runs.append((other_label, other, collect_outputs(other.net, other.generator, other.data.test, batch_size)))
    figures: list[tuple[str, Path]] = []
    agreement, agreement_rows = None, None
    fig = plots.curves([(name, r.metrics) for name, r, _ in runs], f"{run.data.name}: training curves")
    figures.append(
        (
            "primary accuracy and losses per epoch, and the generated-label diagnostics",
            plots.save_png(fig, figures_dir / "curves.png"),
        )
    )

    weighted = [(name, r.metrics) for name, r, _ in runs if plots.weight_keys([(name, r.metrics)])]
    if weighted:
        fig = plots.task_weights(weighted, f"{run.data.name}: task weights")
        figures.append(
            (
                "the weight of each task's loss per epoch (learnt by a meta-learned weighting such as Auto-λ)",
                plots.save_png(fig, figures_dir / "task-weights.png"),
            )
        )

    maxl = next((entry for entry in runs if entry[1].generator is not None), None)
    out = runs[0][2]
    if run.generator is not None:
        figures += _topk_figures(run, out, figures_dir, top_k, label)
        counts = [r["label_counts"] for r in run.metrics if "label_counts" in r]
        if counts and len(counts[0]) == run.generator.hierarchy.num_aux:
            fig = plots.usage_heatmap(
                np.array(counts),
                run.generator.hierarchy.psi,
                _aux_names(run.data.primary_names, run.generator.hierarchy.psi),
                f"{label}: generated-label usage on the training set per epoch",
            )
            figures.append(
                (
                    "share of each auxiliary class among its primary class's training images (argmax of "
                    "the generated labels the multi-task network learnt from), per epoch",
                    plots.save_png(fig, figures_dir / "label-usage.png"),
                )
            )
        if run.data.aux_test is not None:
            figure, agreement, agreement_rows = _agreement(run, out, figures_dir, label)
            figures.append(figure)
            _write_json(figures_dir / "agreement.json", agreement)
    figures.append(
        _embedding_figure(
            runs,
            maxl,
            embed_classes,
            max_points,
            embedding,
            seed,
            threads,
            figures_dir,
            f"{run.data.name}: {embedding} of test-set features",
        )
    )

    warnings = summarise_label_warnings(run.metrics)
    m = run.config["model"]
    n_train, n_test = len(cast(Sized, run.data.train)), len(cast(Sized, run.data.test))  # cast: they have lengths
    trained = f"{n_train} training"
    if run.data.weight_set is not None:  # a meta-learned weighting's outer-loss images, never trained on
        trained += f" (+ {len(cast(Sized, run.data.weight_set))} held out for the task weights)"
    remarks = [
        f"data {run.data.name}: {trained} / {n_test} test images; "
        f"ψ = {m['psi']}; backbone {m['backbone']}; {len(run.metrics)} epochs",
        f"command: {run.config.get('env', {}).get('command', '?')}",
    ]
    if agreement is not None and agreement["aux_head_matches_generator"] is not None:
        remarks.append(
            f"the auxiliary head predicts the generator's label (argmax) on "
            f"{agreement['aux_head_matches_generator']:.1%} of the test images"
        )
    report = write_report(
        out_dir / "report.html",
        f"maxl run {label}",
        run.config,
        run.metrics,
        figures,
        summary=read_summary(run_dir),
        agreement=agreement_rows,
        warnings=warnings,
        remarks=remarks,
    )
    return {"figures": [p for _, p in figures], "report": report, "agreement": agreement}


def _write_json(path: Path, obj) -> None:
    """Atomic JSON; NaN (an undefined score) is written as null, which every JSON reader accepts."""

    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(clean(obj), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def compare_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> tuple[Path, list[dict]]:
    """Training curves of several runs on one figure, and the task weights of those that record
    them (``train_weight_<task>``) on a second, :func:`weights_png`.

    Args:
        run_dirs: run folders (``config.json`` and ``metrics.jsonl`` are read; no checkpoint needed).
        out: the PNG to write.

    Returns:
        The PNG path and one row per run (name, method, data set, epochs, final / best / last-5
        test accuracy from ``summary.json`` where the run finished).

    Raises:
        ValueError: no run given.
    """
    if not run_dirs:
        raise ValueError("compare needs at least one run folder")
    runs, rows = [], []
    for run_dir in run_dirs:
        config = read_config(run_dir)
        metrics = read_metrics(run_dir)
        name = run_label(run_dir, config)
        runs.append((name, metrics))
        summary = read_summary(run_dir) or {}
        rows.append(
            {
                "run": name,
                "data": config["data"].get("name", config["data"]["dataset"]),
                "epochs": len(metrics),
                "final_test_acc": summary.get("final_test_acc", math.nan),
                "best_test_acc": summary.get("best_test_acc", math.nan),
                "last5_mean_test_acc": summary.get("last5_mean_test_acc", math.nan),
            }
        )
    datasets = sorted({r["data"] for r in rows})
    fig = plots.curves(runs, f"{', '.join(datasets)}: {len(runs)} run(s)")
    path = plots.save_png(fig, out)
    weighted = [(name, metrics) for name, metrics in runs if plots.weight_keys([(name, metrics)])]
    if weighted:  # beside the curves: OUT-weights.png
        fig = plots.task_weights(weighted, f"{', '.join(datasets)}: task weights")
        plots.save_png(fig, weights_png(path))
    return path, rows


def weights_png(out: str | os.PathLike) -> Path:
    """Where :func:`compare_runs` draws the task weights of runs that record them: ``OUT-weights.png``."""
    out = Path(out)
    return out.with_name(f"{out.stem}-weights.png")


def summarise_label_warnings(metrics: list[dict]) -> list[str]:
    """The label-usage warnings of a run's ``metrics.jsonl`` records, one line per kind (the text
    between ``"epoch N: "`` and the next colon, e.g. ``"generator collapsed"``): the latest
    message of that kind and the epochs in which it was given."""
    groups: dict[str, tuple[list[int], str]] = {}
    for record in metrics:
        for message in record.get("label_warnings", []):
            found = re.match(r"epoch (\d+): ([^:]+):", message)
            kind = found.group(2) if found else message
            epoch = int(found.group(1)) if found else record.get("epoch", 0)
            epochs, _ = groups.get(kind, ([], message))
            groups[kind] = (epochs + [epoch], message)
    return [
        message if len(epochs) == 1 else f"{message} (given in {len(epochs)} epochs, {epochs[0]} to {epochs[-1]})"
        for epochs, message in groups.values()
    ]
