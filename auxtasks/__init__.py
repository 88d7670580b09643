"""Auxiliary tasks and loss weightings that plug into any primary-task training loop.

Tasks (each turns a batch into its own inputs and targets, owns its head on the shared
features and computes its loss): :class:`Rotation` (Gidaris et al., ICLR 2018),
:class:`Colourisation` (Zhang et al., ECCV 2016), :class:`SupervisedLabels` (labels the user
has), :class:`GeneratedLabels` (MAXL's label-generation network, Liu et al., NeurIPS 2019).
:class:`AuxiliaryLearner` combines them with a user's backbone and primary head and a loss
weighting from :mod:`auxtasks.weighting`.
"""

from .colourisation import AB_SCALE, COLOURISATION_MODES, Colourisation, ab_bins
from .generated import GeneratedLabels
from .learner import AuxiliaryLearner, AuxOutput, LazyHeadsWarning, feature_size_of, frozen_running_stats
from .rotation import ROTATION_MODES, Rotation, rotate_batch
from .supervised import SupervisedLabels
from .task import LIKELIHOODS, AuxiliaryTask
from .weighting import (
    WEIGHTINGS,
    AutoLambda,
    DynamicWeightAverage,
    Equal,
    Fixed,
    GradientCosineSimilarity,
    GradientWeighting,
    GradNorm,
    PCGrad,
    Uncertainty,
    Weighting,
)

__all__ = [
    "AuxiliaryTask",
    "LIKELIHOODS",
    "Rotation",
    "rotate_batch",
    "ROTATION_MODES",
    "Colourisation",
    "ab_bins",
    "AB_SCALE",
    "COLOURISATION_MODES",
    "SupervisedLabels",
    "GeneratedLabels",
    "AuxiliaryLearner",
    "AuxOutput",
    "LazyHeadsWarning",
    "feature_size_of",
    "frozen_running_stats",
    "Weighting",
    "GradientWeighting",
    "Equal",
    "Fixed",
    "Uncertainty",
    "DynamicWeightAverage",
    "GradNorm",
    "PCGrad",
    "GradientCosineSimilarity",
    "AutoLambda",
    "WEIGHTINGS",
]
