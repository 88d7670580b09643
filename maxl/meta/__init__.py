"""MAXL's meta-gradient of the label-generation network (the outer step), by registered engines.

Modules: :mod:`~maxl.meta.config` (MetaConfig), :mod:`~maxl.meta.gradient` (meta_gradient, the
maths), :mod:`~maxl.meta.fused` (fused_step), :mod:`~maxl.meta.engine` (the MetaEngine base),
:mod:`~maxl.meta.registry`, :mod:`~maxl.meta.lookahead` (shared pieces),
:mod:`~maxl.meta.graph_check` (ops without double backward), :mod:`~maxl.meta.engines` (func,
higher, jvp, first; one file each).
"""

from maxl.meta.engines import ENGINES, FUSED_ENGINES  # registers the built-in engines  # noqa: I001
from maxl.meta.config import ORDERS, MetaConfig
from maxl.meta.engine import MetaEngine
from maxl.meta.fused import FusedResult, fused_step
from maxl.meta.gradient import MetaResult, meta_gradient
from maxl.meta.graph_check import DoubleBackwardError
from maxl.meta.registry import get_engine, register_engine, supports_fused

__all__ = ["ENGINES", "ORDERS", "FUSED_ENGINES", "DoubleBackwardError", "MetaConfig", "MetaResult", "FusedResult",
           "meta_gradient", "fused_step", "MetaEngine", "register_engine", "get_engine", "supports_fused"]
