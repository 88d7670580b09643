"""The architecture-search systems (issue 25) beside hard sharing on a residual backbone, CIFAR-10
animal / vehicle with the human hierarchy as auxiliary task::

    python experiments/architecture_search.py run --data-root /tmp/data/cifar10-jpeg --out runs/architecture-search
    python experiments/architecture_search.py report --runs runs/architecture-search --figures figures

``run`` trains, per seed and auxiliary labels (``--methods human maxl``): hard sharing and the existing
architectures (soft, cross-stitch, NDDR, MTAN) on the residual backbone; AdaShare's search, then the
policy it derives (select where p > 0.5) re-trained from scratch; sparse sharing (its masks found
before training); MTL-NAS's search, then its derived edges (logit > 0) re-trained from scratch.
Finished runs are skipped. ``report`` reads only the run folders and writes ``architecture-search.md``.
``python experiments/architecture_search.py time --out figures/architecture-search-timing.json`` times one
weight step (and for the searches one policy / gate step) of every configuration, each built as ``maxl
train`` builds it on a fake image folder of the protocol's shapes (batch 100, one thread, the median of
interleaved repeats), with the parameters of each network and at inference; ``report --timing FILE`` adds
its ms / step, × hard and arch step ms columns.

Protocol: that of ``experiments/architectures.py`` (``figures/architectures.md``: 2000 training and
2000 test images, one-cycle SGD lr 0.1, batch 100, linear heads, one thread) with ``--backbone
resnet20`` in place of cnn3 (AdaShare needs residual blocks), reduced further to 5 epochs (not 10),
the seeds given (``--seeds``, default 0) and a short sparse-sharing search (3 rounds of 20 steps per
task after 40 warm-up steps, half of each kernel kept); AdaShare: 2 warm-up epochs, then 3 search
epochs, each a pass of weight updates on 90 % of the training images and a pass of policy updates on
the other 10 % (the package's defaults); MTL-NAS: weight and gate updates on two halves.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from architectures import (  # noqa: E402  (the issue-14 protocol, with its cnn3 swapped out; the timing helpers)
    PROTOCOL,
    build_trainer,
    fake_image_folder,
    interleaved_times,
    timed,
    with_value,
)

BASE = [a if a != "cnn3" else "resnet20" for a in PROTOCOL]
BASE[BASE.index("--epochs") + 1] = "5"  # reduced from 10: the CPU time left to issue 25
SEARCHES = {
    "hard": ["--arch", "hard"],
    **{a: ["--arch", a] for a in ("soft", "cross-stitch", "nddr", "mtan")},
    "adashare-search": ["--arch", "adashare", "--adashare-warmup", "2"],
    "sparse": ["--arch", "sparse", "--sparse-rounds", "3", "--sparse-steps", "20", "--sparse-warmup", "40"],
    "mtl-nas-search": ["--arch", "mtl-nas"],
}
DERIVED = {"adashare-derived": "adashare-search", "mtl-nas-derived": "mtl-nas-search"}
ORDER = [
    "hard",
    "soft",
    "cross-stitch",
    "nddr",
    "mtan",
    "adashare-search",
    "adashare-derived",
    "sparse",
    "mtl-nas-search",
    "mtl-nas-derived",
]
METHODS = ("human", "maxl")
#: ``time``: the derived AdaShare's fixed policy, the one of the figures table's run (primary task
#: first; the last stage's three blocks skipped by both tasks)
TIMING_POLICY = "1,1,1,1,1,1,0,0,0;1,1,1,1,1,1,0,0,0"
#: ``time``: the fake image folder's images per class (training, test); the protocol's subsets
#: become 200 training images (split B of a search: 100) and 100 test images
TIMING_IMAGES = (20, 10)


def folder_name(method: str, name: str) -> str:
    """Run folder of a configuration: ``NAME`` for the human hierarchy (the first runs' layout),
    ``maxl-NAME`` for MAXL's generated labels."""
    return name if method == "human" else f"{method}-{name}"


def derived_flags(search_dir: Path) -> list[str]:
    """The flags of the architecture a search run derives (from its checkpoint)."""
    from maxl.analysis.run import load_run
    from maxl.nn.architectures.adashare import derive_policy, policy_text
    from maxl.nn.architectures.mtl_nas import derive_edges, edges_text

    trunk = load_run(search_dir).net.backbone
    if type(trunk).__name__ == "AdaShare":
        return ["--arch", "adashare", "--adashare-policy", policy_text(derive_policy(trunk))]
    return ["--arch", "mtl-nas", "--mtlnas-edges", edges_text(derive_edges(trunk))]


def timing_edges() -> str:
    """``time``: the derived MTL-NAS's fixed edges (``--mtlnas-edges``): every edge of ResNet-20's
    search space (2 towers × 10 layers, 110 edges) except the 18 from layer 0 into the layers
    above it (92 kept)."""
    from maxl.nn.architectures.mtl_nas import search_space

    return ",".join("0" if j == 0 and i > 0 else "1" for _, i, _, j in search_space(2, 10))


def config_flags(name: str) -> list[str]:
    """``time``: the architecture flags of a configuration: a search's own, or the fixed
    architecture of a derived one (:data:`TIMING_POLICY`, :func:`timing_edges`)."""
    if name in SEARCHES:
        return SEARCHES[name]
    if name == "adashare-derived":
        return ["--arch", "adashare", "--adashare-policy", TIMING_POLICY]
    return ["--arch", "mtl-nas", "--mtlnas-edges", timing_edges()]


def run(args: argparse.Namespace) -> int:
    root = Path(args.out)
    for seed in args.seeds:
        for method in args.methods:
            for name in ORDER:
                if args.configs and name not in args.configs:
                    continue
                folder = root / folder_name(method, name) / f"seed{seed}"
                if (folder / "summary.json").is_file():
                    continue
                if name in SEARCHES:
                    flags = SEARCHES[name]
                else:
                    flags = derived_flags(root / folder_name(method, DERIVED[name]) / f"seed{seed}")
                if run_one(args.data_root, method, flags, seed, folder) != 0:
                    return 1
    return 0


def run_one(data_root: str, method: str, flags: list[str], seed: int, folder: Path) -> int:
    """Train one configuration into ``folder`` (in this process) and leave its command beside it."""
    from maxl.cli.commands import main as maxl_main

    argv = ["train", *BASE, "--data-root", data_root, "--method", method, *flags]
    argv += ["--seed", str(seed), "--out", str(folder)]
    print("maxl " + " ".join(argv), flush=True)
    if maxl_main(argv) != 0:
        print(f"run failed: {folder}", file=sys.stderr)
        return 1
    (folder / "command.txt").write_text("maxl " + " ".join(argv) + "\n")
    return 0


def _parameters(folder: Path) -> tuple[int, int | None]:
    """:func:`network_parameters` of a run's network."""
    from maxl.analysis.run import load_run

    return network_parameters(load_run(folder).net)


def network_parameters(net) -> tuple[int, int | None]:
    """(parameters of the multi-task network, those of the derived network at inference where it
    differs: AdaShare's executed blocks; sparse sharing's weights inside some task's mask)."""
    total = sum(p.numel() for p in net.parameters())
    trunk = net.backbone
    kind = type(trunk).__name__
    heads = total - sum(p.numel() for p in trunk.parameters())
    if kind == "AdaShare" and trunk.phase == "fixed":
        return total, trunk.derived_parameters() + heads
    if kind == "SparseSharing":
        import torch

        unmasked = sum(p.numel() for n, p in trunk.backbone.named_parameters() if n not in trunk.prunable)
        kept = sum(
            int(torch.stack([trunk.mask(t, n) for t in range(trunk.num_tasks)]).amax(0).sum()) for n in trunk.prunable
        )
        return total, unmasked + kept + heads
    return total, None


def _count_range(counts: list[int]) -> str:
    """A parameter count over the seeds: one number, or ``min–max`` where the seeds' differ (a
    derived architecture: each seed's search derives its own)."""
    lo, hi = min(counts), max(counts)
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def _mean_std(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.2f} ± {std:.2f}"


def _runs(root: Path, folder: str) -> dict[int, Path]:
    """``{seed: run folder}`` of the finished runs in ``root / folder``."""
    return {int(r.parent.name[4:]): r.parent for r in sorted((root / folder).glob("seed*/summary.json"))}


def _epoch_times(run: Path) -> list[float]:
    """Seconds of each of a run's epochs (metrics.jsonl's ``epoch_time_s``)."""
    return [json.loads(line)["epoch_time_s"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _epoch_seconds(run: Path) -> float:
    times = _epoch_times(run)
    return sum(times) / len(times)


def _run_seconds(run: Path) -> float:
    """Seconds of one run: its epochs' training time and the searches it made before the first
    epoch (config.json's ``setup_seconds``: sparse sharing's masks)."""
    setup = json.loads((run / "config.json").read_text()).get("setup_seconds", {})
    return sum(setup.values()) + sum(_epoch_times(run))


def pipeline_seconds(root: Path, method: str, name: str, seed: int) -> float | None:
    """Seconds of configuration ``name``'s whole recipe for one seed: its run (:func:`_run_seconds`)
    and, for a derived architecture, the search run it was derived from; None where a run is missing."""
    folders = [folder_name(method, name)] + ([folder_name(method, DERIVED[name])] if name in DERIVED else [])
    runs = [root / f / f"seed{seed}" for f in folders]
    if not all((r / "summary.json").is_file() for r in runs):
        return None
    return sum(map(_run_seconds, runs))


def timing_cells(steps: dict, name: str) -> list[str]:
    """The report's timing columns of configuration ``name`` from a timing file's ``steps``: ms per
    weight step, its ratio to hard sharing's, ms per architecture step (blank where the
    configuration has none); "—" where the file lacks the configuration (or hard sharing)."""
    mine, hard = steps.get(name), steps.get("hard")
    if mine is None:
        return ["—", "—", "—"]
    ratio = f"{mine['step_s'] / hard['step_s']:.2f}" if hard else "—"
    arch = f"{1000 * mine['arch_step_s']:.0f}" if "arch_step_s" in mine else ""
    return [f"{1000 * mine['step_s']:.0f}", ratio, arch]


def report(args: argparse.Namespace) -> int:
    root = Path(args.runs)
    lines = [
        "# Multi-task architectures on ResNet-20, CIFAR-10 animal / vehicle (reduced CPU protocol)",
        "",
        "Primary test accuracy (%) after the last epoch and the mean of the epochs' test accuracies (5 epochs: "
        "every epoch), mean ± std over the seeds present; the final accuracy's difference from hard sharing with "
        "the same auxiliary labels, paired by seed (mean ± std, SE = std / √n); parameters of the multi-task "
        "network (and of the derived network at inference; min–max where the seeds' derived architectures "
        "differ); training time per epoch (the runs' own s / epoch on "
        "2 cores shared with other jobs, so the ratios to hard sharing are rough); the recipe's cost: the seconds "
        "of the whole recipe per seed (the training epochs, the searches made before them, e.g. sparse sharing's "
        "masks, and for a derived architecture the search run it was derived from) and their ratio to hard "
        "sharing's.",
        "",
    ]
    steps = json.loads(Path(args.timing).read_text())["steps"] if args.timing else None
    if steps is not None:
        lines += [
            f"Per-step times from `{Path(args.timing).name}` (`experiments/architecture_search.py time`: one weight "
            "step of batch 100, and for the searches one architecture (policy / gate) step, on one thread, the "
            "median of interleaved repeats; × hard = the weight step's time over hard sharing's).",
            "",
        ]
    head = (
        "| auxiliary labels | architecture | seeds | final acc | mean over epochs | final − hard (paired) | "
        "parameters | derived parameters | s / epoch | vs hard | recipe s | recipe vs hard |"
    )
    if steps is not None:
        head += " ms / step | × hard | arch step ms |"
    lines += [head, "|" + " --- |" * head.count(" | ") + " --- |"]
    for method in METHODS:
        hard = _runs(root, folder_name(method, "hard"))
        hard_final = {k: 100 * json.loads((r / "summary.json").read_text())["final_test_acc"] for k, r in hard.items()}
        hard_epoch = sum(map(_epoch_seconds, hard.values())) / len(hard) if hard else None
        hard_recipe = sum(map(_run_seconds, hard.values())) / len(hard) if hard else None
        for name in ORDER:
            runs = _runs(root, folder_name(method, name))
            if not runs:
                continue
            sums = {k: json.loads((r / "summary.json").read_text()) for k, r in runs.items()}
            finals = [100 * s["final_test_acc"] for s in sums.values()]
            last5 = [100 * s["last5_mean_test_acc"] for s in sums.values()]
            epoch_s = sum(map(_epoch_seconds, runs.values())) / len(runs)
            diffs = [100 * sums[k]["final_test_acc"] - hard_final[k] for k in sums if k in hard_final]
            if name == "hard" or not diffs:
                paired = "—"
            elif len(diffs) < 2:
                paired = f"{diffs[0]:+.2f}"
            else:
                mean = sum(diffs) / len(diffs)
                std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
                paired = f"{mean:+.2f} ± {std:.2f} (SE {std / math.sqrt(len(diffs)):.2f})"
            counts = [_parameters(r) for r in runs.values()]  # a derived architecture's differs by seed
            total = _count_range([c[0] for c in counts])
            derived = _count_range([c[1] for c in counts if c[1] is not None]) if counts[0][1] is not None else None
            ratio = f"{epoch_s / hard_epoch:.2f}" if hard_epoch else "—"
            recipes = [s for s in (pipeline_seconds(root, method, name, k) for k in runs) if s is not None]
            recipe = sum(recipes) / len(recipes) if recipes else None
            if recipe is None:
                recipe_cells = "— | —"
            else:
                recipe_cells = f"{recipe:.0f} | " + (f"{recipe / hard_recipe:.2f}" if hard_recipe else "—")
            row = (
                f"| {method} | {name} | {len(runs)} | {_mean_std(finals)} | {_mean_std(last5)} | {paired} | "
                f"{total} | {derived if derived is not None else '—'} | {epoch_s:.0f} | {ratio} | "
                f"{recipe_cells} |"
            )
            if steps is not None:
                row += " " + " | ".join(timing_cells(steps, name)) + " |"
            lines.append(row)
    commands = sorted(root.glob("*/seed*/command.txt"))
    lines += ["", "Commands (one per run, `maxl` = `python -m maxl`):", ""]
    lines += [f"    {c.read_text().strip()}" for c in commands]
    out = Path(args.figures)
    out.mkdir(parents=True, exist_ok=True)
    (out / "architecture-search.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def timing(args: argparse.Namespace) -> int:
    """Seconds per training step of each configuration with the human hierarchy, built as ``maxl
    train`` builds it with :data:`BASE` on a fake image folder of the protocol's shapes (random
    32×32 RGB images, :data:`TIMING_IMAGES`); the median over ``--repeats`` rounds after
    ``--warmup`` rounds, the configurations interleaved within each round, one thread.

    Timed: one weight step (``Trainer.steps.multitask``: forward, backward, finite checks, SGD step;
    the learning-rate schedule detached: it would run out of steps on the small fake set) on one
    synthetic batch (batch 100, 3×32×32), in training mode, searches in their search phase (AdaShare
    after its warm-up epochs: Gumbel-softmax policy samples; MTL-NAS at epoch 0: RelaxedBernoulli
    gates); for the searches also one architecture step (``Trainer.arch_update``, the policy / gate
    update, inside ``Trainer.arch_updates``, whose set-up is not timed) on the same batch."""
    import os
    import statistics
    import tempfile

    import torch

    torch.set_num_threads(1)
    names = args.configs or ORDER
    loadavg = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").is_file() else None
    gen = torch.Generator().manual_seed(0)
    batch = int(BASE[BASE.index("--batch-size") + 1])
    x, y = torch.randn(batch, 3, 32, 32, generator=gen), torch.randint(0, 2, (batch,), generator=gen)
    idx = torch.arange(batch)  # positions in split A (the weight step) and in split B (the architecture step)
    cases, records = {}, {}
    with tempfile.TemporaryDirectory(prefix="archsearch-time-") as tmp:
        data = fake_image_folder(Path(tmp) / "data", *TIMING_IMAGES)
        base = with_value(
            with_value(BASE, "--train-subset", str(10 * TIMING_IMAGES[0])), "--test-subset", str(10 * TIMING_IMAGES[1])
        )
        for name in names:
            argv = [*base, "--data-root", str(data), "--method", "human", *config_flags(name)]
            argv += ["--seed", "0", "--out", str(Path(tmp) / name)]
            print(f"building {name}: maxl train {' '.join(argv)}", file=sys.stderr, flush=True)
            trainer = build_trainer(argv)
            trunk = trainer.net.backbone
            begin = getattr(trunk, "begin_epoch", None)
            if callable(begin):  # the search phase: AdaShare's first epoch after its warm-up
                begin(getattr(trunk, "warmup", 0))
            trainer.learner.train()
            trainer.steps.per_step_scheduler = None
            cases[name] = timed(lambda t=trainer: t.steps.multitask(x, y, idx))
            if trainer.arch_optimizer is not None:
                cases[f"{name}/arch"] = _arch_step(trainer, x, y, idx)
            total, derived = network_parameters(trainer.net)
            records[name] = {"parameters": total, "inference_parameters": derived if derived is not None else total}
            if hasattr(trunk, "phase"):
                records[name]["phase"] = trunk.phase
        times = interleaved_times(cases, args.repeats, args.warmup)
    for name, record in records.items():
        record["step_s"] = statistics.median(times[name])
        if f"{name}/arch" in times:
            record["arch_step_s"] = statistics.median(times[f"{name}/arch"])
    hard = records.get("hard", {}).get("step_s")
    result = {
        "repeats": args.repeats,
        "warmup": args.warmup,
        "batch": batch,
        "threads": 1,
        "loadavg": loadavg,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "data": f"fake image folder, {10 * TIMING_IMAGES[0]} training / {10 * TIMING_IMAGES[1]} test images "
        "(random 32x32 RGB); one synthetic batch",
        "protocol": " ".join(base),
        "fixed": {"adashare-derived": TIMING_POLICY, "mtl-nas-derived": timing_edges()},
        "steps": records,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'configuration':<18} {'ms / step':>9} {'x hard':>7} {'arch ms':>8} {'parameters':>11} {'inference':>10}")
    for name, r in records.items():
        ratio = f"{r['step_s'] / hard:.2f}" if hard else "—"
        arch = f"{1000 * r['arch_step_s']:.1f}" if "arch_step_s" in r else ""
        print(
            f"{name:<18} {1000 * r['step_s']:>9.1f} {ratio:>7} {arch:>8} {r['parameters']:>11,d} "
            f"{r['inference_parameters']:>10,d}"
        )
    return 0


def _arch_step(trainer, x, y, idx):
    """A case of :func:`interleaved_times`: one architecture update of ``trainer`` on the batch,
    timed without entering and leaving ``Trainer.arch_updates``."""
    import time

    def run() -> float:
        with trainer.arch_updates() as update:
            start = time.perf_counter()
            update(x, y, idx)
            return time.perf_counter() - start

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data-root", required=True)
    r.add_argument("--out", default="runs/architecture-search")
    r.add_argument("--seeds", type=int, nargs="+", default=[0])
    r.add_argument("--configs", nargs="*", default=None, help=f"a subset of {ORDER}")
    r.add_argument("--methods", nargs="+", choices=METHODS, default=["human"], help="auxiliary labels")
    t = sub.add_parser("time", help="seconds per weight step and architecture step of each configuration")
    t.add_argument("--out", default="figures/architecture-search-timing.json")
    t.add_argument("--repeats", type=int, default=10, help="timed rounds (the median is kept)")
    t.add_argument("--warmup", type=int, default=2, help="rounds run first and not timed")
    t.add_argument("--configs", nargs="*", default=None, help=f"a subset of {ORDER} (default: all)")
    p = sub.add_parser("report")
    p.add_argument("--runs", default="runs/architecture-search")
    p.add_argument("--figures", default="figures")
    p.add_argument("--timing", default=None, help="a timing file of `time`: ms / step, x hard, arch step ms columns")
    args = parser.parse_args(argv)
    unknown = [c for c in getattr(args, "configs", None) or [] if c not in ORDER]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}: choose from {', '.join(ORDER)}")
    if args.command == "time" and (args.repeats < 1 or args.warmup < 0):
        parser.error(f"time needs --repeats >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    return {"run": run, "time": timing, "report": report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
