"""The ``"first"`` engine (``order="first"``): DARTS's finite-difference approximation.

With d = ∇θ1⁺ L_pri(θ1⁺) (see :mod:`maxl.meta.engines.detached`) and ε = ε₀/‖d‖, the mixed
second-order term is replaced by a central difference of first derivatives,

    ∇θ2 J ≈ −α [∇θ2 L_aux(θ1 + εd) − ∇θ2 L_aux(θ1 − εd)] / (2ε) + λ ∇θ2 H

(Liu, Simonyan, Yang, "DARTS", ICLR 2019, Eq. 7–8, applied to MAXL's J of Liu, Davison, Johns,
NeurIPS 2019, Eq. 3–4). No double backward is needed, so it works with every op; the error is
O(ε²) in the third derivatives. Selected by ``MetaConfig(order="first")`` whatever the engine.
"""

from __future__ import annotations

import torch
from torch import Tensor

from maxl.meta.engines.detached import DetachedLookaheadEngine
from maxl.meta.registry import register_engine

__all__ = ["FirstOrderEngine"]


class FirstOrderEngine(DetachedLookaheadEngine):
    """First-order meta-gradient by a central finite difference along d, with ε = ε₀/‖d‖.

    References:
        Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search". ICLR 2019, Eq. 7–8.
    """

    name = "first"
    order = "first"

    def surrogate(self, call, theta, v, soft, loss_fn, config) -> Tensor:
        """DARTS's central difference: ∇θ2 of the returned scalar is
        −α [∇θ2 L_aux(θ1+εv) − ∇θ2 L_aux(θ1−εv)] / (2ε), ε = ε₀/‖v‖."""
        norm = torch.sqrt(sum((vi * vi).sum() for vi in v))
        eps = config.fd_epsilon / norm.clamp_min(1e-12)
        with torch.no_grad():  # the network's forward does not depend on θ2: no graph needed
            aux_plus = call([t + eps * vi for t, vi in zip(theta, v)])[1]
            aux_minus = call([t - eps * vi for t, vi in zip(theta, v)])[1]
        return -config.inner_lr / (2 * eps) * (loss_fn(aux_plus, soft) - loss_fn(aux_minus, soft))


FIRST = register_engine(FirstOrderEngine())
