"""The task-weights figure (``maxl visualise`` / ``maxl compare``): a panel of weights per run and,
where the runs recorded it, a panel of the meta-gradient each weight received beside it."""

import matplotlib

matplotlib.use("Agg")

from maxl.analysis import plots  # noqa: E402


def _records(with_grads: bool) -> list[dict]:
    records = []
    for epoch in range(1, 4):
        r = {"epoch": epoch, "train_weight_primary": 1.0, "train_weight_rotation": 1.0 - 0.1 * epoch}
        if with_grads:
            r.update(train_meta_grad_primary=0.0, train_meta_grad_rotation=0.01 * epoch)
        records.append(r)
    return records


def _lines(ax) -> dict[str, list[float]]:
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_meta_gradients_get_a_panel_beside_the_weights_with_the_same_colours():
    runs = [("auto-lambda", _records(True)), ("equal", _records(False))]
    assert plots.meta_grad_keys(runs) == ["train_meta_grad_primary", "train_meta_grad_rotation"]
    fig = plots.task_weights(runs, "weights")
    axes = fig.get_axes()
    assert len(axes) == 4  # weights and meta-gradients, per run
    weights, grads = axes[0], axes[1]
    assert "weight of each task" in weights.get_title() and "meta-gradient" in grads.get_title()
    assert _lines(weights)["rotation"] == [0.9, 0.8, 0.7]
    assert _lines(grads)["rotation"] == [0.01, 0.02, 0.03]
    colour = {ax: {ln.get_label(): ln.get_color() for ln in ax.get_lines()} for ax in (weights, grads)}
    assert colour[weights]["rotation"] == colour[grads]["rotation"] != colour[grads]["primary"]
    assert _lines(axes[3]) == {}  # the run without meta-gradients: an empty panel, no invented values


def test_runs_without_meta_gradients_keep_one_panel_each():
    runs = [("dwa", _records(False)), ("equal", _records(False))]
    assert plots.meta_grad_keys(runs) == []
    axes = plots.task_weights(runs, "weights").get_axes()
    assert len(axes) == 2 and all("weight of each task" in ax.get_title() for ax in axes)
