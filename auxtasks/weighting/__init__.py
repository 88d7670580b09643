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
``auto-lambda``            :class:`AutoLambda` (Liu et al. 2022)          meta-learned
``ol-aux``                 :class:`OLAux` (Lin et al. 2019)               meta-learned
=========================  =============================================  ==========
"""

from .auto_lambda import AutoLambda
from .base import PRIMARY, GradientWeighting, Weighting, flat_gradients
from .dtp import DynamicTaskPrioritization
from .dwa import DynamicWeightAverage
from .fixed import Equal, Fixed
from .gcs import GradientCosineSimilarity
from .gradnorm import GradNorm
from .mgda import MGDA, MGDAUpperBound
from .ol_aux import OLAux
from .pcgrad import PCGrad
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
    "AutoLambda",
    "OLAux",
    "WEIGHTINGS",
]
