"""Cost of a MAXL training iteration against a single-task one: time, FLOPs and peak memory.

For each backbone, every variant trains on one fixed random batch (data loading is the same
for all variants and left out) through the trainer's own step methods:

* ``single``: one SGD step of the primary-only network.
* ``maxl-<engine>``: the reference ``alternate`` schedule per batch: a multi-task step on the
  generator's labels, then a generator step with :func:`maxl.meta.meta_gradient`
  (engines ``func``, ``higher``, ``jvp``; ``first`` is the first-order variant).
* ``fused-<engine>``: the ``per-step`` schedule with ``gen_every=1``: both updates from
  :func:`maxl.meta.fused_step`, one shared multi-task forward/backward.
* ``every<k>``: the ``per-step`` schedule with the generator updated every k steps (fused,
  exact ``jvp`` engine); its time is that of k iterations divided by k.
* ``tw-*`` (:data:`TASK_WEIGHTS`): meta-learned task weights (Auto-λ, OL-AUX) on a single-task network with
  rotation and colourisation, or on MAXL's generated-labels task; each also reported as a ratio to
  the variant with the same tasks and equal weights (``tw-equal``, ``tw-maxl-equal``), and the
  table of such a run is titled by that ratio.

Timing: after warm-up, ``--repeats`` rounds; each round times one iteration of every
variant, in an order rotated from round to round, so that a busy machine slows all variants
alike. Reported: the median time per iteration and the median over rounds of the ratio to
``single`` in the same round. FLOPs (``torch.utils.flop_counter``: convolutions and matrix
products) do not depend on the load of the machine. Peak memory comes from a fresh
subprocess per variant: CPU, the peak resident set size (``VmHWM``) above the resident size
after importing torch (the networks, optimisers, activations and workspace); CUDA,
``torch.cuda.max_memory_allocated``.

``--precision bf16`` runs every variant through the trainer's bfloat16 autocast
(:mod:`maxl.core.precision`; FLOPs are counted on float32 copies of the cases, which have the same
FLOPs). ``--project OUT.json`` measures nothing: it projects the paper's CIFAR-100 run on a GPU of a
stated throughput from a saved result's FLOPs and ``experiments/data_path.py``'s images/s
(:func:`gpu_projection`).

Writes ``OUT.json`` and ``OUT.md`` (and ``OUT-profile.md`` with ``--profile``).

Example (the committed table, figures/README.md)::

    python experiments/benchmark.py --backbones vgg16 small-cnn --batch-size 100 --out figures/benchmark
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from maxl.meta import MetaConfig, ObjectiveConfig, get_engine
from maxl.nn.backbones import build_backbone
from maxl.nn.networks import FeatureLabelGenerator, LabelGenerator, MultiTaskNetwork
from maxl.train import GeneratorConfig, TrainConfig, Trainer

# backbone -> (image channels, image size, ψ): the paper's CIFAR-100 setting (20 superclasses,
# 5 auxiliary classes each) for VGG-16-BN, MNIST with 5 auxiliary classes per digit for the CNN.
SETTINGS = {
    "vgg16": (3, 32, [5] * 20),
    "small-cnn": (1, 28, [5] * 10),
    "tiny-cnn": (1, 8, [2] * 10),  # for quick checks only
    "cnn3": (3, 32, [6, 4]),  # the generated-labels protocol (CIFAR-10 animal / vehicle)
}

# variant -> (meta config, schedule, what it is); every<k> is added from --gen-every
VARIANTS = {
    "single": (None, None, "single task, one SGD step"),
    "maxl-func": (MetaConfig(engine="func"), "alternate", "exact, separate steps, torch.func double backward"),
    "maxl-higher": (MetaConfig(engine="higher"), "alternate", "exact, separate steps, higher"),
    "maxl-jvp": (MetaConfig(engine="jvp"), "alternate", "exact, separate steps, forward-mode JVP"),
    "maxl-first": (MetaConfig(order="first"), "alternate", "first order (finite differences), separate steps"),
    "fused-func": (MetaConfig(engine="func"), "per-step", "exact, fused step, double backward"),
    "fused-jvp": (MetaConfig(engine="jvp"), "per-step", "exact, fused step, forward-mode JVP"),
    "fused-first": (MetaConfig(order="first"), "per-step", "first order, fused step"),
}
# issue 13's remedies, each on the cheapest exact step (fused, forward-mode JVP):
# variant -> (meta config, label-generator settings and the objective's, what it is)
REMEDIES = {
    "fused-jvp-mi": (
        MetaConfig(engine="jvp"),
        {"objective": ObjectiveConfig(image_entropy_weight=0.2)},
        "+ per-image entropy term (mutual information)",
    ),
    "fused-jvp-iic": (
        MetaConfig(engine="jvp"),
        {"objective": ObjectiveConfig(consistency_weight=1.0)},
        "+ view-consistency term (IIC: a generator pass on another view)",
    ),
    "fused-jvp-centred": (
        MetaConfig(engine="jvp"),
        {"objective": ObjectiveConfig(centre_by_class=True)},
        "+ class-centred look-ahead push (one more generator backward)",
    ),
    "fused-jvp-wamal": (MetaConfig(engine="jvp"), {"weight_range": 1.0}, "+ per-image auxiliary-loss weights (WAMAL)"),
    "fused-jvp-gumbel": (MetaConfig(engine="jvp"), {"gumbel_tau": 1.0}, "+ hard labels, straight-through Gumbel"),
    "fused-jvp-features": (
        MetaConfig(engine="jvp"),
        {"features": True},
        "generator = a head on the multi-task network's features (no second backbone)",
    ),
    "fused-jvp-features-iic": (
        MetaConfig(engine="jvp"),
        {"features": True, "objective": ObjectiveConfig(consistency_weight=1.0)},
        "generator = a head on the multi-task network's features + view-consistency term "
        "(IIC: one more backbone forward, no graph)",
    ),
    "fused-jvp-features-iic-every2": (
        MetaConfig(engine="jvp"),
        {"features": True, "every": 2, "objective": ObjectiveConfig(consistency_weight=1.0, image_entropy_weight=0.2)},
        "the chosen MNIST variant (feature generator + IIC + MI), the generator every 2 steps",
    ),
    "fused-implicit-k3": (
        MetaConfig(order="implicit", neumann_terms=3),
        {},
        "fused, implicit differentiation: 3 Neumann terms (3 Hessian-vector products), the generator every step",
    ),
    "fused-implicit-k10-every4": (
        MetaConfig(order="implicit", neumann_terms=10),
        {"every": 4},
        "fused, implicit differentiation: 10 Neumann terms, the generator every 4 steps",
    ),
}


class TaskWeightVariant(NamedTuple):
    """A task-weight variant (issue 23): its weighting and options, a weight step every ``every``
    steps, what it is, the run (``"single"``: a single-task network with rotation and
    colourisation; ``"maxl"``: MAXL's generated-labels task alone, the reference alternate
    schedule, one generator step per multi-task step) and ``equal``, the variant with the same
    tasks and equal weights that its ``ratio_to_equal`` divides by."""

    weighting: str
    options: dict
    every: int
    what: str
    method: str = "single"
    equal: str = "tw-equal"


_MAXL_TASK = "MAXL's generated labels (a multi-task step, then a generator step: func engine)"
# meta-learned task weights: the ratio that matters is to the same tasks with equal weights,
# reported beside the ratio to single
TASK_WEIGHTS = {
    "tw-equal": TaskWeightVariant("equal", {}, 1, "rotation + colourisation, equal weights"),
    "tw-auto-lambda-unfused": TaskWeightVariant(
        "auto-lambda",
        {"fused": False},
        1,
        "rotation + colourisation, Auto-λ, its own look-ahead (jvp engine) every step",
    ),
    "tw-auto-lambda": TaskWeightVariant(
        "auto-lambda", {"fused": True}, 1, "rotation + colourisation, Auto-λ fused every step"
    ),
    "tw-auto-lambda-unfused-every2": TaskWeightVariant(
        "auto-lambda",
        {"fused": False},
        2,
        "rotation + colourisation, Auto-λ, its own look-ahead every 2 steps",
    ),
    "tw-auto-lambda-every2": TaskWeightVariant(
        "auto-lambda", {"fused": True}, 2, "rotation + colourisation, Auto-λ fused every 2 steps"
    ),
    "tw-ol-aux-unfused": TaskWeightVariant(
        "ol-aux",
        {"fused": False},
        1,
        "rotation + colourisation, OL-AUX, a forward and a backward per task of its own every step",
    ),
    "tw-ol-aux": TaskWeightVariant(
        "ol-aux", {"fused": True}, 1, "rotation + colourisation, OL-AUX fused every step (the step's own gradients)"
    ),
    "tw-maxl-equal": TaskWeightVariant("equal", {}, 1, f"{_MAXL_TASK}, equal weights", "maxl", "tw-maxl-equal"),
    "tw-maxl-auto-lambda": TaskWeightVariant(
        "auto-lambda", {"fused": True}, 1, f"{_MAXL_TASK}, Auto-λ fused every step", "maxl", "tw-maxl-equal"
    ),
}
EXACT = ("maxl-func", "maxl-higher", "maxl-jvp", "fused-func", "fused-jvp")
# backward(create_graph=True): no torch.compile (the implicit engine's Hessian-vector products too)
DOUBLE_BACKWARD = (
    "maxl-func",
    "maxl-higher",
    "fused-func",
    *(n for n, (meta, _, _) in REMEDIES.items() if get_engine(meta).needs_double_backward),
)
# the targets of issue 7: ratios to single-task
TIME_TARGET = {"exact": 4.0, "first": 2.5, "every": 2.0}
MEMORY_TARGET = 3.0
# the paper's CIFAR-100 run (Liu et al. 2019, Sec. 4): 50 000 training images, 200 epochs
PAPER_RUN = {"backbone": "vgg16", "images": 50_000, "epochs": 200}
PROJECTED = ("single", "maxl-func", "fused-jvp", "fused-first")  # and every<k>


@dataclass
class Case:
    """One variant ready to run: ``unit()`` performs ``iterations`` training iterations."""

    name: str
    unit: Callable[[], None]
    iterations: int
    sync: Callable[[], None]


def variant_names(gen_every: int) -> list[str]:
    return [*VARIANTS, f"every{gen_every}"]


def describe(name: str) -> str:
    if name.startswith("every"):
        return f"exact, generator every {name[5:]} steps, fused, forward-mode JVP"
    if name in TASK_WEIGHTS:
        return TASK_WEIGHTS[name][3]
    if name in REMEDIES:
        meta, _, what = REMEDIES[name]
        return what if meta.order != "second" else f"exact, fused, forward-mode JVP {what}"
    return VARIANTS[name][2]


def target_of(name: str) -> float | None:
    if name in EXACT or name in REMEDIES:
        return TIME_TARGET["exact"]
    if name.endswith("first"):
        return TIME_TARGET["first"]
    if name.startswith("every"):
        return TIME_TARGET["every"]
    return None


def make_networks(
    backbone: str, device: torch.device, seed: int, single: bool, maxl: bool, channels_last: bool, compile: bool = False
):
    """The single-task network and/or the MAXL pair (multi-task network, generator); with
    ``compile``, every backbone wrapped in ``torch.compile`` (heads stay eager)."""
    channels, _, psi = SETTINGS[backbone]
    torch.manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    nets = {}
    if single:
        nets["single"] = MultiTaskNetwork(build_backbone(backbone, channels), len(psi), 0)
    if maxl:
        nets["net"] = MultiTaskNetwork(build_backbone(backbone, channels), len(psi), sum(psi))
        nets["generator"] = LabelGenerator(build_backbone(backbone, channels), psi)
    nets = {k: v.to(device=device, memory_format=fmt) for k, v in nets.items()}
    if compile:
        for net in nets.values():
            net.backbone = torch.compile(net.backbone)
    return nets


def make_cases(
    names: list[str],
    backbone: str,
    batch_size: int,
    device: torch.device,
    gen_every: int,
    seed: int = 0,
    channels_last: bool = False,
    compile: bool = False,
    precision: str = "fp32",
) -> dict[str, Case]:
    """Build the variants ``names`` on shared networks (one single-task network, one MAXL pair)."""
    channels, size, psi = SETTINGS[backbone]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, channels, size, size, generator=gen)
    y = torch.randint(0, len(psi), (batch_size,), generator=gen)
    idx = torch.arange(batch_size)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, y, idx = x.to(device=device, memory_format=fmt), y.to(device), idx.to(device)
    nets = make_networks(
        backbone,
        device,
        seed,
        single="single" in names,
        maxl=any(n != "single" and n not in TASK_WEIGHTS for n in names),
        channels_last=channels_last,
        compile=compile,
    )
    data = TensorDataset(x.cpu(), y.cpu(), idx.cpu())  # unused by the step methods
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def trainer(method, meta=None, schedule="alternate", k=1, generator=None, objective=None):
        cfg = TrainConfig(
            method=method,
            batch_size=batch_size,
            seed=seed,
            device=str(device),
            progress=False,
            precision=precision,
        )
        if method == "single":
            return Trainer(nets["single"], data, data, cfg)
        gen_config = GeneratorConfig(schedule=schedule, every=k)
        generator = generator or nets["generator"]
        return Trainer(
            nets["net"],
            data,
            data,
            cfg,
            generator=generator,
            objective=objective,
            gen_config=gen_config,
            meta=meta or MetaConfig(),
        )

    def amortised(t, k):
        """k iterations: a fused generator step (and its multi-task step), then k − 1 plain multi-task
        steps on the generator's labels."""

        def unit(t=t, k=k):
            t.steps.fused(x, y, idx)
            for _ in range(k - 1):
                t.steps.multitask(x, y, idx)

        return unit

    cases = {}
    for name in names:
        if name == "single":
            t = trainer("single")
            unit, iterations = (lambda t=t: t.steps.multitask(x, y, idx)), 1
        elif name in TASK_WEIGHTS:
            t = task_weight_trainer(name, backbone, batch_size, device, seed, precision, fmt)
            k = TASK_WEIGHTS[name].every

            def unit(t=t, k=k, maxl=TASK_WEIGHTS[name].method == "maxl"):
                for _ in range(k):  # the trainer's step count decides the weight steps
                    t.steps.multitask(x, y, idx)
                    if maxl:  # the alternate schedule's generator step, one per multi-task step
                        t.steps.generator(x, y, idx)
                    t.step += 1

            iterations = k
        elif name in REMEDIES:
            meta, gen_kwargs, _ = REMEDIES[name]
            gen_kwargs = dict(gen_kwargs)
            k = gen_kwargs.pop("every", 1)
            objective = gen_kwargs.pop("objective", None)
            net = nets["net"]
            torch.manual_seed(seed)
            if gen_kwargs.pop("features", False):
                generator = FeatureLabelGenerator(net.backbone, psi, **gen_kwargs)
            else:
                generator = LabelGenerator(build_backbone(backbone, channels), psi, **gen_kwargs)
            t = trainer(
                "maxl",
                MetaConfig(**vars(meta)),
                "per-step",
                k,
                generator=generator.to(device=device, memory_format=fmt),
                objective=objective,
            )
            unit, iterations = amortised(t, k), k
        elif name.startswith("every"):
            k = int(name[5:])
            t = trainer("maxl", MetaConfig(engine="jvp"), "per-step", k)
            unit, iterations = amortised(t, k), k
        else:
            meta, schedule, _ = VARIANTS[name]
            t = trainer("maxl", MetaConfig(**vars(meta)), schedule)
            if schedule == "per-step":
                unit = lambda t=t: t.steps.fused(x, y, idx)  # noqa: E731
            else:

                def unit(t=t):
                    t.steps.multitask(x, y, idx)
                    t.steps.generator(x, y, idx)

            iterations = 1
        cases[name] = Case(name, unit, iterations, sync)
    return cases


def task_weight_trainer(name, backbone, batch_size, device, seed, precision, fmt):
    """A trainer of the task-weight variant ``name``: a single-task network with rotation and
    colourisation, or MAXL's multi-task network and generator with no other task, under the
    variant's weighting, its held-out split a fixed random batch."""
    from maxl.core.losses import classification_loss
    from maxl.train.aux_learner import build_learner

    v = TASK_WEIGHTS[name]
    channels, size, psi = SETTINGS[backbone]
    torch.manual_seed(seed)
    maxl = v.method == "maxl"
    net = MultiTaskNetwork(build_backbone(backbone, channels), len(psi), sum(psi) if maxl else 0)
    net = net.to(device=device, memory_format=fmt)
    generator = LabelGenerator(build_backbone(backbone, channels), psi).to(device=device, memory_format=fmt)
    meta = MetaConfig(inner_lr=None)  # `maxl train`'s: α follows the multi-task lr
    learner = build_learner(
        net,
        v.method,
        () if maxl else ("rotation", "colourisation"),
        v.weighting,
        loss_fn=classification_loss("ce"),
        in_channels=channels,
        image_size=size,
        generator=generator if maxl else None,
        meta=meta,
        weighting_options=v.options,
    )
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(2 * batch_size, channels, size, size, generator=gen)
    y = torch.randint(0, len(psi), (2 * batch_size,), generator=gen)
    data = TensorDataset(x[:batch_size], y[:batch_size], torch.arange(batch_size))  # unused by the step methods
    held_out = TensorDataset(x[batch_size:], y[batch_size:]) if v.weighting != "equal" else None
    cfg = TrainConfig(
        method=v.method, batch_size=batch_size, seed=seed, device=str(device), progress=False, precision=precision
    )
    return Trainer(net, data, data, cfg, learner=learner, weight_set=held_out, weight_every=v.every, meta=meta)


def time_cases(cases: dict[str, Case], warmup: int, repeats: int, min_time: float = 0.0) -> dict[str, list[float]]:
    """Seconds per iteration of each case, ``repeats`` rounds in rotated order; in each round
    a case runs its unit again until ``min_time`` seconds have passed (short steps are timed
    over several calls)."""
    for case in cases.values():
        for _ in range(warmup):
            case.unit()
        case.sync()
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            case = cases[name]
            case.sync()
            t0 = time.perf_counter()
            calls = 0
            while calls == 0 or time.perf_counter() - t0 < min_time:
                case.unit()
                case.sync()
                calls += 1
            times[name].append((time.perf_counter() - t0) / (calls * case.iterations))
    return times


def count_flops(case: Case) -> float:
    """FLOPs per iteration (convolutions and matrix products, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        case.unit()
    return counter.get_total_flops() / case.iterations


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_worker(args) -> dict:
    """Run in a fresh process: build one variant, run it, report its peak memory."""
    device = torch.device(args.device)
    baseline_kib = _proc_status_kib("VmRSS")
    cases = make_cases(
        [args.memory_worker],
        args.backbone,
        args.batch_size,
        device,
        args.gen_every,
        channels_last=args.channels_last,
        compile=args.compile,
        precision=args.precision,
    )
    case = cases[args.memory_worker]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):
        case.unit()
    case.sync()
    out = {"variant": args.memory_worker}
    peak_kib = _proc_status_kib("VmHWM")
    if peak_kib is not None and baseline_kib is not None:
        out["peak_rss_mb"] = peak_kib / 1024
        out["train_rss_mb"] = (peak_kib - baseline_kib) / 1024
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def measure_memory(name: str, backbone: str, args) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-worker",
        name,
        "--backbone-worker",
        backbone,
        "--batch-size",
        str(args.batch_size),
        "--gen-every",
        str(args.gen_every),
        "--device",
        args.device,
    ]
    if args.channels_last:
        command.append("--channels-last")
    if args.compile:
        command.append("--compile")
    command += ["--precision", args.precision]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker for {name} ({backbone}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile_case(case: Case, device: torch.device, rows: int = 15) -> str:
    """torch.profiler table (self time per op) of one unit of ``case``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        case.unit()
        case.sync()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def benchmark_backbone(backbone: str, args, log=print) -> dict:
    device = torch.device(args.device)
    names = args.variants or variant_names(args.gen_every)
    if "single" not in names:
        names = ["single", *names]
    cases = make_cases(
        names,
        backbone,
        args.batch_size,
        device,
        args.gen_every,
        channels_last=args.channels_last,
        compile=args.compile,
        precision=args.precision,
    )
    load_before = os.getloadavg()
    log(f"[{backbone}] timing {len(names)} variants: {args.warmup} warm-up + {args.repeats} rounds")
    times = time_cases(cases, args.warmup, args.repeats, args.min_time)
    load_after = os.getloadavg()
    flops = {}
    if not args.no_flops:  # the FLOPs do not depend on the precision: counted on float32 cases
        # (torch.utils.flop_counter fails on forward-mode AD under autocast: the jvp engine)
        counted = cases
        if args.precision != "fp32":
            counted = make_cases(
                names, backbone, args.batch_size, device, args.gen_every, channels_last=args.channels_last
            )
        flops = {n: count_flops(c) for n, c in counted.items()}
    rows = {}
    for name in names:
        ratios = [t / s for t, s in zip(times[name], times["single"])]
        rows[name] = {
            "description": describe(name),
            "exact": name in EXACT or name.startswith("every") or name == "single",
            "times_s": times[name],
            "median_s": statistics.median(times[name]),
            "ratio": statistics.median(ratios),
            "ratio_of_medians": statistics.median(times[name]) / statistics.median(times["single"]),
            "target_ratio": target_of(name),
        }
        equal = TASK_WEIGHTS[name].equal if name in TASK_WEIGHTS else None
        if equal in times:  # the ratio to the same tasks with equal weights, in the same round
            rows[name]["ratio_to_equal"] = statistics.median(t / e for t, e in zip(times[name], times[equal]))
            rows[name]["equal_variant"] = equal
        if flops:
            rows[name]["gflop"] = flops[name] / 1e9
            rows[name]["flop_ratio"] = flops[name] / flops["single"]
        log(
            f"[{backbone}] {name:12s} {rows[name]['median_s'] * 1000:9.1f} ms  {rows[name]['ratio']:5.2f}x"
            + (f"  {rows[name]['ratio_to_equal']:5.2f}x {equal}" if "ratio_to_equal" in rows[name] else "")
            + (f"  {rows[name]['flop_ratio']:5.2f}x FLOPs" if flops else "")
        )
    if not args.no_memory:
        mem_key = "cuda_max_allocated_mb" if device.type == "cuda" else "train_rss_mb"
        for name in names:
            rows[name].update(measure_memory(name, backbone, args))
            rows[name].pop("variant", None)
        for name in names:
            rows[name]["memory_ratio"] = rows[name][mem_key] / rows["single"][mem_key]
            log(f"[{backbone}] {name:12s} memory {rows[name][mem_key]:8.0f} MB  {rows[name]['memory_ratio']:5.2f}x")
    profiles = {}
    for name in args.profile or []:
        if name in cases:
            profiles[name] = profile_case(cases[name], device)
    channels, size, psi = SETTINGS[backbone]
    return {
        "backbone": backbone,
        "image": [channels, size, size],
        "psi": psi,
        "batch_size": args.batch_size,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "variants": rows,
        "profiles": profiles,
    }


def markdown(result: dict) -> str:
    env = result["env"]
    # task-weight variants are read against equal weighting of the same tasks (in bold)
    task_weights = any("ratio_to_equal" in row for b in result["backbones"] for row in b["variants"].values())
    title = (
        "# Cost of meta-learned task weights (ratios to equal weighting of the same tasks, and to single-task)"
        if task_weights
        else "# Cost of a MAXL iteration (ratios to single-task, same process)"
    )
    lines = [
        title,
        "",
        f"Made by `{env['command']}` on {env['date']}: torch {env['torch']}, device {env['device']}"
        f" ({env['processor']}), {env['threads']} threads, "
        f"{'channels-last' if env.get('channels_last') else 'contiguous (NCHW)'} tensors, "
        f"{'torch.compile backbones' if env.get('compile') else 'eager'}, "
        f"precision {env.get('precision', 'fp32')}, batch {result['batch_size']}, "
        f"{result['warmup']} warm-up iterations, {result['repeats']} timed rounds"
        + (f" of at least {result['min_time_s']:g} s per measurement" if result.get("min_time_s") else "")
        + ".",
        "",
        "Time: median seconds per iteration; ratio: median over rounds of (variant / single-task) in the same "
        "round. FLOPs: convolutions and matrix products (`torch.utils.flop_counter`), independent of the "
        "machine's load. Memory: peak resident set size above the size after `import torch` (CPU) or "
        "`torch.cuda.max_memory_allocated` (GPU), each variant in a fresh process.",
        "",
    ]
    if task_weights:
        lines[-2] += (
            " Task-weight variants (`tw-*`), in bold: the median over rounds of (variant / the variant with the "
            "same tasks and equal weights) in the same round, the ratio to read."
        )
    for bench in result["backbones"]:
        c, h, w = bench["image"]
        psi = bench["psi"]
        psi_text = f"[{psi[0]}]×{len(psi)}" if len(set(psi)) == 1 else str(list(psi))
        lines += [
            f"## {bench['backbone']}, {c}×{h}×{w}, ψ = {psi_text}",
            "",
            f"Load average (1 min) {bench['loadavg_before'][0]:.1f} before, "
            f"{bench['loadavg_after'][0]:.1f} after the timing.",
            "",
        ]
        header = "| variant | what | time (ms) | ratio | target | GFLOP | FLOP ratio | memory (MB) | memory ratio |"
        lines += [header, "|---|---|---:|---:|---|---:|---:|---:|---:|"]
        for name, row in bench["variants"].items():
            target = row["target_ratio"]
            verdict = "" if target is None else f"≤ {target:.1f} {'met' if row['ratio'] <= target else 'missed'}"
            mem = row.get("cuda_max_allocated_mb", row.get("train_rss_mb"))
            mem_verdict = ""
            if "memory_ratio" in row and name in EXACT:
                mem_verdict = f" ({'≤' if row['memory_ratio'] <= MEMORY_TARGET else '>'} {MEMORY_TARGET:.0f})"
            what = row["description"]
            if "ratio_to_equal" in row:
                what += f" (**{row['ratio_to_equal']:.2f}× {row.get('equal_variant', 'tw-equal')}**)"
            lines.append(
                f"| {name} | {what} | {row['median_s'] * 1000:.0f} | {row['ratio']:.2f}× | {verdict} | "
                + (f"{row['gflop']:.1f} | {row['flop_ratio']:.2f}× | " if "gflop" in row else "– | – | ")
                + (f"{mem:.0f} | {row['memory_ratio']:.2f}×{mem_verdict} |" if mem is not None else "– | – |")
            )
        lines.append("")
        lines += projection_markdown(bench)
    return "\n".join(lines)


def paper_iterations(batch_size: int, images: int = PAPER_RUN["images"], epochs: int = PAPER_RUN["epochs"]) -> int:
    """Training iterations of ``epochs`` passes over ``images`` images in batches of
    ``batch_size`` (the last one partial, counted whole)."""
    return math.ceil(images / batch_size) * epochs


def projected_hours(
    seconds_per_iteration: float, batch_size: int, images: int = PAPER_RUN["images"], epochs: int = PAPER_RUN["epochs"]
) -> float:
    """Hours of training steps (no evaluation, no data loading) of :func:`paper_iterations`."""
    return paper_iterations(batch_size, images, epochs) * seconds_per_iteration / 3600


def projection_markdown(bench: dict) -> list[str]:
    """The paper's 200-epoch CIFAR-100 run projected from the measured time per iteration."""
    if bench["backbone"] != PAPER_RUN["backbone"]:
        return []
    batch = bench["batch_size"]
    iterations = paper_iterations(batch)
    lines = [
        f"Projected time of the paper's CIFAR-100 run on this machine ({PAPER_RUN['images']} images, batch "
        f"{batch}, {PAPER_RUN['epochs']} epochs = {iterations} iterations; training steps only, no "
        "evaluation or data loading):",
        "",
        "| variant | hours | hours / single-task hours |",
        "|---|---:|---:|",
    ]
    single = bench["variants"]["single"]["median_s"]
    for name, row in bench["variants"].items():
        if name in PROJECTED or name.startswith("every"):
            hours = projected_hours(row["median_s"], batch)
            lines.append(f"| {name} | {hours:.1f} | {row['median_s'] / single:.2f}× |")
    return [*lines, ""]


def gpu_projection(
    bench: dict,
    tflops: float,
    efficiency: float,
    data_rates: dict[str, float],
    variants=("single", "fused-jvp", "every4"),
) -> dict:
    """The paper's CIFAR-100 run (:data:`PAPER_RUN`) on a GPU, projected from the measured FLOPs per
    iteration of ``bench`` (a backbone's entry of a saved OUT.json, batch ``bench["batch_size"]``), a
    GPU's stated throughput ``tflops`` (TFLOP/s) of which ``efficiency`` is reached, and the data
    path's measured images/s per path (``data_rates``, e.g. from ``experiments/data_path.py``).

    Per iteration: compute ``GFLOP / (tflops · efficiency)``; data ``batch / rate``. Hours: with the
    data path overlapped (asynchronous GPU work: max of the two) and serial (their sum, an upper bound).

    Returns:
        ``{"iterations", "variants": {name: {"gflop", "compute_h", "data_h": {path: h}, "overlapped_h":
        {path: h}, "serial_h": {path: h}, "ratio_to_single"}}}``.
    """
    batch = bench["batch_size"]
    iterations = paper_iterations(batch)
    rows = {}
    for name in variants:
        row = bench["variants"].get(name)
        if row is None or "gflop" not in row:
            continue
        compute_s = row["gflop"] * 1e9 / (tflops * 1e12 * efficiency)
        data_s = {path: batch / rate for path, rate in data_rates.items()}
        rows[name] = {
            "gflop": row["gflop"],
            "compute_h": iterations * compute_s / 3600,
            "data_h": {p: iterations * d / 3600 for p, d in data_s.items()},
            "overlapped_h": {p: iterations * max(compute_s, d) / 3600 for p, d in data_s.items()},
            "serial_h": {p: iterations * (compute_s + d) / 3600 for p, d in data_s.items()},
        }
    if "single" in rows:
        for row in rows.values():
            row["ratio_to_single"] = {
                p: row["overlapped_h"][p] / rows["single"]["overlapped_h"][p] for p in row["overlapped_h"]
            }
    return {"iterations": iterations, "batch_size": batch, "variants": rows}


def gpu_projection_markdown(projection: dict, gpu: str, tflops: float, efficiency: float, rates: dict) -> list[str]:
    """The table of :func:`gpu_projection`."""
    paths = list(rates)
    lines = [
        f"## {gpu}, {efficiency:.0%} of it reached",
        "",
        f"{PAPER_RUN['images']} images, batch {projection['batch_size']}, {PAPER_RUN['epochs']} epochs = "
        f"{projection['iterations']} iterations of VGG-16-BN (training steps and data path; no evaluation). "
        f"Compute: the measured FLOPs per iteration (convolutions and matrix products, `torch.utils.flop_counter`) "
        f"at {efficiency:.0%} of the stated {tflops:g} TFLOP/s (an assumption, not a measurement). Data: "
        + ", ".join(f"{p} path {r:,.0f} images/s" for p, r in rates.items())
        + " (measured on this CPU with one thread, `experiments/data_path.py`). Overlapped: data prepared "
        "while the GPU computes (max of the two); serial: their sum.",
        "",
        "| variant | GFLOP / iteration | compute (h) | "
        + " | ".join(f"data, {p} (h) | total, {p}: overlapped – serial (h) | ratio to single, {p}" for p in paths)
        + " |",
        "|---|---:|---:|" + "---:|---|---:|" * len(paths),
    ]
    for name, row in projection["variants"].items():
        cells = [f"{name}", f"{row['gflop']:.1f}", f"{row['compute_h']:.2f}"]
        for p in paths:
            ratio = row.get("ratio_to_single", {}).get(p)
            cells += [
                f"{row['data_h'][p]:.2f}",
                f"{row['overlapped_h'][p]:.2f} – {row['serial_h'][p]:.2f}",
                f"{ratio:.2f}×" if ratio is not None else "–",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def project_main(args) -> int:
    """``--project JSON``: the GPU projection of a saved benchmark, written to OUT.json / OUT.md."""
    saved = json.loads(Path(args.project).read_text())
    bench = next((b for b in saved["backbones"] if b["backbone"] == PAPER_RUN["backbone"]), None)
    if bench is None:
        raise SystemExit(f"benchmark: --project {args.project} holds no {PAPER_RUN['backbone']} measurement")
    bench = {**bench, "batch_size": saved["batch_size"]}
    data = json.loads(Path(args.data_path).read_text())
    rates = {path: row["images_per_s"] for path, row in data["rate"].items()}
    projections = {e: gpu_projection(bench, args.gpu_tflops, e, rates) for e in args.gpu_efficiency}
    result = {
        "command": "python experiments/benchmark.py " + " ".join(sys.argv[1:]),
        "from": {"benchmark": args.project, "data_path": args.data_path},
        "gpu": args.gpu_name,
        "tflops": args.gpu_tflops,
        "data_rates": rates,
        "projections": [{"efficiency": e, **p} for e, p in projections.items()],
    }
    out = Path(args.out)
    atomic_write(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    lines = [
        "# Projected hours of the paper's CIFAR-100 run on a GPU",
        "",
        f"Made by `{result['command']}` on {time.strftime('%Y-%m-%d %H:%M')} from the measurements in "
        f"`{args.project}` (FLOPs, made by `{saved['env']['command']}`) and `{args.data_path}`.",
        "",
    ]
    for e, projection in projections.items():
        lines += gpu_projection_markdown(projection, args.gpu_name, args.gpu_tflops, e, rates)
    atomic_write(out.with_suffix(".md"), "\n".join(lines))
    print("\n".join(lines))
    return 0


def profile_markdown(result: dict) -> str:
    lines = ["# Where the time of an iteration goes (torch.profiler, self time per op)", ""]
    for bench in result["backbones"]:
        for name, table in bench["profiles"].items():
            lines += [f"## {bench['backbone']}: {name}", "", "```", table.rstrip(), "```", ""]
    return "\n".join(lines)


def write_markdown(result: dict, out: Path) -> None:
    """``OUT.md`` and, if any variant was profiled, ``OUT-profile.md``."""
    atomic_write(out.with_suffix(".md"), markdown(result) + "\n")
    if any(bench["profiles"] for bench in result["backbones"]):
        atomic_write(out.with_name(out.name + "-profile.md"), profile_markdown(result) + "\n")


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--backbones", nargs="+", choices=sorted(SETTINGS), default=["vgg16", "small-cnn"])
    p.add_argument("--batch-size", type=int, default=100, help="images per batch (100 in the paper)")
    p.add_argument("--variants", nargs="+", default=None, help="variants to run (single is always added); default: all")
    p.add_argument("--gen-every", type=int, default=4, help="k of the every<k> variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations per variant first")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds")
    p.add_argument(
        "--min-time",
        type=float,
        default=1.0,
        help="seconds per measurement at least: a shorter step is timed over several calls",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format for every variant")
    p.add_argument(
        "--precision", default="fp32", choices=("fp32", "bf16"), help="the trainer's precision (bf16: autocast)"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile every backbone (needs --variants without the double-backward ones: "
        f"{', '.join(DOUBLE_BACKWARD)}; use with --no-flops)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    p.add_argument(
        "--profile",
        nargs="*",
        default=None,
        metavar="VARIANT",
        help="write a torch.profiler table of these variants to OUT-profile.md",
    )
    p.add_argument("--out", default="figures/benchmark", help="writes OUT.json and OUT.md")
    p.add_argument(
        "--render",
        default=None,
        metavar="JSON",
        help="measure nothing: write the Markdown of a saved OUT.json again (OUT.md, OUT-profile.md)",
    )
    p.add_argument(
        "--project",
        default=None,
        metavar="JSON",
        help="measure nothing: project the paper's CIFAR-100 run on a GPU from a saved OUT.json's FLOPs "
        "(with --gpu-tflops, --gpu-efficiency, --data-path); writes OUT.json / OUT.md",
    )
    p.add_argument("--gpu-tflops", type=float, default=989.0, help="the GPU's stated throughput, TFLOP/s")
    p.add_argument(
        "--gpu-efficiency",
        type=float,
        nargs="+",
        default=[0.05, 0.3],
        help="shares of the stated throughput reached (one table each; small 32x32 convolutions reach a small share)",
    )
    p.add_argument("--gpu-name", default="a GPU of 989 TFLOP/s (H100 SXM's stated dense bf16)", help="for the table")
    p.add_argument(
        "--data-path", default="figures/data-path.json", help="experiments/data_path.py's JSON (images/s per path)"
    )
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--backbone-worker", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_worker is not None:  # internal: one variant in a fresh process
        args.backbone = args.backbone_worker
        print(json.dumps(memory_worker(args)))
        return 0
    if args.project is not None:
        return project_main(args)
    if args.render is not None:
        saved = Path(args.render)
        if not saved.is_file():
            raise SystemExit(f"benchmark: --render {saved}: no such file")
        write_markdown(json.loads(saved.read_text()), saved.with_suffix(""))
        return 0
    known = [*variant_names(args.gen_every), *REMEDIES, *TASK_WEIGHTS]
    for name in args.variants or []:
        if name not in known:
            raise SystemExit(f"benchmark: unknown variant {name!r}; expected one of {known}")
    if args.compile:
        refused = [n for n in (args.variants or known) if n in DOUBLE_BACKWARD]
        if refused:
            raise SystemExit(
                f"benchmark: --compile cannot run {refused}: a compiled backward does not support "
                "create_graph=True (double backward); pick --variants among the others"
            )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"benchmark: --device {args.device} but CUDA is not available")
    result = {
        "env": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": args.device,
            "processor": (
                torch.cuda.get_device_name(args.device)
                if args.device.startswith("cuda")
                else platform.processor() or platform.machine()
            ),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "channels_last": args.channels_last,
            "compile": args.compile,
            "precision": args.precision,
            "command": "python experiments/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "min_time_s": args.min_time,
        "backbones": [benchmark_backbone(b, args) for b in args.backbones],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    write_markdown(result, out)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
