"""The aggregators of torchjd as gradient weightings: Jacobian descent's methods on the shared parameters.

A :class:`~auxtasks.weighting.GradientWeighting` takes the gradient g_i = ∇_shared L_i of every
task and returns one update of the shared parameters; the heads keep their own gradients. The
multi-task literature's gradient methods are exactly torchjd's *aggregators*: functions of the
Jacobian J = [g_1; ...; g_T] (``[T, P]``) to one ``[P]`` vector. :class:`TorchJDWeighting` wraps
one, so that every method torchjd maintains is a ``--weighting`` here:

=================  =====================================================  ====================
name               method                                                 needs (extra ``mtl``)
=================  =====================================================  ====================
``upgrad``         UPGrad (Quinton, Rey 2024)                             quadprog, qpsolvers
``cagrad``         CAGrad (Liu et al., NeurIPS 2021)                      cvxpy, clarabel
``nash-mtl``       Nash-MTL (Navon et al., ICML 2022)                     cvxpy, ecos
``imtl-g``         IMTL-G (Liu et al., ICLR 2021)                         torchjd only
``aligned-mtl``    Aligned-MTL (Senushkin et al., CVPR 2023)              torchjd only
``graddrop``       GradDrop (Chen et al., NeurIPS 2020)                   torchjd only
``gradvac``        GradVac (Wang et al., ICLR 2021)                       torchjd only
``dualproj``       DualProj (Quinton, Rey 2024)                           quadprog, qpsolvers
``config``         ConFIG (Liu et al., ICLR 2025)                         torchjd only
``fairgrad``       FairGrad (Ban, Ji, ICML 2024)                          scipy
=================  =====================================================  ====================

Where the aggregator is a weighting of J's rows (all but GradDrop and ConFIG), the update is
Σ_i w_i g_i with w from torchjd, and ``weights()`` logs that w; otherwise the update is the
aggregator's output and the logged weights stay 1.

Stateful aggregators (Nash-MTL's warm start, GradVac's target similarities) keep their state in
the Python object only: a resumed run starts it afresh.

Every class here needs torchjd and the solvers of its method; without them, making one raises an
``ImportError`` with the ``pip install`` line (:data:`INSTALL`).

References:
    Quinton, Rey. "Jacobian Descent for Multi-Objective Optimization". arXiv:2406.16232, 2024
    (torchjd, https://github.com/TorchJD/torchjd).
"""

from __future__ import annotations

import warnings
from importlib.util import find_spec
from typing import Any

import torch
from torch import Tensor

from .base import GradientWeighting

__all__ = [
    "INSTALL",
    "require_mtl",
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
]

#: How to install what the torchjd-backed weightings need.
INSTALL = "pip install 'maxl[mtl]'"


def require_mtl(method: str, modules: tuple[str, ...] = ()) -> None:
    """Raise ImportError with :data:`INSTALL` unless torchjd and ``modules`` can be imported.

    Raises:
        ImportError: ``the weighting 'cagrad' needs ['torchjd', 'cvxpy'] ...: pip install 'maxl[mtl]'``.
    """
    missing = [m for m in ("torchjd", *modules) if find_spec(m) is None]
    if missing:
        raise ImportError(
            f"the weighting {method!r} needs {missing}, which the optional extra 'mtl' installs: {INSTALL}"
        )


class TorchJDWeighting(GradientWeighting):
    """A torchjd aggregator as the combination of the per-task gradients of the shared parameters.

    Subclasses set ``NAME`` (the ``--weighting`` name), ``NEEDS`` (modules beyond torchjd),
    ``OPTIONS`` (``{name: (type, help)}``, see :mod:`auxtasks.weighting.options`) and implement
    :meth:`make_aggregator`. The aggregator is made when the weighting is bound (the number of
    tasks is known then) and once at construction, so that a bad hyperparameter is refused early.

    Attributes:
        options: the hyperparameters, as given to the constructor.
        aggregator: the torchjd aggregator (None before :meth:`bind`).
        last_weights: w of the last update, float ``[T]`` (None before the first, or for an
            aggregator that does not weight J's rows).

    Raises:
        ImportError: torchjd or a solver of the method is missing (the message has the pip line).
        ValueError: a hyperparameter torchjd refuses.
    """

    NAME = ""
    NEEDS: tuple[str, ...] = ()

    def __init__(self, **options: Any):
        super().__init__()
        require_mtl(self.NAME, self.NEEDS)
        self.options = dict(options)
        self.make_aggregator(2)  # refuses bad hyperparameters now rather than at the first step
        # kept out of the module tree: torchjd's state (numpy arrays, buffers registered as None)
        # is not a state_dict's, and a resumed run starts it afresh (see the module docstring)
        self.__dict__["aggregator"] = None
        self.__dict__["last_weights"] = None

    def make_aggregator(self, n_tasks: int) -> Any:
        """The torchjd aggregator for ``n_tasks`` tasks, from :attr:`options`."""
        raise NotImplementedError

    def _build(self) -> None:
        self.__dict__["aggregator"] = self.make_aggregator(len(self.task_names))

    def combine_gradients(self, grads: dict[str, Tensor], losses) -> Tensor:
        from torchjd.aggregation import WeightedAggregator

        jacobian = torch.stack([grads[n] for n in self.task_names])  # J: [T, P]
        aggregator = self.__dict__["aggregator"]
        with warnings.catch_warnings():  # cvxpy's note that Nash-MTL's problem is not DPP: a speed note only
            warnings.filterwarnings("ignore", message=".*not DPP.*")
            if isinstance(aggregator, WeightedAggregator):
                w = aggregator.weighting(jacobian).to(jacobian)  # [T]
                self.__dict__["last_weights"] = w.detach().clone()
                return w @ jacobian  # Σ_i w_i g_i: [P]
            return aggregator(jacobian)

    def weights(self) -> dict[str, float]:
        w = self.__dict__["last_weights"]
        if w is None:
            return super().weights()
        return {n: float(v) for n, v in zip(self.task_names, w)}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


def _projector(options: dict[str, Any]):
    from torchjd.linalg import QuadprogProjector

    return QuadprogProjector(norm_eps=options["norm_eps"], reg_eps=options["reg_eps"])


_PROJECTOR_OPTIONS = {
    "norm_eps": (float, "the dual-cone projection's guard against division by zero"),
    "reg_eps": (float, "added to the Gramian's diagonal so that the projection's QP is positive definite"),
}


class UPGrad(TorchJDWeighting):
    """UPGrad: project every g_i onto the dual cone of all the g_j and average the projections.

    The update has a non-negative inner product with every task's gradient (it conflicts with
    none), and equals the mean where no two gradients conflict.

    Args:
        norm_eps, reg_eps: of torchjd's quadprog dual-cone projector.

    References:
        Quinton, Rey. "Jacobian Descent for Multi-Objective Optimization". arXiv:2406.16232, 2024,
        Sec. 3.
    """

    NAME = "upgrad"
    NEEDS = ("numpy", "qpsolvers", "quadprog")
    OPTIONS = dict(_PROJECTOR_OPTIONS)

    def __init__(self, norm_eps: float = 1e-4, reg_eps: float = 1e-4):
        super().__init__(norm_eps=norm_eps, reg_eps=reg_eps)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import UPGrad as Aggregator

        return Aggregator(projector=_projector(self.options))


class DualProj(TorchJDWeighting):
    """DualProj: the mean gradient projected onto the dual cone of the g_i (the closest vector
    to the mean that conflicts with no task).

    Args:
        norm_eps, reg_eps: of torchjd's quadprog dual-cone projector.

    References:
        Quinton, Rey. "Jacobian Descent for Multi-Objective Optimization". arXiv:2406.16232, 2024
        (after Lopez-Paz, Ranzato, "Gradient Episodic Memory", NeurIPS 2017).
    """

    NAME = "dualproj"
    NEEDS = ("numpy", "qpsolvers", "quadprog")
    OPTIONS = dict(_PROJECTOR_OPTIONS)

    def __init__(self, norm_eps: float = 1e-4, reg_eps: float = 1e-4):
        super().__init__(norm_eps=norm_eps, reg_eps=reg_eps)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import DualProj as Aggregator

        return Aggregator(projector=_projector(self.options))


class CAGrad(TorchJDWeighting):
    """CAGrad: the update d maximising the worst task's improvement min_i g_i·d within a ball of
    radius c‖g_0‖ around the mean gradient g_0; c = 0 gives the mean, large c MGDA.

    Args:
        c: the ball's radius relative to ‖g_0‖ (c ≥ 0).
        norm_eps: torchjd's guard against division by zero.

    References:
        Liu, Liu, Jin, Stone, Liu. "Conflict-Averse Gradient Descent for Multi-task Learning".
        NeurIPS 2021, Eq. 4 and Algorithm 1.
    """

    NAME = "cagrad"
    NEEDS = ("numpy", "cvxpy", "clarabel")
    OPTIONS = {
        "c": (float, "radius of the ball around the mean gradient, relative to its norm"),
        "norm_eps": (float, "guard against division by zero"),
    }

    def __init__(self, c: float = 0.4, norm_eps: float = 1e-4):
        super().__init__(c=c, norm_eps=norm_eps)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import CAGrad as Aggregator

        return Aggregator(c=self.options["c"], norm_eps=self.options["norm_eps"])


class NashMTL(TorchJDWeighting):
    """Nash-MTL: the weights α > 0 of the Nash bargaining solution, G Gᵀ α = 1/α (element-wise),
    solved by the paper's sequence of convex problems; the update Σ_i α_i g_i is scaled down to
    norm ``max_norm`` if longer.

    Args:
        max_norm: the update's largest norm (0: no clipping).
        update_weights_every: solve every this many steps, reusing α in between.
        optim_niter: the most convex-concave iterations per solve.

    References:
        Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya. "Multi-Task Learning as a
        Bargaining Game". ICML 2022, Sec. 3, Algorithm 1.
    """

    NAME = "nash-mtl"
    NEEDS = ("numpy", "cvxpy", "ecos")
    OPTIONS = {
        "max_norm": (float, "largest norm of the update (0: no clipping)"),
        "update_weights_every": (int, "solve for the weights every this many steps"),
        "optim_niter": (int, "most iterations of the sequence of convex problems per solve"),
    }

    def __init__(self, max_norm: float = 1.0, update_weights_every: int = 1, optim_niter: int = 20):
        super().__init__(max_norm=max_norm, update_weights_every=update_weights_every, optim_niter=optim_niter)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import NashMTL as Aggregator

        return Aggregator(n_tasks=n_tasks, **self.options)


class IMTLG(TorchJDWeighting):
    """IMTL-G: the weights that make the update's projection onto every unit task gradient
    u_i = g_i/‖g_i‖ equal (d·u_i the same for all i), summing to 1.

    References:
        Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang. "Towards Impartial Multi-task Learning".
        ICLR 2021, Sec. 3 (IMTL-G).
    """

    NAME = "imtl-g"

    def __init__(self):
        super().__init__()

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import IMTLG as Aggregator

        return Aggregator()


class AlignedMTL(TorchJDWeighting):
    """Aligned-MTL: make the gradients' matrix well conditioned (its singular values equal, set to
    the smallest / median / root-mean-square one) and take the mean of the aligned gradients.

    Args:
        scale_mode: ``"min"`` (the paper), ``"median"`` or ``"rmse"``.

    References:
        Senushkin, Patakin, Kuznetsov, Konushin. "Independent Component Alignment for
        Multi-Task Learning". CVPR 2023, Sec. 3.
    """

    NAME = "aligned-mtl"
    OPTIONS = {"scale_mode": (str, "singular value the others are set to: min, median or rmse")}

    def __init__(self, scale_mode: str = "min"):
        if scale_mode not in ("min", "median", "rmse"):
            raise ValueError(f"Aligned-MTL scale_mode must be min, median or rmse, got {scale_mode!r}")
        super().__init__(scale_mode=scale_mode)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import AlignedMTL as Aggregator

        return Aggregator(scale_mode=self.options["scale_mode"])


class GradDrop(TorchJDWeighting):
    """GradDrop: per coordinate, keep only the positive or only the negative task gradients, at
    random with the probability of the sign's purity P = ½(1 + Σ_i g_i / Σ_i |g_i|).

    torchjd applies it to the parameters' gradients; the paper to the gradients of the shared
    representation (the update is otherwise the same rule).

    Args:
        leak: fraction of every task's gradient kept whatever the sign (0 in the paper).

    References:
        Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov. "Just Pick a Sign: Optimizing
        Deep Multitask Models with Gradient Sign Dropout". NeurIPS 2020, Algorithm 1.
    """

    NAME = "graddrop"
    OPTIONS = {"leak": (float, "fraction of every task's gradient kept whatever its sign")}

    def __init__(self, leak: float = 0.0):
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"GradDrop leak must be in [0, 1], got {leak}")
        super().__init__(leak=leak)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import GradDrop as Aggregator

        leak = self.options["leak"]
        return Aggregator(leak=torch.full((n_tasks,), leak) if leak else None)


class GradVac(TorchJDWeighting):
    """GradVac: where two gradients' cosine similarity falls below a moving target φ̂_ij (an
    exponential average of past similarities), add enough of g_j to g_i to reach it.

    Args:
        beta: the target's moving-average rate in [0, 1] (torchjd's default 0.5).
        eps: guard against division by zero.

    References:
        Wang, Tsvetkov, Firat, Cao. "Gradient Vaccine: Investigating and Improving Multi-task
        Optimization in Massively Multilingual Models". ICLR 2021, Sec. 3.
    """

    NAME = "gradvac"
    OPTIONS = {
        "beta": (float, "moving-average rate of the target similarities"),
        "eps": (float, "guard against division by zero"),
    }

    def __init__(self, beta: float = 0.5, eps: float = 1e-8):
        super().__init__(beta=beta, eps=eps)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import GradVac as Aggregator

        return Aggregator(beta=self.options["beta"], eps=self.options["eps"])


class ConFIG(TorchJDWeighting):
    """ConFIG: the direction with equal positive cosine to every task gradient (the
    pseudo-inverse of the unit gradients applied to ones), scaled by the sum of the gradients'
    projections onto it.

    References:
        Liu, Chen, Thuerey. "ConFIG: Towards Conflict-free Training of Physics Informed Neural
        Networks". ICLR 2025, Sec. 3.
    """

    NAME = "config"

    def __init__(self):
        super().__init__()

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import ConFIG as Aggregator

        return Aggregator()


class FairGrad(TorchJDWeighting):
    """FairGrad: the weights w > 0 with (G Gᵀ w)_i = w_i^(−1/α), α-fair utility maximisation
    (α = 1: proportional fairness, Nash-MTL's condition; α → ∞: max-min fairness).

    Args:
        alpha: the fairness parameter α > 0.
        max_iters: most iterations of scipy's least-squares solver (None: scipy's default).

    References:
        Ban, Ji. "Fair Resource Allocation in Multi-Task Learning". ICML 2024, Sec. 3.
    """

    NAME = "fairgrad"
    NEEDS = ("numpy", "scipy")
    OPTIONS = {
        "alpha": (float, "the fairness parameter (1: proportional fairness)"),
        "max_iters": (int, "most iterations of the least-squares solver"),
    }

    def __init__(self, alpha: float = 1.0, max_iters: int | None = None):
        super().__init__(alpha=alpha, max_iters=max_iters)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import FairGrad as Aggregator

        return Aggregator(alpha=self.options["alpha"], max_iters=self.options["max_iters"])
