"""How far bfloat16 autocast moves MAXL's meta-gradient: relative errors against float32 and float64.

For each backbone, one multi-task network and one label-generation network (seeded) and one
batch of CIFAR-10 images (the JPEGs of ``--data-root``, or uniform noise without it); the
meta-gradient ∇θ2 J (:func:`maxl.meta.meta_gradient`, engine ``--engine``) is computed

* in float64 (both networks and the images in double): the reference;
* in float32 (the default path);
* under ``precision="bf16"`` (:func:`maxl.core.precision.autocast`: bfloat16 convolutions and
  matrix products, float32 masked softmax, losses and entropy);

and the relative errors ‖g − g_ref‖ / ‖g_ref‖ over all generator parameters are reported, with
the cosine between g and the reference, and the same for the multi-task step's gradient.

Writes ``OUT.json`` and ``OUT.md``. Example (the committed table)::

    python experiments/precision.py --data-root /tmp/data-issue27/cifar10-jpeg --out figures/precision
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

from maxl.core.losses import classification_loss
from maxl.core.precision import autocast, float32_ops
from maxl.meta import MetaConfig, ObjectiveConfig, meta_gradient
from maxl.nn.backbones import build_backbone
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork

PSI = [5] * 10


def batch(root: str | None, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 [B, 3, 32, 32] normalised images and int64 [B] labels in 0..9."""
    g = torch.Generator().manual_seed(seed)
    if root is None:
        return torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g)
    from maxl.data.datasets import load_dataset

    data = load_dataset("imagefolder", root, augment=False, train_subset=size, test_subset=10, seed=seed)
    x, y, _ = data.train.batch_transform(data.train.images), data.train.labels, None
    return x, y


def gradients(net, gen, x, y, precision: str, engine: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(meta-gradient, multi-task gradient), each flattened, of copies of the networks."""
    net, gen = copy.deepcopy(net), copy.deepcopy(gen)
    loss_fn = classification_loss("focal", 2.0)
    config = MetaConfig(inner_lr=0.01, engine=engine)
    with autocast(precision, x.device):
        meta = meta_gradient(net, gen, x, y, loss_fn, config, objective=ObjectiveConfig(entropy_weight=0.2))
        with torch.no_grad():
            soft = gen(x, y)
        primary, aux = net(x)
        loss = loss_fn(primary, y) + loss_fn(aux, soft)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    flat = lambda ts: torch.cat([t.double().flatten() for t in ts])  # noqa: E731
    return flat(meta.grads), flat(grads)


def compare(g: torch.Tensor, ref: torch.Tensor) -> dict:
    return {
        "relative_error": float((g - ref).norm() / ref.norm()),
        "cosine": float(torch.nn.functional.cosine_similarity(g, ref, dim=0)),
    }


def measure(backbone: str, x, y, engine: str, seed: int) -> dict:
    torch.manual_seed(seed)
    net = MultiTaskNetwork(build_backbone(backbone, 3), 10, sum(PSI), 512)
    gen = LabelGenerator(build_backbone(backbone, 3), PSI)
    net.train(), gen.train()
    g64 = gradients(net.double(), gen.double(), x.double(), y, "fp32", engine)
    net, gen = net.float(), gen.float()
    g32 = gradients(net, gen, x, y, "fp32", engine)
    g16 = gradients(net, gen, x, y, "bf16", engine)
    row = {}
    for part, k in (("meta", 0), ("multitask", 1)):
        row[part] = {
            "fp32_vs_fp64": compare(g32[k], g64[k]),
            "bf16_vs_fp64": compare(g16[k], g64[k]),
            "bf16_vs_fp32": compare(g16[k], g32[k]),
        }
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None, help="cifar10-jpeg folder (default: noise images)")
    p.add_argument("--backbones", nargs="+", default=["cnn3", "vgg16"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--engine", default="func")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--batchnorm-float32",
        action="store_true",
        help="diagnostic: BatchNorm in float32 under autocast too (torch.nn.functional.batch_norm wrapped)",
    )
    p.add_argument("--out", default="figures/precision")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.batchnorm_float32:  # the BatchNorm modules call torch.nn.functional.batch_norm through F
        import torch.nn.modules.batchnorm as batchnorm

        batchnorm.F.batch_norm = float32_ops(torch.nn.functional.batch_norm)  # type: ignore[attr-defined]
    result: dict = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "engine": args.engine,
        "batchnorm_float32": args.batchnorm_float32,
        "rows": {},
    }
    for backbone in args.backbones:
        for seed in args.seeds:
            x, y = batch(args.data_root, args.batch_size, seed)
            row = measure(backbone, x, y, args.engine, seed)
            result["rows"][f"{backbone}/{seed}"] = row
            print(backbone, seed, json.dumps(row), flush=True)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result) + "\n")
    return 0


def markdown(result: dict) -> str:
    lines = [
        "# bfloat16 autocast: relative error of the meta-gradient and the multi-task gradient",
        "",
        f"Made by `{result['command']}` on {result['when']}: torch {result['torch']}, CPU, batch "
        f"{result['batch_size']}, engine `{result['engine']}`, ψ = [5]×10, α = 0.01, λ = 0.2, focal loss, "
        "train mode (BatchNorm on batch statistics"
        + ("; BatchNorm in float32 under autocast too" if result.get("batchnorm_float32") else "")
        + "). Relative error ‖g − g_ref‖ / ‖g_ref‖ over all parameters.",
        "",
        "| backbone / seed | gradient | fp32 vs fp64 | bf16 vs fp64 | bf16 vs fp32 | cosine bf16·fp64 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, row in result["rows"].items():
        for part in ("meta", "multitask"):
            r = row[part]
            lines.append(
                f"| {key} | {part} | {r['fp32_vs_fp64']['relative_error']:.1e} | "
                f"{r['bf16_vs_fp64']['relative_error']:.1e} | {r['bf16_vs_fp32']['relative_error']:.1e} | "
                f"{r['bf16_vs_fp64']['cosine']:.4f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
