"""The settings of the generator's meta step (MAXL's outer step) and the rule that picks its engine."""

from __future__ import annotations

from dataclasses import dataclass

from maxl.core.fields import check_field_types, setting
from maxl.meta.registry import check_inner_steps, engine_names, get_engine

__all__ = ["MetaConfig", "ORDERS"]

ORDERS = ("second", "first", "implicit")


@dataclass
class MetaConfig:
    """Settings of the generator's meta step.

    Attributes:
        inner_lr: α, the look-ahead step size (the paper: equal to the multi-task lr, 0.01);
            None in a run's configuration means "the multi-task lr" (the trainer sets it).
        entropy_weight: λ of the negative-entropy term (0.2 in the paper).
        order: ``"second"`` (exact), ``"first"`` (finite-difference approximation) or
            ``"implicit"`` (implicit differentiation with a Neumann series: the hypergradient of
            a (K + 1)-step horizon, linearised; :mod:`maxl.meta.engines.implicit`).
        engine: a registered second-order engine: ``"func"`` (torch.func, double backward),
            ``"higher"`` or ``"jvp"`` (forward-mode, no double backward); used by
            ``order="second"``.
        fd_epsilon: ε₀ of the first-order variant, ε = ε₀/‖d‖ (0.01 as in DARTS).
        image_entropy_weight: μ of a per-image entropy term, J += μ mean_b H(ŷ_b): it makes each
            image's label sharp while λ's batch-mean term keeps the labels balanced; μ = λ gives
            the mutual information J = L_pri(θ1⁺) − λ [H(ȳ) − mean_b H(ŷ_b)] (0: the paper's J).
        consistency_weight: ν of a view-consistency term, J −= ν I(g(x), g(x')), the mutual
            information of the labels of two augmented views (IIC); applied by callers that can
            make the second view (:class:`auxtasks.GeneratedLabels`), not by :func:`meta_gradient`.
        consistency_colour: s, the strength of a colour distortion of the second view (brightness,
            contrast, saturation factors in [1 − s, 1 + s], grayscale with probability 0.2;
            :func:`auxtasks.generated.random_colour`); 0: flip and shift only.
        consistency_flip: the second view is a mirror image half of the time (True; False for
            data whose classes a mirror image changes, such as digits).
        consistency_rotation: the second view is also rotated by an angle drawn from
            [−r, r] degrees (:func:`auxtasks.generated.random_rotation`); 0: no rotation.
        record_parts: also report the norms of the two parts of ∇θ2 J, the look-ahead's
            ∇θ2 L_pri(θ1⁺) and the entropy term's λ∇θ2 H (a diagnostic: one more backward
            through the generator; the gradient itself is then their sum).
        centre_by_class: remove from the look-ahead's push on the labels, ∂L_pri(θ1⁺)/∂ŷ_b, its
            mean over the batch's images of the same primary class before it reaches θ2, so that
            the look-ahead only decides which images of a class take which auxiliary class,
            not how often each is taken (that part moves the class's mean label ȳ_k, which the
            entropy term governs). Needs a generator without per-image weights.
        inner_steps: k, the number of differentiable look-ahead steps, θ1^(j+1) = θ1^(j) −
            α ∇θ1 (L_pri + L_aux)(θ1^(j)) on the same batch and labels, J taken at θ1^(k)
            (1 in the paper; k > 1 as MAML's inner loop, engines ``"func"`` and ``"higher"``).
        neumann_terms: K of ``order="implicit"``: [∇²θ1 L_T]⁻¹ ≈ α Σ_{j=0}^{K} (I − αH)^j, one
            Hessian-vector product per term (3, AuxiLearn's default truncation).

    Raises:
        ValueError: a value of the wrong type (:func:`maxl.core.fields.check_field_types`),
            an unknown order, an engine that is not registered as second-order,
            ``consistency_colour`` outside [0, 1), ``consistency_rotation`` outside [0, 180], ``inner_lr <= 0``,
            ``entropy_weight < 0``, ``fd_epsilon <= 0``, ``inner_steps < 1``,
            ``neumann_terms < 0``, or ``inner_steps > 1`` with an engine that takes one step only
            (``"jvp"``, ``order="first"``, ``order="implicit"``).

    References:
        Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
        NeurIPS 2019, arXiv:1901.08933, Eq. 3–4 (α, λ).
        Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search". ICLR 2019, Eq. 7–8 (ε).
        Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks". ICML 2017, Sec. 2.2 (several inner steps).
        Lorraine, Vicol, Duvenaud. "Optimizing Millions of Hyperparameters by Implicit
        Differentiation". AISTATS 2020, Eq. 5 (K).
    """

    inner_lr: float | None = setting(
        0.01, help="look-ahead step alpha (default: the multi-task network's current learning rate)"
    )
    entropy_weight: float = setting(0.2, help="lambda of the negative-entropy term")
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
    record_parts: bool = setting(
        False,
        flag="--record-meta-parts",
        help="record the norms of the meta-gradient's look-ahead and entropy parts every "
        "epoch (one more generator backward)",
    )
    inner_steps: int = setting(1, help="differentiable look-ahead steps k (func, higher)")
    image_entropy_weight: float = setting(
        0.0,
        help="mu of the per-image entropy term of J (sharp labels per image); = "
        "--entropy-weight: the mutual information",
    )
    consistency_weight: float = setting(
        0.0, help="nu of the view-consistency term of J: the mutual information of two augmented views' labels (IIC)"
    )
    consistency_colour: float = setting(0.0, help="strength s in [0, 1) of a colour distortion of the second view")
    consistency_flip: bool = setting(
        True, flag="--consistency-no-flip", help="no mirror images among the second views (for digits)"
    )
    consistency_rotation: float = setting(0.0, help="rotate the second view by up to this many degrees")
    centre_by_class: bool = setting(
        False,
        flag="--centre-meta-gradient",
        help="remove from the look-ahead's push on the labels its mean over the batch's "
        "images of each primary class: the look-ahead decides which images take "
        "which auxiliary class, the entropy term how often each is taken",
    )
    neumann_terms: int = setting(3, help="K Neumann terms of the inverse Hessian (--meta-order implicit)")

    def __post_init__(self):
        check_field_types(self, "train.meta")
        if self.order not in ORDERS:
            raise ValueError(f"unknown meta order {self.order!r}; expected one of {ORDERS}")
        if self.engine not in engine_names("second"):
            raise ValueError(f"unknown meta engine {self.engine!r}; expected one of {engine_names('second')}")
        if self.image_entropy_weight < 0 or self.consistency_weight < 0:
            raise ValueError(
                f"image_entropy_weight and consistency_weight must be >= 0, got "
                f"{self.image_entropy_weight}, {self.consistency_weight}"
            )
        if not 0 <= self.consistency_colour < 1:
            raise ValueError(f"consistency_colour must be in [0, 1), got {self.consistency_colour}")
        if not 0 <= self.consistency_rotation <= 180:
            raise ValueError(f"consistency_rotation must be in [0, 180] degrees, got {self.consistency_rotation}")
        if self.inner_lr is not None and self.inner_lr <= 0:
            raise ValueError(f"inner_lr (look-ahead step α) must be > 0, got {self.inner_lr}")
        if self.entropy_weight < 0:
            raise ValueError(f"entropy_weight (λ) must be >= 0, got {self.entropy_weight}")
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
