"""Speed of the training data path, and the share of an epoch that it takes.

1. **Images per second of the data path alone**: the trainer's own training batches
   (``Trainer._batches``: sampler, gather, crop with 4 pixels of padding, flip, normalise, move to
   the device) of a whole pass, for the per-image path (``--loader per-image``: torchvision ``v2``
   transforms image by image in the ``DataLoader``) and the batch path (``--loader batch``,
   :mod:`maxl.data.augment`), with ``--threads`` threads (1: the issue's measure).
2. **Share of an epoch outside the step**: a few training batches through the trainer
   (``Trainer.train_epoch`` on a subset) for single-task and MAXL, timing how long the trainer
   waits for its next batch against the whole; for each path.

Writes ``OUT.json`` and ``OUT.md``.

Example (the committed table, figures/README.md)::

    python experiments/data_path.py --data-root /tmp/data-issue27/cifar10-jpeg --threads 1 --out figures/data-path
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from maxl.data.datasets import load_dataset
from maxl.nn.backbones import build_backbone
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork
from maxl.train import TrainConfig, Trainer

LOADERS = ("per-image", "batch")


def load(root: str, loader: str, subset: int | None = None):
    """CIFAR-10 as an ImageFolder (decoded once into memory), with the CIFAR augmentation."""
    return load_dataset("imagefolder", root, train_subset=subset, test_subset=200, batch_transforms=loader == "batch")


def tiny_trainer(data, batch_size: int, device: str) -> Trainer:
    """A trainer whose network does not matter: only its data path is timed."""
    net = MultiTaskNetwork(build_backbone("tiny-cnn", 3), data.num_primary, 0, 8)
    return Trainer(net, data.train, data.test, TrainConfig(method="single", batch_size=batch_size, device=device))


def images_per_second(trainer: Trainer, batches: int | None, repeats: int) -> tuple[list[float], list[float]]:
    """Images per second of ``trainer``'s training batches, ``batches`` of them (None: a whole
    pass), per repeat: per second of wall time, and per second of this process's CPU time (what
    the path costs, whatever else the machine runs: with one thread, the rate an idle core gives)."""
    wall, cpu = [], []
    for r in range(repeats):
        n = 0
        start, start_cpu = time.perf_counter(), time.process_time()
        for k, (x, _, _) in enumerate(trainer._batches(trainer.train_set, True, pass_index=r)):
            n += len(x)
            if batches is not None and k + 1 == batches:
                break
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(n / (time.perf_counter() - start))
        cpu.append(n / (time.process_time() - start_cpu))
    return wall, cpu


def epoch_share(data, method: str, backbone: str, batch_size: int, device: str) -> dict:
    """Seconds of one (short) epoch and the seconds the trainer waited for its batches."""
    torch.manual_seed(0)
    net = MultiTaskNetwork(build_backbone(backbone, 3), data.num_primary, 2 * data.num_primary, 512)
    gen = LabelGenerator(build_backbone(backbone, 3), [2] * data.num_primary) if method == "maxl" else None
    config = TrainConfig(method=method, batch_size=batch_size, device=device, epochs=1, progress=False)
    trainer = Trainer(net, data.train, data.test, config, generator=gen)
    waited = [0.0]
    batches = trainer._batches

    def timed(*args, **kwargs):
        inner = batches(*args, **kwargs)

        def gen_():
            while True:
                start = time.perf_counter()
                try:
                    item = next(inner)
                except StopIteration:
                    waited[0] += time.perf_counter() - start
                    return
                waited[0] += time.perf_counter() - start
                yield item

        return gen_()

    trainer._batches = timed  # type: ignore[method-assign]
    start = time.perf_counter()
    trainer.train_epoch()
    total = time.perf_counter() - start
    return {"epoch_s": total, "data_s": waited[0], "share": waited[0] / total, "steps": len(data.train) // batch_size}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="the cifar10-jpeg folder (train/, test/)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per path")
    p.add_argument("--per-image-batches", type=int, default=60, help="batches timed of the (slow) per-image path")
    p.add_argument("--epoch-images", type=int, default=512, help="training images of the timed short epoch")
    p.add_argument("--backbone", default="vgg16", help="backbone of the timed epochs")
    p.add_argument("--methods", nargs="+", default=["single", "maxl"])
    p.add_argument("--out", default="figures/data-path")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    result: dict = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "device": args.device,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "rate": {},
        "epochs": {},
        "load": [os.getloadavg()[0]],
    }
    for loader in LOADERS:
        data = load(args.data_root, loader)
        trainer = tiny_trainer(data, args.batch_size, args.device)
        limit = args.per_image_batches if loader == "per-image" else None
        wall, cpu = images_per_second(trainer, limit, args.repeats)
        result["rate"][loader] = {
            "images_per_s": statistics.median(wall),
            "images_per_cpu_s": statistics.median(cpu),
            "runs": wall,
            "runs_cpu": cpu,
            "images": len(data.train),
        }
        print(f"{loader}: {statistics.median(wall):,.0f} images/s, {statistics.median(cpu):,.0f} per CPU-s", flush=True)
    for loader in LOADERS:
        data = load(args.data_root, loader, subset=args.epoch_images)
        for method in args.methods:
            row = epoch_share(data, method, args.backbone, args.batch_size, args.device)
            result["epochs"][f"{loader}/{method}"] = row
            print(f"{loader} {method}: {row}", flush=True)
    result["load"].append(os.getloadavg()[0])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result, args) + "\n")
    return 0


def markdown(result: dict, args) -> str:
    rate = result["rate"]
    speedup = rate["batch"]["images_per_s"] / rate["per-image"]["images_per_s"]
    lines = [
        "# The training data path: images per second and the share of an epoch",
        "",
        f"Made by `{result['command']}` on {result['when']}: torch {result['torch']}, device {result['device']} "
        f"({result['machine']}), {result['threads']} thread(s), batch {result['batch_size']}, CIFAR-10 JPEGs "
        "decoded once into memory, random crop (4 pixels of zero padding), flip and normalisation on.",
        "",
        "## Images per second of the data path alone (the trainer's training batches, on the device)",
        "",
        "| path | images/s of wall time (median) | images/s of CPU time (median) | runs (wall) |",
        "|---|---:|---:|---|",
    ]
    for loader in LOADERS:
        r = rate[loader]
        runs = ", ".join(f"{x:,.0f}" for x in r["runs"])
        what = f"{args.per_image_batches} batches each" if loader == "per-image" else f"whole pass of {r['images']}"
        lines.append(f"| {loader} | {r['images_per_s']:,.0f} | {r['images_per_cpu_s']:,.0f} | {runs} ({what}) |")
    lines += [
        "",
        f"The batch path is {speedup:.0f}× the per-image path (wall time). The CPU-time rate is what one "
        "thread of an idle core gives: this machine's 2 cores were shared with other jobs "
        f"(load average {result['load'][0]:.1f} before, {result['load'][1]:.1f} after).",
        "",
        f"## Share of an epoch spent waiting for batches ({args.backbone}, {args.epoch_images} training images, "
        f"{args.epoch_images // result['batch_size']} steps)",
        "",
        "| path | method | epoch (s) | waiting for batches (s) | share |",
        "|---|---|---:|---:|---:|",
    ]
    for key, row in result["epochs"].items():
        loader, method = key.split("/")
        lines.append(
            f"| {loader} | {method} | {row['epoch_s']:.1f} | {row['data_s']:.3f} | {100 * row['share']:.2f} % |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
