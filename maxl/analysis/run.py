"""Reading a run folder written by ``maxl train`` (:mod:`maxl.cli.commands`, :mod:`maxl.train.trainer`).

A run folder holds ``config.json`` (sections ``data``, ``model``, ``train``, ``env``),
``metrics.jsonl`` (one JSON record per epoch), ``summary.json`` and ``checkpoint.pt``.
:func:`load_run` rebuilds the data set and both networks from them, for analysis
(:mod:`maxl.analysis.visualise`) or for any script of one's own.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch

from maxl.data.datasets import DataBundle
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork
from maxl.train.build import (
    RunConfig,
    arch_settings,
    architecture_split,
    hold_out_for_architecture,
    load_training_data,
    make_generator,
    make_network,
)
from maxl.train.migrate import migrate

__all__ = ["Run", "TornLineWarning", "load_run", "read_config", "read_metrics", "read_summary", "run_label"]


class TornLineWarning(UserWarning):
    """The last line of a ``metrics.jsonl`` is cut short (the run stopped while appending it)
    and was skipped; ``maxl train --resume`` rewrites the file from the checkpoint."""


class Run(NamedTuple):
    """A trained run, as returned by :func:`load_run` (unpacks as a 5-tuple).

    Attributes:
        config: ``config.json`` as a dict.
        data: the run's data set (the splits as trained; no training augmentation). With a
            meta-learned weighting that learns on held-out images, ``data.train`` is the images the
            network trained on and ``data.weight_set`` the held-out ones; an architecture search's
            split B (AdaShare's policy, MTL-NAS's gates) is ``data.arch_set``, apart from ``data.train``
            as in training.
        net: the multi-task network, eval mode.
        generator: the label-generation network (eval mode), None for methods other than ``maxl``.
        metrics: the records of ``metrics.jsonl``, one dict per epoch.
    """

    config: dict
    data: DataBundle
    net: MultiTaskNetwork
    generator: LabelGenerator | None
    metrics: list[dict]


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a run folder written by `maxl train` (it has no {what})")
    return path


def read_config(run_dir: str | os.PathLike) -> dict:
    """``run_dir/config.json`` as a dict.

    Raises:
        FileNotFoundError: no config.json.
        ValueError: it lacks the sections ``data``, ``model``, ``train``.
    """
    path = _require(Path(run_dir) / "config.json", "config.json")
    config = migrate(json.loads(path.read_text()), announce=False)  # an old run's settings at their new paths
    missing = [k for k in ("data", "model", "train") if k not in config]
    if missing:
        raise ValueError(f"{path} lacks the sections {missing}; expected data, model, train (and env)")
    return config


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch records of ``run_dir/metrics.jsonl`` (every reader of the file uses this).

    A last line cut short by a crash is skipped with a :class:`TornLineWarning` naming the file
    and the line; an unreadable line before the last one is corruption and raises.

    Raises:
        FileNotFoundError: no metrics.jsonl.
        ValueError: an unreadable line before the last one (file and line named).
    """
    path = _require(Path(run_dir) / "metrics.jsonl", "metrics.jsonl")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines):
                raise ValueError(f"{path}, line {number}: not JSON ({err})") from None
            warnings.warn(
                f"{path}: skipping the truncated last line {number} (the run stopped while writing it)",
                TornLineWarning,
                stacklevel=2,
            )
    return records


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    """``run_dir/summary.json`` as a dict, or None while the run has not finished."""
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_label(run_dir: str | os.PathLike, config: dict | None = None) -> str:
    """A short name for plots: ``method (folder)``, e.g. ``"maxl (mnist/maxl)"``."""
    run_dir = Path(run_dir).resolve()
    config = config if config is not None else read_config(run_dir)
    return f"{config['train']['method']} ({run_dir.parent.name}/{run_dir.name})"


def load_run(
    run_dir: str | os.PathLike, *, data_root: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> Run:
    """Rebuild a run's data set and networks from its folder.

    The data set is loaded with every setting of the run's data section and its seed (subsets,
    validation split, normalisation) and less the split a meta-learned weighting held out for its
    outer loss (``data.weight_set``): :func:`maxl.train.build.load_training_data`, the call
    training made, then less an architecture search's split B (``data.arch_set``), without the
    training augmentation, so the images are the ones the run saw at the positions it saw them;
    the networks are rebuilt from the
    ``model`` section and get the weights of ``checkpoint.pt`` (loaded with ``weights_only``:
    a checkpoint cannot run code).

    Args:
        run_dir: the run folder.
        data_root: where the data set lies, if not where it lay for training (``data.data_root``
            of the config).
        device: where to put the networks.

    Returns:
        A :class:`Run`.

    Raises:
        FileNotFoundError: a run file or the data set is missing.
        ValueError: the checkpoint does not fit the networks the config describes, or the data
            set now has another number of test or training images than the run had.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    metrics = read_metrics(run_dir)
    checkpoint = _require(run_dir / "checkpoint.pt", "checkpoint.pt")
    d, m = config["data"], config["model"]
    settings = RunConfig.from_dict(config)  # the run's settings as `maxl train --config` reads them
    if data_root is not None:
        settings = replace(settings, data=replace(settings.data, data_root=str(data_root)))
    data = load_training_data(settings, augment=False)
    split_b = architecture_split(settings.model, settings.train.batch_size, len(data.train))
    if split_b is not None:  # an architecture search's split B, held out after the weights' split as in training
        data, arch_set, _, _ = hold_out_for_architecture(data, None, split_b[1], settings.train.seed, split_b[0])
        data = replace(data, arch_set=arch_set)
    for split, images in (("test", data.test), ("train", data.train)):
        if len(images) != d.get(f"num_{split}", len(images)):
            raise ValueError(
                f"{run_dir}: the data set now gives {len(images)} {split} images, the run had "
                f"{d[f'num_{split}']}; is data_root the same data set?"
            )
    method, psi = config["train"]["method"], list(m["psi"])
    num_aux = 0 if method == "single" else sum(psi)
    net = make_network(
        m.get("arch", "hard"),
        m["backbone"],
        data.in_channels,
        m.get("batchnorm", True),
        m["num_primary"],
        num_aux,
        m["hidden"],
        m.get("soft_penalty", "l2"),
        m.get("soft_weight", 0.01),
        arch_settings(settings.model),
    )
    begin_epoch = getattr(net.backbone, "begin_epoch", None)  # AdaShare: the phase of the last epoch
    if callable(begin_epoch):
        begin_epoch(max(settings.train.epochs - 1, 0))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    generator = None
    if "generator" in state:
        g = config.get("generator", {})
        generator = make_generator(
            g.get("network", "own"),
            net,
            m["backbone"],
            data.in_channels,
            m.get("batchnorm", True),
            psi,
            m["hidden"],
            g.get("image_weight_range", 0.0),
            g.get("gumbel_tau", 0.0),
        )
    for name, module in (("net", net), ("generator", generator)):
        if module is None:
            continue
        try:
            module.load_state_dict(state[name])
        except RuntimeError as err:
            raise ValueError(
                f"{checkpoint}: the {name} weights do not fit the network described by config.json ({m}): {err}"
            ) from None
        module.to(device).eval()
    return Run(config, data, net, generator, metrics)
