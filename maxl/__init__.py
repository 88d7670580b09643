"""maxl: Meta Auxiliary Learning for PyTorch.

MAXL (Liu, Davison, Johns, "Self-Supervised Generalisation with Meta Auxiliary Learning",
NeurIPS 2019, arXiv:1901.08933) trains a multi-task network on a primary task and on
auxiliary labels that a label-generation network invents, the generator being trained by
second-order meta-gradients so that its labels help the primary task.

Layers, imports running one way (top to bottom)::

    maxl.cli                      argv -> RunConfig
    maxl.train                    RunConfig -> Trainer; the one step path, schedules, checkpoints
    auxtasks                      auxiliary tasks, the learner, loss weightings
    maxl.meta, maxl.nn            meta-gradient engines; backbones and networks
    maxl.core                     hierarchy ψ and masked softmax, losses, heads

``maxl.data``, ``maxl.baselines`` and ``maxl.analysis`` sit beside them. The training names
(``Trainer``, ``TrainConfig``, ...) load on first use, so that ``import maxl.meta`` from
:mod:`auxtasks` does not pull in the trainer (which imports :mod:`auxtasks`).
"""

import importlib

from maxl.core.hierarchy import Hierarchy, masked_log_softmax, masked_softmax, validate_psi
from maxl.core.losses import focal_loss, negative_entropy
from maxl.meta import DoubleBackwardError, MetaConfig, MetaResult, ObjectiveConfig, meta_gradient
from maxl.nn.backbones import BACKBONES, ConvNet, build_backbone, small_cnn, tiny_cnn, vgg16_bn
from maxl.nn.networks import LabelGenerator, MultiTaskNetwork

__version__ = "0.1.0"

_LAZY = {  # name -> module: the upper layers, imported on first access (PEP 562)
    "TrainConfig": "maxl.train",
    "GeneratorConfig": "maxl.train",
    "Trainer": "maxl.train",
    "CheckpointError": "maxl.train",
    "NonFiniteGradientError": "maxl.train",
    "NonFiniteLossError": "maxl.train",
}

__all__ = [
    "BACKBONES",
    "ConvNet",
    "build_backbone",
    "small_cnn",
    "tiny_cnn",
    "vgg16_bn",
    "Hierarchy",
    "masked_log_softmax",
    "masked_softmax",
    "validate_psi",
    "focal_loss",
    "negative_entropy",
    "MetaConfig",
    "ObjectiveConfig",
    "MetaResult",
    "meta_gradient",
    "DoubleBackwardError",
    "LabelGenerator",
    "MultiTaskNetwork",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'maxl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
