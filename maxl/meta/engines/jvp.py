"""The ``"jvp"`` engine: the exact meta-gradient without double backward, by forward-mode AD.

With v = ∇θ1⁺ L_pri(θ1⁺) (a plain backward at the look-ahead point, see
:mod:`maxl.meta.engines.detached`) the mixed term of ∇θ2 J is

    ∂/∂θ2 ⟨∇θ1 L_aux(θ1, g(θ2)), v⟩ = ∂/∂θ2 ⟨∇z L_aux(z, g(θ2)), J_aux v⟩,

where z = f_aux(x; θ1) are the auxiliary logits and J_aux v their Jacobian-vector product along
v, one forward-mode pass (``torch.autograd.forward_ad``). Exact like ``"func"`` (Liu, Davison,
Johns, NeurIPS 2019, arXiv:1901.08933, Eq. 4), with fewer FLOPs and less memory: the
create_graph backward keeps every activation of the inner step alive, and PyTorch's double
backward of a convolution runs two convolutions where one would do. Needs forward-mode AD
formulas for every op of the network (all of torch.nn's usual layers have them); an op without
one raises autograd's RuntimeError (use ``"func"`` then).
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from maxl.meta.engines.detached import DetachedLookaheadEngine
from maxl.meta.registry import register_engine

__all__ = ["JvpEngine"]


class JvpEngine(DetachedLookaheadEngine):
    """Exact second-order meta-gradient from one Jacobian-vector product of the auxiliary logits.

    References:
        Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
        NeurIPS 2019, arXiv:1901.08933, Eq. 4.
    """

    name = "jvp"
    order = "second"

    def surrogate(self, call, theta, v, soft, loss_fn, config) -> Tensor:
        """Exact: ∇θ2 of the returned scalar is −α ∂/∂θ2 ⟨∇z L_aux(z, g(θ2)), J_aux v⟩, the
        look-ahead's contribution to ∇θ2 L_pri(θ1⁺) (θ1⁺ depends on θ2 only through L_aux)."""
        with fwAD.dual_level(), torch.no_grad():
            aux = call([fwAD.make_dual(t, vi) for t, vi in zip(theta, v)])[1]
            z, u = fwAD.unpack_dual(aux)  # z = f_aux(x; θ1) [B, K], u = J_aux v [B, K]
        if u is None:  # v never reaches the auxiliary logits (e.g. nothing shared)
            u = torch.zeros_like(z)
        z = z.detach().requires_grad_()
        with torch.enable_grad():
            (grad_z,) = torch.autograd.grad(loss_fn(z, soft), z, create_graph=True)  # a function of θ2
        return -config.inner_lr * (grad_z * u).sum()


JVP = register_engine(JvpEngine())
