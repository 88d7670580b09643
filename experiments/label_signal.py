"""Issue 13's mechanism: how much per-image information does the look-ahead give the labels?

The generator learns from ∂J/∂z_b, the meta-gradient of J = L_pri(f(x; θ1⁺)) with respect to the
logits z_b [sum(ψ)] of each image b's label (θ1⁺ = θ1 − α∇θ1[L_pri + L_aux(ŷ)], ŷ = masked softmax
of z; Liu, Davison, Johns, NeurIPS 2019, Eq. 3–4, the entropy term left out). Inside the block
of primary class k these gradients form a matrix G_k [n_k, ψ_k]. The script measures

* ``shared``: the share ‖mean‖² n_k / ‖G_k‖² of the push that is the same for every image of the
  class (a class-level preference, which the entropy term then fights);
* ``top1``: the share of the rest (G_k minus its mean row) in its first singular direction, and
  ``eff_rank``, exp of the entropy of the normalised squared singular values: 1 if every image is
  pushed along one axis (the labels can only encode one number per image), ψ_k − 1 at most;
* ``nmi_signal``: NMI, inside each primary class, of the human fine label with the auxiliary class
  that the meta-gradient raises most for each image (argmin_c ∂J/∂z_bc), i.e. whether the per-image
  signal follows the image's content as people label it; ``nmi_labels``: the same for the
  generator's current argmax;
* ``null_top1``: top1 of Gaussian noise of the same shape (what "no structure" gives);
* ``J_human``, ``J_random``, ``J_generated``, ``J_uniform``: the outer loss after a look-ahead step
  on the human fine labels, random labels, the generator's and uniform ones, and the paired
  difference human − random (mean over batches ± its standard error): whether the objective can
  tell the human hierarchy from random labels at all;
* with ``--horizons``: the held-out primary loss after k plain SGD steps on each kind of labels;
  with ``--neumann``: the same question for the implicit engine's linearised (K + 1)-step horizon
  (:func:`implicit_by_labels`), and whether its Neumann series converges there.

At several points of a MAXL run (the protocol's networks, trained by the trainer between the
points). A first-order view of why the primary task's number of classes matters: a step on an
auxiliary label moves the features along the auxiliary head's rows, and the primary loss changes
through the primary head's rows, whose differences span P − 1 directions; with P = 2 (animal /
vehicle, even / odd) the per-image push is close to one-dimensional.

::

    python -m experiments.label_signal --grid protocol-cifar10 --data-root /tmp/data/cifar10-jpeg \\
        --epochs-at 0 3 8 --out figures/generated-labels/label-signal-cifar10.json
    # the same network and data with the 10 classes as the primary task (psi = 5 each)
    python -m experiments.label_signal --grid protocol-cifar10 --data-root /tmp/data/cifar10-jpeg \\
        --primary classes --epochs-at 0 3 8 --out figures/generated-labels/label-signal-cifar10-10way.json
    # MNIST, long protocol: the implicit engine's horizons
    python -m experiments.label_signal --grid protocol-mnist-long --data-root /tmp/data --epochs-at 10 30 \
        --batches 4 --outer-images 200 --neumann 0 10 30 100 --neumann-step 0.01 0.03 \
        --out figures/generated-labels/label-signal-implicit-mnist-long.json
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score
from torch import Tensor, nn

from maxl.cli.grid import overlay_flags
from maxl.meta import MetaConfig, ObjectiveConfig, meta_gradient
from maxl.meta.lookahead import buffer_copies, functional_forward, primary_gradient, trainable
from maxl.train.build import RunConfig, build
from maxl.train.grid import grid_names, load_grid
from maxl.train.overlays import dotted, merge_overlays

#: the MAXL variants of the generated-labels protocol (maxl/grids/_generated-labels.toml): name -> overlay
VARIANTS = load_grid("protocol-cifar10").variants


class FixedLogits(nn.Module):
    """A "generator" whose labels are the masked softmax of one logit row per image: its
    meta-gradient is ∂J/∂z, float ``[B, sum(ψ)]``."""

    def __init__(self, logits: Tensor, hierarchy):
        super().__init__()
        self.z = nn.Parameter(logits.clone())
        self.hierarchy = hierarchy

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.hierarchy.masked_softmax(self.z, y)


def _items(dataset, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    items = [dataset[int(i)] for i in indices]
    return (
        torch.stack([it[0] for it in items]),
        torch.as_tensor([int(it[1]) for it in items]),
        torch.as_tensor([int(it[2]) for it in items]),
    )


def _outer_set(trainer, images: Tensor, outer_images: int, seed: int):
    """``(x_o, y_o)``: ``outer_images`` training images outside ``images``, drawn from ``seed``
    (None for 0: the outer loss on the inner batch, the paper's J)."""
    if not outer_images:
        return None
    rest = torch.ones(len(trainer.train_set), dtype=torch.bool)
    rest[images] = False
    pool = rest.nonzero().squeeze(1)
    pick = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:outer_images]]
    return _items(trainer.train_set, pick)[:2]


KINDS = ("human", "random", "generated", "uniform")


def _label_target(kind: str, trainer, x: Tensor, y: Tensor, idx: Tensor, draw: torch.Generator) -> Tensor:
    """The auxiliary targets float ``[B, sum(ψ)]`` of one kind of labels: the human fine labels,
    a random class inside each image's block (drawn from ``draw``), the generator's current labels
    or uniform labels inside the block (no gradient)."""
    hierarchy, k = trainer.generator.hierarchy, trainer.generator.hierarchy.num_aux
    with torch.no_grad():
        if kind == "human":
            return nn.functional.one_hot(trainer.human_labels[idx], k).to(x.dtype)
        if kind == "random":
            starts = torch.as_tensor(hierarchy.starts)[y]
            widths = torch.as_tensor(hierarchy.psi)[y]
            return nn.functional.one_hot(starts + (torch.rand(len(y), generator=draw) * widths).long(), k).to(x.dtype)
        if kind == "generated":
            return trainer.generator(x, y)
        return hierarchy.masked_softmax(torch.zeros(len(y), k), y)


def label_gradients(trainer, batches: int, seed: int, shuffle: int = 0, outer_images: int = 0) -> dict[str, np.ndarray]:
    """∂J/∂z on ``batches`` training batches of a fixed set of images (drawn from ``seed``), the
    generator's logits, primary and human labels, rows in the set's order. ``shuffle`` > 0 puts the
    same images into other batches (another permutation), to tell the per-image signal from the
    batch's. ``outer_images`` > 0: the outer loss on one fixed set of that many other training
    images for every batch (drawn from ``seed + 1``), instead of the inner batch (the paper's J)."""
    gen, net = trainer.generator, trainer.net
    alpha = trainer.optimizer.param_groups[0]["lr"]
    cfg, objective = MetaConfig(inner_lr=alpha, engine="jvp"), ObjectiveConfig(entropy_weight=0.0)
    out = {"grad": [], "logits": [], "y": [], "human": [], "idx": []}
    generator = torch.Generator().manual_seed(seed)
    images = torch.randperm(len(trainer.train_set), generator=generator)[: batches * trainer.config.batch_size]
    order = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(shuffle))] if shuffle else images
    outer = _outer_set(trainer, images, outer_images, seed + 1)
    net.train()  # the look-ahead runs in training mode, as in a real meta step (on copies of the buffers)
    for chunk in order.split(trainer.config.batch_size):
        x, y, idx = _items(trainer.train_set, chunk)
        with torch.no_grad():
            z = gen.logits(x)[:, : gen.hierarchy.num_aux]
        fixed = FixedLogits(z, gen.hierarchy)
        result = meta_gradient(
            net, fixed, x, y, trainer.loss_fn, cfg, check_graph=False, outer_batch=outer, objective=objective
        )
        out["grad"].append(result.grads[0].detach())
        out["logits"].append(z)
        out["y"].append(y)
        out["human"].append(trainer.human_labels[idx] if trainer.human_labels is not None else torch.full_like(y, -1))
        out["idx"].append(chunk)
    data = {k: torch.cat(v).numpy() for k, v in out.items()}
    back = np.argsort(data.pop("idx"))  # rows in the order of the sorted image indices
    return {k: v[back] for k, v in data.items()}


def _lookahead_outer_loss(trainer, x, y, target, x_o, y_o, alpha: float, masked: bool) -> float:
    """L_pri(f(x_o; θ1⁺)) after θ1⁺ = θ1 − α∇θ1[L_pri + L_aux(target)]; ``masked``: L_aux is the
    cross-entropy of the auxiliary head's softmax restricted to each image's block."""
    net, hierarchy = trainer.net, trainer.generator.hierarchy
    names, params = trainable(net)
    buffers = buffer_copies(net)
    primary, aux = functional_forward(net, names, buffers, x)(params)
    if masked:
        aux_loss = -(target * hierarchy.masked_log_softmax(aux, y).clamp_min(-1e4)).sum(1).mean()
    else:
        aux_loss = trainer.loss_fn(aux, target)
    grads = torch.autograd.grad(trainer.loss_fn(primary, y) + aux_loss, params, allow_unused=True)
    fast = [p if g is None else p - alpha * g for p, g in zip(params, grads)]
    with torch.no_grad():
        return float(trainer.loss_fn(functional_forward(net, names, buffers, x_o)(fast)[0], y_o))


def objective_by_labels(
    trainer, batches: int, seed: int, outer_images: int = 0, masked: bool = False
) -> dict[str, float]:
    """The look-ahead's outer loss L_pri(f(x_o; θ1⁺)) when the auxiliary head learns from given
    labels: the human fine labels, random labels inside the block (one fixed draw), the
    generator's current labels, and uniform labels inside the block; the same batches and outer
    images for each (``label_gradients``' choice). Whether the one-step objective that MAXL's
    generator climbs can tell the human hierarchy from random labels at all.

    Returns:
        mean loss per kind (``J_human``, ``J_random``, ``J_generated``, ``J_uniform``), and
        ``human_minus_random`` / ``human_minus_random_se``: the mean paired difference over batches
        and its standard error.
    """
    alpha = trainer.optimizer.param_groups[0]["lr"]
    images = torch.randperm(len(trainer.train_set), generator=torch.Generator().manual_seed(seed))
    images = images[: batches * trainer.config.batch_size]
    outer = _outer_set(trainer, images, outer_images, seed + 1)
    draw = torch.Generator().manual_seed(seed + 2)
    losses: dict[str, list[float]] = {kind: [] for kind in KINDS}
    trainer.net.train()
    for chunk in images.split(trainer.config.batch_size):
        x, y, idx = _items(trainer.train_set, chunk)
        x_o, y_o = outer if outer is not None else (x, y)
        for kind in KINDS:
            target = _label_target(kind, trainer, x, y, idx, draw)
            losses[kind].append(_lookahead_outer_loss(trainer, x, y, target, x_o, y_o, alpha, masked))
    diff = np.array(losses["human"]) - np.array(losses["random"])
    tag = "masked_" if masked else ""
    out = {f"{tag}J_{kind}": float(np.mean(v)) for kind, v in losses.items()}
    out.update(
        {
            f"{tag}human_minus_random": float(diff.mean()),
            f"{tag}human_minus_random_se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
        }
    )
    return out


def horizon_effect(trainer, horizons: list[int], seed: int, outer_images: int, repeats: int = 3) -> dict[str, float]:
    """The effect of the auxiliary labels on the primary loss of held-out images after k plain SGD
    steps of a copy of the multi-task network on k training batches (the same batches and step
    size for every kind of label: human fine labels, random labels inside the block, the
    generator's current labels, uniform labels), for each k in ``horizons``; ``repeats`` batch
    sequences. k = 1 on the same batch is MAXL's look-ahead; large k approaches the real training.

    Returns:
        per k: ``h{k}_human_minus_random``, ``h{k}_human_minus_uniform``, ``h{k}_generated_minus_random``
        (mean paired difference of the held-out primary loss over the repeats) and ``_se`` of the first.
    """
    import copy

    alpha = trainer.optimizer.param_groups[0]["lr"]
    n = len(trainer.train_set)
    held = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))[:outer_images]
    x_o, y_o, _ = _items(trainer.train_set, held)
    rest = torch.ones(n, dtype=torch.bool)
    rest[held] = False
    pool = rest.nonzero().squeeze(1)
    k_max, b = max(horizons), trainer.config.batch_size
    results = {k: {kind: [] for kind in KINDS} for k in horizons}
    for r in range(repeats):
        order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed + 10 + r))]
        batches = [_items(trainer.train_set, order[(i * b) % len(order) :][:b]) for i in range(k_max)]
        draw = torch.Generator().manual_seed(seed + 100 + r)
        for kind in KINDS:
            net = copy.deepcopy(trainer.net)
            opt = torch.optim.SGD(net.parameters(), lr=alpha)
            for step, (x, y, idx) in enumerate(batches, 1):
                target = _label_target(kind, trainer, x, y, idx, draw)
                net.train()
                primary, aux = net(x)
                loss = trainer.loss_fn(primary, y) + trainer.loss_fn(aux, target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step in horizons:
                    net.eval()
                    with torch.no_grad():
                        results[step][kind].append(float(trainer.loss_fn(net(x_o)[0], y_o)))
    out = {}
    for k in horizons:
        res = {kind: np.array(v) for kind, v in results[k].items()}
        diff = res["human"] - res["random"]
        out[f"h{k}_human_minus_random"] = float(diff.mean())
        out[f"h{k}_human_minus_random_se"] = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else math.nan
        out[f"h{k}_human_minus_uniform"] = float((res["human"] - res["uniform"]).mean())
        out[f"h{k}_generated_minus_random"] = float((res["generated"] - res["random"]).mean())
    return out


def implicit_by_labels(
    trainer, batches: int, seed: int, outer_images: int, terms: list[int], step: float | None = None
) -> dict[str, float]:
    """What the implicit engine's objective says of each kind of labels: the linearised change of the
    held-out primary loss that learning from them causes over a (K + 1)-step horizon,
    ΔJ_K = −γ ⟨∇θ1 L_aux(θ1, labels), v_K⟩ with v_K = Σ_{j=0}^{K} (I − γH)^j ∇θ1 L_pri(x_o)
    (:mod:`maxl.meta.engines.implicit`; H on each batch with those labels), for each K in ``terms``,
    on ``label_gradients``' batches and one fixed set of ``outer_images`` held-out training images.
    Whether a long horizon, linearised, prefers the human hierarchy where one look-ahead step does not.

    Args:
        step: γ, the series' step (None: the multi-task network's current learning rate, as the
            engine's default α).

    Returns:
        per K: ``n{K}_human_minus_random`` (mean paired difference of ΔJ over batches), its ``_se``,
        ``n{K}_human_minus_uniform``, and ``n{K}_growth``, the median over batches and labels of
        ‖(I − γH)^K g‖ / ‖g‖, the size of the series' last term (above 1: it diverges); ``step``.
    """
    from maxl.meta.engines.implicit import neumann_sums

    gamma = trainer.optimizer.param_groups[0]["lr"] if step is None else step
    net = trainer.net
    images = torch.randperm(len(trainer.train_set), generator=torch.Generator().manual_seed(seed))
    images = images[: batches * trainer.config.batch_size]
    x_o, y_o = _outer_set(trainer, images, outer_images, seed + 1)
    draw = torch.Generator().manual_seed(seed + 2)
    names, params = trainable(net)
    changes = {k: {kind: [] for kind in KINDS} for k in terms}
    growth = {k: [] for k in terms}
    net.train()
    for chunk in images.split(trainer.config.batch_size):
        x, y, idx = _items(trainer.train_set, chunk)
        buffers = buffer_copies(net)
        call = functional_forward(net, names, buffers, x)
        leaves = [p.detach().clone().requires_grad_() for p in params]
        _, g_o = primary_gradient(functional_forward(net, names, buffers, x_o), leaves, y_o, trainer.loss_fn)
        g_norm = torch.sqrt(sum((g * g).sum() for g in g_o))
        for kind in KINDS:
            target = _label_target(kind, trainer, x, y, idx, draw)
            aux_grads = torch.autograd.grad(trainer.loss_fn(call(leaves)[1], target), leaves, allow_unused=True)
            previous = None
            for k, v in enumerate(
                neumann_sums(call, names, leaves, y, target, trainer.loss_fn, None, g_o, gamma, max(terms))
            ):
                if k in changes:
                    dot = sum((g * vi).sum() for g, vi in zip(aux_grads, v) if g is not None)
                    changes[k][kind].append(float(-gamma * dot))
                    last = v if previous is None else [a - b for a, b in zip(v, previous)]
                    growth[k].append(float(torch.sqrt(sum((t * t).sum() for t in last)) / g_norm))
                previous = v
    out = {"neumann_step": gamma}
    for k in terms:
        res = {kind: np.array(v) for kind, v in changes[k].items()}
        diff = res["human"] - res["random"]
        out[f"n{k}_human_minus_random"] = float(diff.mean())
        out[f"n{k}_human_minus_random_se"] = float(diff.std(ddof=1) / np.sqrt(len(diff)))
        out[f"n{k}_human_minus_uniform"] = float((res["human"] - res["uniform"]).mean())
        out[f"n{k}_growth"] = float(np.median(growth[k]))
    return out


def reliability(first: np.ndarray, second: np.ndarray, y: np.ndarray, psi: list[int]) -> float:
    """Mean cosine, over images, of the per-image part (class mean removed) of the label gradient
    of the same image in two different batches: 1 if the push depends on the image alone, 0 if
    it is batch noise."""
    cosines, start = [], 0
    for k, width in enumerate(psi):
        cols = slice(start, start + width)
        start += width
        members = y == k
        if width < 2 or members.sum() < 2:
            continue
        a, b = (g[members][:, cols].astype(np.float64) for g in (first, second))
        a, b = a - a.mean(0), b - b.mean(0)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosines.append((a * b).sum(1) / np.maximum(norms, 1e-30))
    return float(np.concatenate(cosines).mean())


def block_statistics(
    grads: np.ndarray, logits: np.ndarray, y: np.ndarray, human: np.ndarray, psi: list[int], rng: np.random.Generator
) -> list[dict]:
    """The per-class statistics of the module docstring, one dict per primary class with ψ_k > 1."""
    rows, start = [], 0
    for k, width in enumerate(psi):
        cols = slice(start, start + width)
        start += width
        members = y == k
        if width < 2 or members.sum() < width:
            continue
        g = grads[members][:, cols].astype(np.float64)
        g = g - g.mean(1, keepdims=True)  # the softmax's gradients already sum to 0 in the block
        mean = g.mean(0)
        total = float((g**2).sum())
        resid = g - mean
        s2 = np.linalg.svd(resid, compute_uv=False) ** 2
        p = s2 / s2.sum()
        noise = rng.standard_normal(resid.shape)
        noise -= noise.mean(1, keepdims=True)
        noise -= noise.mean(0)
        n2 = np.linalg.svd(noise, compute_uv=False) ** 2
        row = {
            "class": k,
            "psi": width,
            "images": int(members.sum()),
            "shared": float((mean**2).sum() * len(g) / total),
            "top1": float(p[0]),
            "eff_rank": float(math.exp(-(p[p > 0] * np.log(p[p > 0])).sum())),
            "null_top1": float(n2[0] / n2.sum()),
            "signal_classes_used": int(len(np.unique(g.argmin(1)))),
        }
        fine = human[members]
        if (fine >= 0).all():
            row["nmi_signal"] = float(normalized_mutual_info_score(fine, g.argmin(1)))
            row["nmi_labels"] = float(normalized_mutual_info_score(fine, logits[members][:, cols].argmax(1)))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="protocol-cifar10", choices=grid_names())
    parser.add_argument("--data-root")
    parser.add_argument(
        "--plot",
        nargs="+",
        metavar="JSON",
        help="instead of measuring: plot these results files (their horizon effects and the "
        "per-image signal over training) into --out (a .png)",
    )
    parser.add_argument(
        "--variant",
        default="ps-adam",
        choices=sorted(VARIANTS),
        help="the MAXL variant that trains the networks between the points",
    )
    parser.add_argument(
        "--primary",
        default="hierarchy",
        choices=["hierarchy", "classes"],
        help="classes: the data set's classes as the primary task, psi = --psi each",
    )
    parser.add_argument("--psi", default="5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs-at", type=int, nargs="+", default=[0, 3, 8])
    parser.add_argument("--batches", type=int, default=10, help="training batches per point")
    parser.add_argument(
        "--outer-images",
        type=int,
        default=0,
        help="outer loss on one fixed set of this many other training images (0: the inner batch)",
    )
    parser.add_argument(
        "--horizons",
        type=int,
        nargs="*",
        default=[],
        help="also the held-out primary loss after k plain SGD steps on each kind of labels",
    )
    parser.add_argument(
        "--neumann",
        type=int,
        nargs="*",
        default=[],
        help="also the implicit engine's linearised (K + 1)-step change of the held-out primary "
        "loss on each kind of labels, for these K",
    )
    parser.add_argument(
        "--neumann-step",
        type=float,
        nargs="*",
        default=[None],
        help="γ of the Neumann series (default: the current learning rate); several: one table each",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON file of the statistics")
    args = parser.parse_args(argv)
    if args.plot:
        plot([json.loads(Path(p).read_text()) for p in args.plot], [Path(p).stem for p in args.plot], Path(args.out))
        return
    if args.data_root is None:
        parser.error("--data-root is required to measure")
    torch.set_num_threads(args.threads)
    grid = load_grid(args.grid)
    variant = VARIANTS[args.variant]  # on any grid, as the protocol grids hold it
    more = [
        variant,
        {
            "data": {"data_root": args.data_root},
            "train": {"progress": False},
            "out": str(Path(args.out).with_suffix("")) + "-run",
        },
    ]
    if args.primary == "classes":  # the data set's classes as the primary task, without the grid's hierarchy
        more.append({"data": {"hierarchy": RunConfig().data.hierarchy}, "model": {"psi": args.psi}})
    # the grid's settings (the paper's for whatever the protocol leaves out, as maxl grid runs them)
    config = grid.resolve(variant["train"]["method"], args.seed, None, *more)
    # the run as `maxl train` flags, for the table
    settings = merge_overlays({}, *grid.overlays(variant["train"]["method"], args.seed, None, *more))
    run = shlex.split(overlay_flags({k: v for k, v in dotted(settings).items() if v is not None}, leave_out=()))
    trainer = build(config)
    needed = args.batches * trainer.config.batch_size + args.outer_images
    if needed > len(trainer.train_set):
        parser.error(
            f"--batches {args.batches} x {trainer.config.batch_size} images + --outer-images "
            f"{args.outer_images} = {needed} > the {len(trainer.train_set)} training images"
        )
    rng = np.random.default_rng(args.seed)
    points = []
    for epoch in sorted(set(args.epochs_at)):
        while trainer.epoch < epoch:
            trainer.train_epoch()
            trainer.epoch += 1
        t0 = time.time()
        data = label_gradients(trainer, args.batches, args.seed, outer_images=args.outer_images)
        rows = block_statistics(
            data["grad"], data["logits"], data["y"], data["human"], list(trainer.generator.hierarchy.psi), rng
        )
        other = label_gradients(trainer, args.batches, args.seed, shuffle=1, outer_images=args.outer_images)
        acc = trainer.evaluate(trainer.val_set)["test_acc"] if trainer.val_set is not None else None
        summary = {
            k: float(np.average([r[k] for r in rows], weights=[r["images"] for r in rows]))
            for k in rows[0]
            if k not in ("class", "psi", "images")
        }
        summary["reliability"] = reliability(
            data["grad"], other["grad"], data["y"], list(trainer.generator.hierarchy.psi)
        )
        if trainer.human_labels is not None:
            summary.update(objective_by_labels(trainer, args.batches, args.seed, args.outer_images))
            summary.update(objective_by_labels(trainer, args.batches, args.seed, args.outer_images, masked=True))
            if args.horizons:
                summary.update(horizon_effect(trainer, args.horizons, args.seed, args.outer_images or 1000))
            for i, step in enumerate(args.neumann_step if args.neumann else []):
                implicit = implicit_by_labels(
                    trainer, args.batches, args.seed, args.outer_images or 1000, args.neumann, step
                )
                summary.update({(f"s{i}_" if i else "") + k: v for k, v in implicit.items()})
        points.append(
            {
                "epoch": epoch,
                "val_acc": acc,
                "alpha": trainer.optimizer.param_groups[0]["lr"],
                "summary": summary,
                "classes": rows,
            }
        )
        print(
            f"epoch {epoch}: val acc {acc}, "
            + ", ".join(f"{k} {v:.4g}" for k, v in summary.items())
            + f" ({time.time() - t0:.0f}s)",
            flush=True,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "argv": run,
        "variant": args.variant,
        "primary": args.primary,
        "outer_images": args.outer_images,
        "points": points,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))


def plot(results: list[dict], names: list[str], out: Path) -> None:
    """Two panels per results file: the per-image signal over training (reliability, NMI of its
    argmin and of the generator's labels with the fine classes) and the horizon effect
    (held-out primary loss with human minus with random labels, ± its standard error, against k)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(10, 3.4 * len(results)), squeeze=False)
    for (left, right), result, name in zip(axes, results, names):
        epochs = [p["epoch"] for p in result["points"]]
        for key, label in (
            ("reliability", "reliability of the per-image push"),
            ("nmi_signal", "NMI(push argmin, fine class)"),
            ("nmi_labels", "NMI(generated, fine class)"),
        ):
            if key in result["points"][0]["summary"]:
                left.plot(epochs, [p["summary"][key] for p in result["points"]], marker="o", label=label)
        left.set(xlabel="epoch of the MAXL run", title=f"{name}: the look-ahead's push on the labels")
        left.legend(fontsize=8)
        horizons = sorted(
            {
                int(k[1:].split("_")[0])
                for k in result["points"][0]["summary"]
                if k.startswith("h") and k.endswith("_human_minus_random")
            }
        )
        for p in result["points"]:
            if not horizons:
                break
            mean = [p["summary"][f"h{k}_human_minus_random"] for k in horizons]
            se = [p["summary"][f"h{k}_human_minus_random_se"] for k in horizons]
            right.errorbar(horizons, mean, yerr=se, marker="o", capsize=3, label=f"from epoch {p['epoch']}")
        right.axhline(0, color="grey", lw=0.8)
        right.set(
            xscale="log",
            xlabel="SGD steps k on the labels",
            ylabel="held-out L_pri: human − random",
            title="below 0: human labels help after k steps",
        )
        right.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


COLUMNS = (
    "shared",
    "top1",
    "null_top1",
    "eff_rank",
    "reliability",
    "signal_classes_used",
    "nmi_signal",
    "nmi_labels",
    "J_human",
    "J_random",
    "J_generated",
    "J_uniform",
    "human_minus_random",
    "human_minus_random_se",
    "masked_J_human",
    "masked_J_random",
    "masked_J_uniform",
    "masked_human_minus_random",
    "masked_human_minus_random_se",
)


def markdown(result: dict) -> str:
    """The points of one run as a markdown table (means over the primary classes, weighted by images)."""
    cols = [c for c in COLUMNS if c in result["points"][0]["summary"]]
    outer = f"a fixed set of {result['outer_images']} other images" if result.get("outer_images") else "the inner batch"
    lines = [
        f"Label-gradient signal, variant `{result['variant']}`, primary task: {result['primary']}, "
        f"outer loss on {outer}",
        f"(`maxl train {' '.join(result['argv'])}`)",
        "",
        "| epoch | α | val acc | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 3) + "|",
    ]
    for p in result["points"]:
        acc = "–" if p["val_acc"] is None else f"{100 * p['val_acc']:.1f} %"
        lines.append(
            f"| {p['epoch']} | {p['alpha']:.3f} | {acc} | " + " | ".join(f"{p['summary'][c]:.4g}" for c in cols) + " |"
        )
    horizons = sorted(
        {
            int(k[1:].split("_")[0])
            for k in result["points"][0]["summary"]
            if k.startswith("h") and k.endswith("_human_minus_random")
        }
    )
    if horizons:
        lines += [
            "",
            "Held-out primary loss after k plain SGD steps on each kind of labels (same batches, "
            "same step; mean over the batch sequences, ± standard error): human − random, human − uniform, "
            "generated − random. Below 0: the first kind helps more.",
            "",
            "| epoch | k | human − random | human − uniform | generated − random |",
            "|---|---|---|---|---|",
        ]
        for p in result["points"]:
            for k in horizons:
                q = p["summary"]
                lines.append(
                    f"| {p['epoch']} | {k} | {q[f'h{k}_human_minus_random']:+.2e} ± "
                    f"{q[f'h{k}_human_minus_random_se']:.1e} | {q[f'h{k}_human_minus_uniform']:+.2e} | "
                    f"{q[f'h{k}_generated_minus_random']:+.2e} |"
                )
    for prefix in sorted({k.split("neumann_step")[0] for k in result["points"][0]["summary"] if "neumann_step" in k}):
        q0 = result["points"][0]["summary"]
        terms = sorted(
            {
                int(k[len(prefix) + 1 :].split("_")[0])
                for k in q0
                if k.startswith(prefix + "n") and k.endswith("_human_minus_random")
            }
        )
        lines += [
            "",
            "The implicit engine's linearised change of the held-out primary loss over K + 1 steps of "
            "step γ, ΔJ_K = −γ ⟨∇θ1 L_aux, v_K⟩, per kind of labels (mean over batches ± standard error), "
            "and the size of the Neumann series' last term ‖(I − γH)^K g‖ / ‖g‖ (above 1: the series "
            "diverges, the numbers mean nothing). Below 0: the first kind helps more.",
            "",
            "| epoch | γ | K | human − random | human − uniform | last term |",
            "|---|---|---|---|---|---|",
        ]
        for p in result["points"]:
            q = {k[len(prefix) :]: v for k, v in p["summary"].items() if k.startswith(prefix)}
            for k in terms:
                lines.append(
                    f"| {p['epoch']} | {q['neumann_step']:.3g} | {k} | {q[f'n{k}_human_minus_random']:+.2e} ± "
                    f"{q[f'n{k}_human_minus_random_se']:.1e} | {q[f'n{k}_human_minus_uniform']:+.2e} | "
                    f"{q[f'n{k}_growth']:.2g} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
