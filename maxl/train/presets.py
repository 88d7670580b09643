"""Per-data-set presets: the settings ``maxl train`` starts from before ``--config`` and flags.

The dataclass defaults of :class:`~maxl.train.build.RunConfig` are the paper's CIFAR-100
settings (SGD lr 0.01 without momentum, halved every 50 of 200 epochs, batch 100, VGG-16-BN;
Liu, Davison, Johns, NeurIPS 2019, arXiv:1901.08933, Sec. 4): on small data sets they train
slowly (digits: 66 % after 5 epochs). A preset overrides a few of them (backbone, heads' width,
epochs, batch size, learning rate, momentum, weight decay, schedule) with values chosen on a
validation split held out from the training images and measured on the test set (README,
"Presets"). ``maxl train`` resolves a setting as

    flag  >  --config file  >  preset  >  dataclass default

and writes the resolved values into ``config.json``. ``--preset auto`` (the command line's
default) takes the data set's own preset, ``--preset paper`` none (the paper's settings), and
``--preset NAME`` the preset of another data set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from maxl.data.registry import DATASETS

__all__ = ["PRESETS", "PRESET_OF", "PRESET_CHOICES", "preset_settings"]

_DIGITS = {  # the settings of `maxl demo`: chosen against lr 0.05 on a one-cycle schedule (README)
    "model.backbone": "tiny-cnn", "model.hidden": 64, "train.epochs": 15, "train.batch_size": 32, "train.lr": 0.05,
    "train.momentum": 0.9, "train.lr_step": 1000,
}
_MNIST = {  # chosen on MNIST against a constant lr 0.05 (README)
    "model.backbone": "small-cnn", "train.epochs": 5, "train.batch_size": 64, "train.lr": 0.05, "train.momentum": 0.9,
    "train.lr_schedule": "onecycle",
}
_RGB_32 = {  # measured on the CIFAR-10 JPEGs (README); a CPU-sized network
    "model.backbone": "cnn3", "train.epochs": 10, "train.batch_size": 128, "train.lr": 0.1, "train.momentum": 0.9,
    "train.weight_decay": 5e-4, "train.lr_schedule": "onecycle",
}

#: preset name -> {dotted setting: value}; ``paper`` changes nothing.
PRESETS: dict[str, dict[str, object]] = {"paper": {}, "digits": _DIGITS, "mnist": _MNIST, "rgb32": _RGB_32}


class _PresetOf(Mapping):
    """data set -> its preset, read from its spec in :data:`maxl.data.registry.DATASETS` (a live view)."""

    def __getitem__(self, dataset: str) -> str:
        return DATASETS[dataset].preset

    def __iter__(self) -> Iterator[str]:
        return iter(DATASETS)

    def __len__(self) -> int:
        return len(DATASETS)


#: data set -> its preset (``DatasetSpec.preset``; data sets of one kind share one; the README says which
#: were measured).
PRESET_OF: Mapping[str, str] = _PresetOf()

#: values of ``--preset``
PRESET_CHOICES: tuple[str, ...] = ("auto", *PRESETS)


def preset_settings(preset: str, dataset: str) -> tuple[str, dict[str, object]]:
    """The preset a run of ``dataset`` takes, and its settings.

    Args:
        preset: ``"auto"`` (the data set's own), ``"paper"`` or a key of :data:`PRESETS`.
        dataset: the data set's name; ``"auto"`` takes its spec's ``preset`` (:mod:`maxl.data.registry`;
            EMNIST splits ``emnist-*`` take ``mnist``), ``paper`` for a name not registered.

    Returns:
        ``(name, {dotted setting path: value})``, e.g. ``("mnist", {"train.lr": 0.05, ...})``.

    Raises:
        ValueError: an unknown preset.
    """
    if preset == "auto":
        preset = PRESET_OF.get(dataset, "paper")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESET_CHOICES}")
    return preset, dict(PRESETS[preset])
