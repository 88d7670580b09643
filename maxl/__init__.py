"""maxl: Meta Auxiliary Learning for PyTorch.

MAXL (Liu, Davison, Johns, "Self-Supervised Generalisation with Meta Auxiliary Learning",
NeurIPS 2019, arXiv:1901.08933) trains a multi-task network on a primary task and on
auxiliary labels that a label-generation network invents, the generator being trained by
second-order meta-gradients so that its labels help the primary task.
"""

from .backbones import BACKBONES, ConvNet, build_backbone, small_cnn, tiny_cnn, vgg16_bn
from .hierarchy import Hierarchy, masked_log_softmax, masked_softmax, validate_psi
from .losses import focal_loss, negative_entropy
from .meta import DoubleBackwardError, MetaConfig, MetaResult, meta_gradient
from .networks import LabelGenerator, MultiTaskNetwork
from .trainer import CheckpointError, NonFiniteGradientError, NonFiniteLossError, TrainConfig, Trainer

__version__ = "0.1.0"

__all__ = [
    "BACKBONES", "ConvNet", "build_backbone", "small_cnn", "tiny_cnn", "vgg16_bn",
    "Hierarchy", "masked_log_softmax", "masked_softmax", "validate_psi",
    "focal_loss", "negative_entropy",
    "MetaConfig", "MetaResult", "meta_gradient", "DoubleBackwardError",
    "LabelGenerator", "MultiTaskNetwork",
    "TrainConfig", "Trainer", "CheckpointError", "NonFiniteGradientError", "NonFiniteLossError",
]
