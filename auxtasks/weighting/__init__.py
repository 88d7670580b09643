"""Loss weightings of the multi-task literature, one per file behind :class:`Weighting`.

=========================  =============================================  ==========
name                       class                                          acts on
=========================  =============================================  ==========
``equal``, ``fixed``       :class:`Equal`, :class:`Fixed`                 losses
``uncertainty``            :class:`Uncertainty` (Kendall et al. 2018)     losses
``dwa``                    :class:`DynamicWeightAverage` (Liu et al. 2019) losses
``gradnorm``               :class:`GradNorm` (Chen et al. 2018)           gradients
``pcgrad``                 :class:`PCGrad` (Yu et al. 2020)               gradients
``gcs``                    :class:`GradientCosineSimilarity` (Du et al.)  gradients
``mgda``                   :class:`MGDA` (Sener & Koltun 2018)            gradients
``mgda-ub``                :class:`MGDAUpperBound` (Sener & Koltun 2018)  gradients
``dtp``                    :class:`DynamicTaskPrioritization` (Guo 2018)  losses
``rlw``                    :class:`RandomWeighting` (Lin et al. 2022)     losses
``famo``                   :class:`FAMO` (Liu et al. 2023)                losses
``db-mtl``                 :class:`DualBalancing` (Lin et al. 2023)       gradients
``gls``                    :class:`GeometricLoss` (Chennupati et al.)     losses
``imtl-l``                 :class:`ImpartialLoss` (Liu et al. 2021)       losses
``stch``                   :class:`SmoothTchebycheff` (Lin et al. 2024)   losses
``upgrad``, ``cagrad``,    torchjd's aggregators (:mod:`.aggregators`)    gradients
``nash-mtl``, ...
``auto-lambda``            :class:`AutoLambda` (Liu et al. 2022)          meta-learned
``ol-aux``                 :class:`OLAux` (Lin et al. 2019)               meta-learned
``auxilearn``              :class:`AuxiLearn` (Navon et al. 2021)         meta-learned
``auxilearn-nonlinear``    :class:`AuxiLearnNonlinear`                    meta-learned
=========================  =============================================  ==========

Each class's hyperparameters are its ``OPTIONS`` (``--weighting-option KEY=VALUE``,
:func:`weighting_options`).
"""

from .aggregators import (
    IMTLG,
    AlignedMTL,
    CAGrad,
    ConFIG,
    DualProj,
    FairGrad,
    GradDrop,
    GradVac,
    NashMTL,
    TorchJDWeighting,
    UPGrad,
)
from .auto_lambda import AutoLambda
from .auxilearn import AuxiLearn, AuxiLearnNonlinear
from .base import PRIMARY, GradientWeighting, Weighting, flat_gradients
from .db_mtl import DualBalancing
from .dtp import DynamicTaskPrioritization
from .dwa import DynamicWeightAverage
from .famo import FAMO
from .fixed import Equal, Fixed
from .gcs import GradientCosineSimilarity
from .gls import GeometricLoss
from .gradnorm import GradNorm
from .imtl_l import ImpartialLoss
from .mgda import MGDA, MGDAUpperBound
from .ol_aux import OLAux
from .options import weighting_options
from .pcgrad import PCGrad
from .rlw import RandomWeighting
from .stch import SmoothTchebycheff
from .uncertainty import Uncertainty

#: Weightings by their command-line name (``fixed`` needs its weights, so it is not here).
WEIGHTINGS: dict[str, type[Weighting]] = {
    "equal": Equal,
    "uncertainty": Uncertainty,
    "dwa": DynamicWeightAverage,
    "gradnorm": GradNorm,
    "pcgrad": PCGrad,
    "gcs": GradientCosineSimilarity,
    "mgda": MGDA,
    "mgda-ub": MGDAUpperBound,
    "dtp": DynamicTaskPrioritization,
    "auto-lambda": AutoLambda,
    "ol-aux": OLAux,
    "auxilearn": AuxiLearn,
    "auxilearn-nonlinear": AuxiLearnNonlinear,
    "rlw": RandomWeighting,
    "famo": FAMO,
    "db-mtl": DualBalancing,
    "gls": GeometricLoss,
    "imtl-l": ImpartialLoss,
    "stch": SmoothTchebycheff,
    **{
        cls.NAME: cls
        for cls in (UPGrad, CAGrad, NashMTL, IMTLG, AlignedMTL, GradDrop, GradVac, DualProj, ConFIG, FairGrad)
    },
}

__all__ = [
    "PRIMARY",
    "Weighting",
    "GradientWeighting",
    "flat_gradients",
    "Equal",
    "Fixed",
    "Uncertainty",
    "DynamicWeightAverage",
    "GradNorm",
    "PCGrad",
    "GradientCosineSimilarity",
    "MGDA",
    "MGDAUpperBound",
    "DynamicTaskPrioritization",
    "RandomWeighting",
    "FAMO",
    "DualBalancing",
    "GeometricLoss",
    "ImpartialLoss",
    "SmoothTchebycheff",
    "TorchJDWeighting",
    "UPGrad",
    "CAGrad",
    "NashMTL",
    "IMTLG",
    "AlignedMTL",
    "GradDrop",
    "GradVac",
    "DualProj",
    "ConFIG",
    "FairGrad",
    "weighting_options",
    "AutoLambda",
    "OLAux",
    "AuxiLearn",
    "AuxiLearnNonlinear",
    "WEIGHTINGS",
]
