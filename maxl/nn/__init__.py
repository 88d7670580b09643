"""Networks: backbones, MAXL's multi-task network and label-generation network."""

from maxl.nn.backbones import BACKBONES, ConvNet, build_backbone, small_cnn, tiny_cnn, vgg16_bn
from maxl.nn.networks import FeatureLabelGenerator, LabelGenerator, MultiTaskNetwork
from maxl.nn.resnet import ResNet, resnet18, resnet20, resnet32

__all__ = [
    "BACKBONES",
    "ConvNet",
    "ResNet",
    "resnet20",
    "resnet32",
    "resnet18",
    "build_backbone",
    "small_cnn",
    "tiny_cnn",
    "vgg16_bn",
    "LabelGenerator",
    "FeatureLabelGenerator",
    "MultiTaskNetwork",
]
