"""MAXL's meta-gradient of the label-generation network (the outer step)."""

from maxl.meta.fused import FUSED_ENGINES, FusedResult, fused_step
from maxl.meta.gradient import ENGINES, ORDERS, DoubleBackwardError, MetaConfig, MetaResult, meta_gradient

__all__ = ["ENGINES", "ORDERS", "FUSED_ENGINES", "DoubleBackwardError", "MetaConfig", "MetaResult", "FusedResult",
           "meta_gradient", "fused_step"]
