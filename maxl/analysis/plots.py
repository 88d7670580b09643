"""Matplotlib figures of a MAXL run: top-k image grids, 2-D embeddings, contingency
heat-maps, label usage over epochs and training curves.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, so no global
state and no display: the Agg renderer writes the PNGs). Every figure has a fixed pixel size
that follows from its content, stated in each docstring, with ``DPI`` pixels per inch; axes
are placed in pixel units, so the size never depends on text extents.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "DPI",
    "save_png",
    "topk_grid",
    "EmbeddingPanel",
    "embedding_grid",
    "contingency_grid",
    "usage_heatmap",
    "curves",
    "task_weights",
    "weight_keys",
    "meta_grad_keys",
    "GRID_CELL_PX",
    "GRID_LABEL_PX",
    "TITLE_PX",
    "EMBED_PANEL_PX",
    "EMBED_LEGEND_PX",
    "HEATMAP_PX",
    "CURVES_SIZE_PX",
    "USAGE_WIDTH_PX",
]

DPI = 100
TITLE_PX = 40  # band for the figure title
GRID_CELL_PX = 96  # one image of a top-k grid with its probability below
GRID_LABEL_PX = 230  # the row labels left of a top-k grid
EMBED_PANEL_PX = 330  # one square scatter panel (axes and its title)
EMBED_LEGEND_PX = 150  # the legend right of each scatter panel
HEATMAP_PX = (380, 360)  # one contingency panel (width, height)
CURVES_SIZE_PX = (1300, 900)
USAGE_WIDTH_PX = 1000


def _figure(width_px: int, height_px: int) -> Figure:
    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)


def _axes(fig: Figure, left: float, top: float, width: float, height: float):
    """Axes at a rectangle given in pixels from the figure's top-left corner."""
    fw, fh = fig.get_size_inches() * DPI
    return fig.add_axes((left / fw, 1 - (top + height) / fh, width / fw, height / fh))


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG of exactly its pixel size, atomically (temporary file, then rename).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _colours(n: int) -> list:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    return [cmap(i if n <= 20 else i / max(n - 1, 1)) for i in range(n)]


# --------------------------------------------------------------------------- top-k grid
def topk_grid(images, indices, probs, row_labels: Sequence[str], title: str) -> Figure:
    """Rows of images, e.g. the k test images most probable for each auxiliary class.

    Args:
        images: uint8 ``[N, C, H, W]`` (C = 1 or 3), the images in their stored colours.
        indices: int ``[R, k]`` indices into ``images``; −1 leaves a cell empty.
        probs: float ``[R, k]``, written under each image.
        row_labels: R texts left of the rows.
        title: figure title.

    Returns:
        A figure of ``GRID_LABEL_PX + k·GRID_CELL_PX`` × ``TITLE_PX + R·GRID_CELL_PX`` pixels.
    """
    indices, probs = np.asarray(indices), np.asarray(probs)
    rows, k = indices.shape
    if len(row_labels) != rows or probs.shape != indices.shape:
        raise ValueError(
            f"{rows} rows of indices need {rows} labels and probs of shape {indices.shape}, "
            f"got {len(row_labels)} labels and probs {probs.shape}"
        )
    fig = _figure(GRID_LABEL_PX + k * GRID_CELL_PX, TITLE_PX + rows * GRID_CELL_PX)
    heading = fig.text(0.5, 1 - 10 / fig.bbox.height, title, ha="center", va="top", fontsize=13, weight="bold")
    renderer = FigureCanvasAgg(fig).get_renderer()
    for _ in range(6):  # a long title (a run's path) shrinks to fit instead of being cut off
        width = heading.get_window_extent(renderer).width
        if width <= fig.bbox.width - 16:
            break
        heading.set_fontsize(float(heading.get_fontsize()) * 0.97 * (fig.bbox.width - 16) / width)
    caption_px = 14
    for r in range(rows):
        top = TITLE_PX + r * GRID_CELL_PX
        fig.text(
            8 / fig.bbox.width,
            1 - (top + GRID_CELL_PX / 2) / fig.bbox.height,
            row_labels[r],
            ha="left",
            va="center",
            fontsize=9,
        )
        for c in range(k):
            left = GRID_LABEL_PX + c * GRID_CELL_PX + 4
            ax = _axes(fig, left, top + 2, GRID_CELL_PX - 8, GRID_CELL_PX - 8 - caption_px)
            ax.set_axis_off()
            if indices[r, c] < 0:
                continue
            image = np.asarray(images[int(indices[r, c])])  # [C, H, W] uint8
            if image.shape[0] == 1:
                ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
            ax.set_title(f"{probs[r, c]:.2f}", fontsize=8, y=-0.22)
    return fig


# --------------------------------------------------------------------------- embeddings
@dataclass
class EmbeddingPanel:
    """One scatter panel of a 2-D embedding.

    Attributes:
        xy: float ``[n, 2]`` coordinates.
        labels: int ``[n]`` colour classes, indices into ``names``.
        names: names of the classes (legend).
        title: panel title.
    """

    xy: np.ndarray
    labels: np.ndarray
    names: Sequence[str]
    title: str


def embedding_grid(panels: Sequence[Sequence[EmbeddingPanel | None]], title: str) -> Figure:
    """A grid of scatter plots (rows × columns; None leaves a cell empty).

    Returns:
        A figure of ``cols·(EMBED_PANEL_PX + EMBED_LEGEND_PX)`` × ``TITLE_PX + rows·EMBED_PANEL_PX``
        pixels.
    """
    rows, cols = len(panels), max(len(row) for row in panels)
    fig = _figure(cols * (EMBED_PANEL_PX + EMBED_LEGEND_PX), TITLE_PX + rows * EMBED_PANEL_PX)
    fig.text(0.5, 1 - 10 / fig.bbox.height, title, ha="center", va="top", fontsize=13, weight="bold")
    for r, row in enumerate(panels):
        for c, panel in enumerate(row):
            if panel is None:
                continue
            left, top = c * (EMBED_PANEL_PX + EMBED_LEGEND_PX), TITLE_PX + r * EMBED_PANEL_PX
            ax = _axes(fig, left + 20, top + 30, EMBED_PANEL_PX - 30, EMBED_PANEL_PX - 45)
            colours = _colours(len(panel.names))
            labels = np.asarray(panel.labels)
            for k in range(len(panel.names)):
                members = labels == k
                ax.scatter(
                    panel.xy[members, 0],
                    panel.xy[members, 1],
                    s=5,
                    color=colours[k],
                    alpha=0.75,
                    linewidths=0,
                    rasterized=True,
                )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(panel.title, fontsize=8)
            shown = [k for k in range(len(panel.names)) if (labels == k).any()][:20]
            handles = [Line2D([], [], marker="o", linestyle="", color=colours[k], markersize=5) for k in shown]
            ax.legend(
                handles,
                [str(panel.names[k])[:18] for k in shown],
                loc="upper left",
                fontsize=7,
                bbox_to_anchor=(1.01, 1.0),
                frameon=False,
                handletextpad=0.2,
                borderaxespad=0,
            )
    return fig


# --------------------------------------------------------------------------- contingency tables
def contingency_grid(
    tables: Sequence[np.ndarray],
    row_names: Sequence[Sequence[str]],
    col_names: Sequence[Sequence[str]],
    titles: Sequence[str],
    title: str,
    columns: int = 4,
) -> Figure:
    """Heat-maps of contingency tables, one panel each, cells coloured by the row's fraction
    (the make-up of each generated cluster) and annotated with the counts.

    Args:
        tables: int ``[R_i, C_i]`` per panel.
        row_names, col_names: labels of each table's rows and columns.
        titles: panel titles.
        title: figure title.
        columns: panels per figure row.

    Returns:
        A figure of ``min(n, columns)·HEATMAP_PX[0]`` × ``TITLE_PX + ceil(n / columns)·HEATMAP_PX[1]``
        pixels for n tables.
    """
    n = len(tables)
    if not n == len(row_names) == len(col_names) == len(titles):
        raise ValueError(f"need as many row names, column names and titles as tables ({n})")
    cols, rows = min(n, columns), math.ceil(n / columns)
    width, height = HEATMAP_PX
    fig = _figure(cols * width, TITLE_PX + rows * height)
    fig.text(0.5, 1 - 10 / fig.bbox.height, title, ha="center", va="top", fontsize=13, weight="bold")
    for i, table in enumerate(tables):
        table = np.asarray(table)
        left, top = (i % columns) * width, TITLE_PX + (i // columns) * height
        ax = _axes(fig, left + 95, top + 40, width - 110, height - 120)
        fraction = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
        ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for (r, c), count in np.ndenumerate(table):
            ax.text(
                c,
                r,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if fraction[r, c] > 0.6 else "black",
            )
        ax.set_yticks(range(table.shape[0]), [str(s)[:14] for s in row_names[i]], fontsize=7)
        ax.set_xticks(
            range(table.shape[1]),
            [str(s)[:14] for s in col_names[i]],
            fontsize=7,
            rotation=60,
            ha="right",
            rotation_mode="anchor",
        )
        ax.set_title(titles[i], fontsize=8)
    return fig


# --------------------------------------------------------------------------- label usage
def usage_heatmap(counts: np.ndarray, psi: Sequence[int], row_names: Sequence[str], title: str) -> Figure:
    """Share of each auxiliary class among its primary class's training images (argmax of the
    generated labels), per epoch.

    Args:
        counts: int ``[E, K]``, argmax counts per epoch (``label_counts`` of ``metrics.jsonl``).
        psi: the hierarchy ψ (block sizes, ``sum(ψ) = K``).
        row_names: K names.
        title: figure title.

    Returns:
        A figure of ``USAGE_WIDTH_PX`` × ``TITLE_PX + 70 + K·r`` pixels, r = clip(600 // K, 4, 22).
    """
    counts = np.asarray(counts, dtype=np.float64)
    epochs, k = counts.shape
    if k != sum(psi) or len(row_names) != k:
        raise ValueError(f"counts have {k} columns, psi sums to {sum(psi)}, {len(row_names)} names given")
    row_px = int(np.clip(600 // k, 4, 22))
    fig = _figure(USAGE_WIDTH_PX, TITLE_PX + 70 + k * row_px)
    fig.text(0.5, 1 - 10 / fig.bbox.height, title, ha="center", va="top", fontsize=13, weight="bold")
    share = np.zeros_like(counts)
    starts = np.concatenate([[0], np.cumsum(psi)[:-1]])
    for s, n in zip(starts, psi):
        share[:, s : s + n] = counts[:, s : s + n] / np.maximum(counts[:, s : s + n].sum(axis=1, keepdims=True), 1)
    ax = _axes(fig, 140, TITLE_PX + 10, USAGE_WIDTH_PX - 260, k * row_px)
    image = ax.imshow(
        share.T,
        cmap="viridis",
        vmin=0,
        vmax=1,
        aspect="auto",
        interpolation="nearest",
        extent=(0.5, epochs + 0.5, k - 0.5, -0.5),
    )
    for s in starts[1:]:
        ax.axhline(s - 0.5, color="white", linewidth=1)
    if row_px >= 9:
        ax.set_yticks(range(k), [str(s)[:20] for s in row_names], fontsize=7)
    else:
        ax.set_yticks([])
        ax.set_ylabel(f"{k} auxiliary classes in blocks of ψ", fontsize=8)
    ax.set_xlabel("epoch", fontsize=9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    cax = _axes(fig, USAGE_WIDTH_PX - 100, TITLE_PX + 10, 15, k * row_px)
    fig.colorbar(image, cax=cax).set_label("share of its primary class", fontsize=8)
    return fig


# --------------------------------------------------------------------------- training curves
def _series(metrics: Sequence[dict], key: str) -> tuple[list, list]:
    pairs = [(r["epoch"], r[key]) for r in metrics if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def curves(runs: Sequence[tuple[str, Sequence[dict]]], title: str) -> Figure:
    """Training curves of one or more runs: primary accuracy, primary loss, auxiliary and meta
    losses, and the generated-label diagnostics (:mod:`maxl.train.diagnostics`), one colour per run.

    Args:
        runs: ``(name, metrics records)`` per run.
        title: figure title.

    Returns:
        A figure of ``CURVES_SIZE_PX`` pixels.
    """
    fig = _figure(*CURVES_SIZE_PX)
    fig.text(0.5, 1 - 10 / fig.bbox.height, title, ha="center", va="top", fontsize=13, weight="bold")
    w, h = CURVES_SIZE_PX
    panel_w, panel_h = (w - 40) // 2, (h - TITLE_PX - 20) // 2
    axes = [
        _axes(fig, 70 + c * panel_w, TITLE_PX + 20 + r * panel_h, panel_w - 110, panel_h - 75)
        for r in range(2)
        for c in range(2)
    ]
    panels = [
        ("primary accuracy (— test, -- train)", [("test_acc", "-"), ("train_acc", "--")]),
        ("primary loss (— test, -- train)", [("test_loss", "-"), ("train_primary_loss", "--")]),
        ("auxiliary loss (—), meta objective L_pri(θ1⁺) (··)", [("train_aux_loss", "-"), ("meta_outer_loss", ":")]),
        ("generated labels: — used fraction, -- sharpness, ··  H(ȳ)/log K", []),
    ]
    colours = _colours(len(runs))
    for ax, (panel_title, keys) in zip(axes, panels):
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        drawn = False
        for (_, metrics), colour in zip(runs, colours):
            series = [(key, style) + _series(metrics, key) for key, style in keys]
            if not keys:  # the label-usage panel
                used, sharp = _series(metrics, "label_used_fraction"), _series(metrics, "label_sharpness")
                entropy = [
                    (r["epoch"], r["label_entropy"] / math.log(len(r["label_counts"])))
                    for r in metrics
                    if "label_entropy" in r and len(r.get("label_counts", ())) > 1
                ]
                series = [
                    ("used", "-", *used),
                    ("sharp", "--", *sharp),
                    ("entropy", ":", [e for e, _ in entropy], [v for _, v in entropy]),
                ]
            for _, style, x, y in series:
                if x:
                    ax.plot(x, y, style, color=colour, marker="o" if len(x) < 30 else None, markersize=3)
                    drawn = True
        if not drawn:
            ax.text(
                0.5,
                0.5,
                "not recorded by these runs",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=9,
                color="grey",
            )
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=c, linewidth=2) for c in colours]
    fig.legend(
        handles, [name for name, _ in runs], loc="lower center", ncol=min(len(runs), 4), fontsize=8, frameon=False
    )
    return fig


def _keys_with_prefix(runs: Sequence[tuple[str, Sequence[dict]]], prefix: str) -> list[str]:
    """The keys starting with ``prefix`` that any run's records hold, in the order first seen."""
    keys: list[str] = []
    for _, metrics in runs:
        for record in metrics:
            keys += [k for k in record if k.startswith(prefix) and k not in keys]
    return keys


def weight_keys(runs: Sequence[tuple[str, Sequence[dict]]]) -> list[str]:
    """The ``train_weight_<task>`` keys any run's records hold, in the order first seen."""
    return _keys_with_prefix(runs, "train_weight_")


def meta_grad_keys(runs: Sequence[tuple[str, Sequence[dict]]]) -> list[str]:
    """The ``train_meta_grad_<task>`` keys (the mean meta-gradient each task weight received per
    step, Auto-λ and OL-AUX) any run's records hold, in the order first seen."""
    return _keys_with_prefix(runs, "train_meta_grad_")


def task_weights(runs: Sequence[tuple[str, Sequence[dict]]], title: str) -> Figure:
    """The task weights per epoch (``train_weight_<task>``, the epoch's mean weight of each task's
    loss: learnt by a meta-learned weighting, or set by a loss weighting), one panel per run, one
    colour per task; where any run recorded them, beside each a panel of the mean meta-gradient
    each weight received (``train_meta_grad_<task>``: below 0, the look-ahead asks for more of the
    task).

    Args:
        runs: ``(name, metrics records)`` per run.
        title: figure title.

    Returns:
        A figure ``CURVES_SIZE_PX[0]`` pixels wide.
    """
    keys, grad_keys = weight_keys(runs), meta_grad_keys(runs)
    tasks = [k[len("train_weight_") :] for k in keys]
    tasks += [k[len("train_meta_grad_") :] for k in grad_keys if k[len("train_meta_grad_") :] not in tasks]
    w = CURVES_SIZE_PX[0]
    panel_h = 300
    fig = _figure(w, TITLE_PX + 20 + panel_h * len(runs))
    fig.text(0.5, 1 - 10 / fig.bbox.height, title, ha="center", va="top", fontsize=13, weight="bold")
    colour_of = dict(zip(tasks, _colours(len(tasks))))
    panels = [("train_weight_", "weight of each task's loss (epoch mean)")]
    if grad_keys:
        panels.append(("train_meta_grad_", "meta-gradient of each weight (mean per step)"))
    width = (w - 230) / len(panels) - (60 if grad_keys else 0)
    for r, (name, metrics) in enumerate(runs):
        for c, (prefix, what) in enumerate(panels):
            ax = _axes(fig, 70 + c * (width + 90), TITLE_PX + 20 + r * panel_h, width, panel_h - 75)
            ax.set_title(f"{name}: {what}", fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            if prefix == "train_meta_grad_":
                ax.axhline(0.0, color="black", linewidth=0.8)
            drawn = False
            for task, colour in colour_of.items():
                x, y = _series(metrics, prefix + task)
                if x:
                    ax.plot(x, y, "-", color=colour, marker="o" if len(x) < 30 else None, markersize=3, label=task)
                    drawn = True
            if not drawn:
                ax.text(0.5, 0.5, "not recorded by this run", ha="center", va="center", transform=ax.transAxes,
                        fontsize=9, color="grey")  # fmt: skip
            if c == len(panels) - 1:
                handles = [Line2D([], [], color=colour, marker="o", markersize=3) for colour in colour_of.values()]
                ax.legend(handles, list(colour_of), loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8,
                          frameon=False)  # fmt: skip
            ax.xaxis.get_major_locator().set_params(integer=True)
    return fig
