"""The settings of the generator's meta-gradient (MAXL's outer step) and the rule that picks its engine."""

from __future__ import annotations

from dataclasses import dataclass

from maxl.core.fields import check_field_types, refuse_moved_settings, setting
from maxl.meta.registry import check_inner_steps, engine_names, get_engine

__all__ = ["MetaConfig", "ORDERS", "MOVED_TO_OBJECTIVE"]

ORDERS = ("second", "first", "implicit")


#: The settings that left :class:`MetaConfig` for :class:`maxl.meta.objective.ObjectiveConfig`
#: (the terms of J; engines never read them), by name.
MOVED_TO_OBJECTIVE = (
    "entropy_weight",
    "image_entropy_weight",
    "consistency_weight",
    "consistency_colour",
    "consistency_flip",
    "consistency_rotation",
    "centre_by_class",
    "record_parts",
)


@dataclass
class MetaConfig:
    """Settings of the generator's meta-gradient: how ∇θ2 J is computed, not what J is (the
    terms of J and their weights are :class:`maxl.meta.objective.ObjectiveConfig`'s).

    Attributes:
        inner_lr: α, the look-ahead step size (the paper: equal to the multi-task lr, 0.01);
            None in a run's configuration means "the multi-task lr" (the trainer sets it).
        order: ``"second"`` (exact), ``"first"`` (finite-difference approximation) or
            ``"implicit"`` (implicit differentiation with a Neumann series: the hypergradient of
            a (K + 1)-step horizon, linearised; :mod:`maxl.meta.engines.implicit`).
        engine: a registered second-order engine: ``"func"`` (torch.func, double backward),
            ``"higher"`` or ``"jvp"`` (forward-mode, no double backward); used by
            ``order="second"``.
        fd_epsilon: ε₀ of the first-order variant, ε = ε₀/‖d‖ (0.01 as in DARTS).
        inner_steps: k, the number of differentiable look-ahead steps, θ1^(j+1) = θ1^(j) −
            α ∇θ1 (L_pri + L_aux)(θ1^(j)) on the same batch and labels, J taken at θ1^(k)
            (1 in the paper; k > 1 as MAML's inner loop, engines ``"func"`` and ``"higher"``).
        neumann_terms: K of ``order="implicit"``: [∇²θ1 L_T]⁻¹ ≈ α Σ_{j=0}^{K} (I − αH)^j, one
            Hessian-vector product per term (3, AuxiLearn's default truncation).

    Raises:
        TypeError: a setting of J (:data:`MOVED_TO_OBJECTIVE`, e.g. ``entropy_weight``), which
            moved to :class:`~maxl.meta.objective.ObjectiveConfig`; the message says where.
        ValueError: a value of the wrong type (:func:`maxl.core.fields.check_field_types`),
            an unknown order, an engine that is not registered as second-order,
            ``inner_lr <= 0``, ``fd_epsilon <= 0``, ``inner_steps < 1``,
            ``neumann_terms < 0``, or ``inner_steps > 1`` with an engine that takes one step only
            (``"jvp"``, ``order="first"``, ``order="implicit"``).

    References:
        Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
        NeurIPS 2019, arXiv:1901.08933, Eq. 3–4 (α).
        Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search". ICLR 2019, Eq. 7–8 (ε).
        Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks". ICML 2017, Sec. 2.2 (several inner steps).
        Lorraine, Vicol, Duvenaud. "Optimizing Millions of Hyperparameters by Implicit
        Differentiation". AISTATS 2020, Eq. 5 (K).
    """

    inner_lr: float | None = setting(
        0.01, help="look-ahead step alpha (default: the multi-task network's current learning rate)"
    )
    order: str = setting(
        "second",
        flag="--meta-order",
        choices=ORDERS,
        help="exact second-order meta-gradient, its finite-difference first-order approximation, or"
        " implicit differentiation (long horizon)",
    )
    engine: str = setting(
        "func",
        flag="--meta-engine",
        choices=lambda: engine_names("second"),
        help="engine of the second-order look-ahead",
    )
    fd_epsilon: float = setting(
        0.01, help="first-order meta-gradient: eps0 of the finite-difference step eps = eps0 / ||d|| (DARTS)"
    )
    inner_steps: int = setting(1, help="differentiable look-ahead steps k (func, higher)")
    neumann_terms: int = setting(3, help="K Neumann terms of the inverse Hessian (--meta-order implicit)")

    def __post_init__(self):
        check_field_types(self, "meta")
        if self.order not in ORDERS:
            raise ValueError(f"unknown meta order {self.order!r}; expected one of {ORDERS}")
        if self.engine not in engine_names("second"):
            raise ValueError(f"unknown meta engine {self.engine!r}; expected one of {engine_names('second')}")
        if self.inner_lr is not None and self.inner_lr <= 0:
            raise ValueError(f"inner_lr (look-ahead step α) must be > 0, got {self.inner_lr}")
        if self.fd_epsilon <= 0:
            raise ValueError(f"fd_epsilon (ε₀ of the first-order meta-gradient) must be > 0, got {self.fd_epsilon}")
        if isinstance(self.inner_steps, bool) or not isinstance(self.inner_steps, int) or self.inner_steps < 1:
            raise ValueError(f"inner_steps (look-ahead steps k) must be an int >= 1, got {self.inner_steps!r}")
        if isinstance(self.neumann_terms, bool) or not isinstance(self.neumann_terms, int) or self.neumann_terms < 0:
            raise ValueError(f"neumann_terms (K) must be an int >= 0, got {self.neumann_terms!r}")
        check_inner_steps(get_engine(self.engine_name), self.inner_steps)

    @property
    def engine_name(self) -> str:
        """The registry name of the engine that computes the meta-gradient: ``engine`` for
        ``order="second"``, else the order's own engine (``"first"``, ``"implicit"``), whatever
        ``engine`` says."""
        return self.engine if self.order == "second" else self.order


refuse_moved_settings(
    MetaConfig,
    {
        name: f"maxl.ObjectiveConfig({name}=...), passed as objective= (section [objective] of a run's "
        "configuration; the flag is unchanged)"
        for name in MOVED_TO_OBJECTIVE
    },
)
