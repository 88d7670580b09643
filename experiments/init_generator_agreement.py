"""Control for ``maxl visualise``: how well do the labels of the *untrained* generator agree
with the human labels?

A label-generation network partitions images by its features even before any meta-gradient
step: random convolutions already separate thick from thin strokes or dark from bright images.
To tell what MAXL training added, this script rebuilds the generator a run started from (same
seed, same construction order as ``maxl train``: seed, multi-task network, generator) and
computes NMI / ARI / purity within each primary class for it and for the trained generator
of the checkpoint, on the same test images.

    python experiments/init_generator_agreement.py RUN_DIR [RUN_DIR ...] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from maxl.analysis.agreement import agreement_within_primary, mean_agreement
from maxl.analysis.run import load_run
from maxl.analysis.visualise import collect_outputs
from maxl.nn.backbones import build_backbone
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork
from maxl.train import seed_everything
from maxl.train.build import make_generator


def initial_generator(config: dict, data) -> LabelGenerator:
    """The generator of ``maxl train`` before training (see :func:`maxl.cli.commands.run_training`).

    Its BatchNorm running statistics are the defaults (mean 0, variance 1), while training runs
    the generator in train mode with batch statistics; so they are recomputed over the training
    images first (a cumulative average, weights untouched), which makes its eval-mode labels
    those of the untrained generator as training saw it.
    """
    m = config["model"]
    batchnorm = m.get("batchnorm", True)
    seed_everything(config["train"]["seed"])
    net = MultiTaskNetwork(
        build_backbone(m["backbone"], data.in_channels, batchnorm), m["num_primary"], sum(m["psi"]), m["hidden"]
    )
    generator = make_generator(
        config.get("generator", {}).get("network", "own"),
        net,
        m["backbone"],
        data.in_channels,
        batchnorm,
        m["psi"],
        m["hidden"],
    )
    features = getattr(generator, "shared_backbone", None) or generator.backbone  # the untrained network's, if shared
    for module in features.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative moving average
    features.train()
    with torch.no_grad():
        for x, _, _ in DataLoader(data.train, batch_size=config["train"]["batch_size"]):
            features(x)
    features.eval()
    return generator.eval()


def scores(net, generator, data) -> dict:
    out = collect_outputs(net, generator, data.test)
    generated = out.soft_labels.argmax(1)
    results = agreement_within_primary(out.primary, generated, data.aux_test.numpy(), generator.hierarchy, data.psi)
    mean = mean_agreement(results)
    mean["per_class"] = {
        data.primary_names[r.primary]: {"nmi": r.nmi, "ari": r.ari, "purity": r.purity} for r in results
    }
    mean["mean_max_prob"] = float(out.soft_labels.max(1).mean())
    mean["classes_used"] = int(len(np.unique(generated)))
    return mean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="maxl run folders (method maxl, data set with human labels)")
    parser.add_argument("--out", default=None, help="JSON file for the numbers")
    args = parser.parse_args(argv)
    table = {}
    for run_dir in args.run_dirs:
        run = load_run(run_dir)
        if run.generator is None or run.data.aux_test is None:
            raise SystemExit(f"{run_dir}: needs a maxl run on a data set with human auxiliary labels")
        table[str(run_dir)] = {
            "initial": scores(run.net, initial_generator(run.config, run.data), run.data),
            "trained": scores(run.net, run.generator, run.data),
        }
        for when, s in table[str(run_dir)].items():
            print(
                f"{run_dir} {when:>8}: NMI {s['nmi']:.3f}  ARI {s['ari']:.3f}  purity {s['purity']:.3f} "
                f"(chance {s['chance_purity']:.3f})  mean max-prob {s['mean_max_prob']:.3f}  "
                f"classes used {s['classes_used']}"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
