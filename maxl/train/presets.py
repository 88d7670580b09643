"""Per-data-set presets: the settings ``maxl train`` starts from before ``--config`` and flags.

The dataclass defaults of :class:`~maxl.train.build.RunConfig` are the paper's CIFAR-100
settings (SGD lr 0.01 without momentum, halved every 50 of 200 epochs, batch 100, VGG-16-BN;
Liu, Davison, Johns, NeurIPS 2019, arXiv:1901.08933, Sec. 4): on small data sets they train
slowly (digits: 66 % after 5 epochs). A preset overrides a few of them (backbone, heads' width,
epochs, batch size, learning rate, momentum, weight decay, schedule) with values chosen on a
validation split held out from the training images and measured on the test set (README,
"Presets"). Each preset is a config overlay in TOML, ``maxl/presets/NAME.toml``
(:mod:`maxl.train.overlays`). ``maxl train`` resolves a setting as

    flag  >  --config file  >  preset  >  dataclass default

and writes the resolved values into ``config.json``. ``--preset auto`` (the command line's
default) takes the data set's own preset, ``--preset paper`` none (the paper's settings), and
``--preset NAME`` the preset of another data set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from maxl.data.registry import DATASETS
from maxl.train.overlays import dotted, read_toml

__all__ = ["PRESETS", "PRESETS_DIR", "PRESET_OF", "PRESET_CHOICES", "preset_settings"]

#: the presets' files: each a config overlay (:mod:`maxl.train.overlays`) in TOML, named after the preset
PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"

#: preset name -> {dotted setting: value}, read from ``maxl/presets/NAME.toml``; ``paper`` changes nothing.
PRESETS: dict[str, dict[str, object]] = {
    "paper": {},
    **{p.stem: dotted(read_toml(p, "preset")) for p in sorted(PRESETS_DIR.glob("*.toml"))},
}


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
