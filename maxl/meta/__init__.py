"""MAXL's meta-gradient of the label-generation network (the outer step), by registered engines.

Modules: :mod:`~maxl.meta.config` (MetaConfig: how ∇θ2 J is computed), :mod:`~maxl.meta.objective`
(ObjectiveConfig and the registered terms: what J is), :mod:`~maxl.meta.gradient` (meta_gradient, the
maths), :mod:`~maxl.meta.fused` (fused_step), :mod:`~maxl.meta.engine` (the MetaEngine base),
:mod:`~maxl.meta.registry`, :mod:`~maxl.meta.lookahead` (shared pieces),
:mod:`~maxl.meta.graph_check` (ops without double backward), :mod:`~maxl.meta.engines` (func,
higher, jvp, first, implicit; one file each).

The outer objective is J(θ2) = L_pri(f(x_o; θ1^(k)), y_o) + λ Σ ȳ log ȳ (the registered label terms of
:mod:`~maxl.meta.objective`; the paper's one is λ's) with θ1^(0) = θ1 and
θ1^(j+1) = θ1^(j) − α ∇θ1 (L_pri + L_aux)(θ1^(j)) on the batch (x, y) and the generator's labels of
x; the paper's J has k = 1 (``MetaConfig.inner_steps``) and (x_o, y_o) = (x, y) (``outer_batch``
None). References: Liu, Davison, Johns, NeurIPS 2019 (MAXL, arXiv:1901.08933); Liu, Simonyan,
Yang, ICLR 2019 (DARTS) and Navon et al., ICLR 2021 (AuxiLearn) for the held-out outer batch;
Finn, Abbeel, Levine, ICML 2017 (MAML) for several inner steps. ``order="implicit"`` replaces the
look-ahead by implicit differentiation at θ1 (Lorraine, Vicol, Duvenaud, AISTATS 2020; AuxiLearn).
"""

from maxl.meta.engines import ENGINES, FUSED_ENGINES, MULTI_STEP_ENGINES  # registers the built-in engines  # noqa: I001
from maxl.meta.config import ORDERS, MetaConfig
from maxl.meta.engine import MetaEngine, OuterBatch
from maxl.meta.fused import FusedResult, fused_step
from maxl.meta.gradient import MetaResult, meta_gradient
from maxl.meta.graph_check import DoubleBackwardError
from maxl.meta.objective import (
    ObjectiveConfig,
    TermInputs,
    objective_terms,
    paper_objective,
    register_term,
    term_names,
    unregister_term,
)
from maxl.meta.registry import check_inner_steps, get_engine, register_engine, supports_fused

__all__ = [
    "ENGINES",
    "ORDERS",
    "FUSED_ENGINES",
    "DoubleBackwardError",
    "MetaConfig",
    "MetaResult",
    "FusedResult",
    "meta_gradient",
    "fused_step",
    "MetaEngine",
    "OuterBatch",
    "register_engine",
    "register_term",
    "term_names",
    "objective_terms",
    "unregister_term",
    "ObjectiveConfig",
    "TermInputs",
    "paper_objective",
    "get_engine",
    "supports_fused",
    "check_inner_steps",
    "MULTI_STEP_ENGINES",
]
