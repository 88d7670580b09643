"""MAXL's two networks: the multi-task network f(θ1) and the label-generation network g(θ2).

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933, Sec. 3 and Fig. 2.
    Jang, Gu, Poole. "Categorical Reparameterization with Gumbel-Softmax". ICLR 2017,
    arXiv:1611.01144, Sec. 2–3 (the generator's hard labels, ``gumbel_tau``).
    Maddison, Mnih, Teh. "The Concrete Distribution". ICLR 2017, arXiv:1611.00712.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from maxl.core.heads import mlp_head
from maxl.core.hierarchy import Hierarchy

__all__ = ["MultiTaskNetwork", "LabelGenerator", "FeatureLabelGenerator"]


def _feature_dim(backbone: nn.Module, feature_dim: int | None) -> int:
    dim = feature_dim if feature_dim is not None else getattr(backbone, "out_features", None)
    if dim is None:
        raise ValueError(
            f"cannot tell the feature size of backbone {type(backbone).__name__}: give it an "
            "`out_features` attribute or pass feature_dim="
        )
    return int(dim)


def _out_features(head: nn.Module) -> int | None:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


class MultiTaskNetwork(nn.Module):
    """Shared backbone with a primary head and an optional auxiliary head.

    Args:
        backbone: module mapping images ``[B, C, H, W]`` to features ``[B, F]``.
        num_primary: number of primary classes, ``len(ψ)``.
        num_aux: number of auxiliary classes, ``sum(ψ)``; 0 builds a single-task network
            (no auxiliary head).
        hidden: width of the heads' hidden layer.
        feature_dim: ``F``, if the backbone has no ``out_features`` attribute.

    Shapes:
        ``forward``: images ``[B, C, H, W]`` → ``(primary_logits [B, P], aux_logits [B, K])``,
        ``aux_logits`` is None without an auxiliary head.
    """

    def __init__(
        self, backbone: nn.Module, num_primary: int, num_aux: int = 0, hidden: int = 512, feature_dim: int | None = None
    ):
        super().__init__()
        dim = _feature_dim(backbone, feature_dim)
        self.backbone = backbone
        self.primary_head: nn.Module = mlp_head(dim, num_primary, hidden)
        self.aux_head: nn.Module | None = mlp_head(dim, num_aux, hidden) if num_aux > 0 else None
        # None: from_modules found no Linear layer in the head
        self.num_primary: int | None = num_primary
        self.num_aux: int | None = num_aux

    @classmethod
    def from_modules(
        cls, backbone: nn.Module, primary_head: nn.Module, aux_head: nn.Module | None = None
    ) -> MultiTaskNetwork:
        """A multi-task network over modules that exist already (shared, not copied): the
        view of a user's backbone and heads that the meta-gradient's look-ahead runs.

        ``num_primary`` / ``num_aux`` are read from the heads' last ``Linear`` layer where
        there is one, else None.
        """
        net = cls.__new__(cls)
        nn.Module.__init__(net)
        net.backbone, net.primary_head, net.aux_head = backbone, primary_head, aux_head
        net.num_primary, net.num_aux = _out_features(primary_head), _out_features(aux_head) if aux_head else 0
        return net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        features = self.backbone(x)  # [B, F]
        aux = self.aux_head(features) if self.aux_head is not None else None
        return self.primary_head(features), aux


class LabelGenerator(nn.Module):
    """The label-generation network: its own backbone and a head with ``sum(ψ)`` logits,
    turned into soft auxiliary labels by the hierarchy-masked softmax.

    Args:
        backbone: module mapping images ``[B, C, H, W]`` to features ``[B, F]``; must not
            share weights with the multi-task network.
        psi: the hierarchy ψ.
        hidden: width of the head's hidden layer.
        feature_dim: ``F``, if the backbone has no ``out_features`` attribute.
        weight_range: r ≥ 0. With r > 0 the head has one more output z, and each image's
            auxiliary loss is scaled by s = 2^(2r·σ(z) − r) ∈ [2^−r, 2^r], learnt by the same
            meta-gradient as the labels (WAMAL: "Weight-Aware Meta Auxiliary Learning", per-image
            weights w = σ(z) ∈ (0, 1) of the auxiliary loss). 0: MAXL, every image weighs 1.
        gumbel_tau: τ ≥ 0. With τ > 0, in training mode, the auxiliary head learns from hard
            labels: one sample per image of its label distribution by the Gumbel-max trick,
            passed straight through a Gumbel-softmax of temperature τ (:meth:`labels_and_targets`;
            Jang, Gu, Poole, ICLR 2017, Eq. 1–2 and Sec. 2.2). 0: the paper's soft labels. The
            attribute may be changed between steps (a temperature schedule).

    Shapes:
        ``forward(x, primary)``: images ``[B, C, H, W]``, int64 labels ``[B]`` →
        soft labels float ``[B, sum(ψ)]``, rows summing to 1, zero outside the block of the
        sample's primary class (Liu et al. 2019, Sec. 3.2). Never sampled, in either mode.
        ``labels_and_scales(x, primary)``: ``(soft [B, sum(ψ)], s [B])``.
        ``labels_and_targets(x, primary)``: ``(soft [B, sum(ψ)], target [B, sum(ψ)])``.

    Raises:
        ValueError: ``weight_range`` < 0 or ``gumbel_tau`` < 0.
    """

    def __init__(
        self,
        backbone: nn.Module,
        psi: Hierarchy | Sequence[int],
        hidden: int = 512,
        feature_dim: int | None = None,
        weight_range: float = 0.0,
        gumbel_tau: float = 0.0,
    ):
        super().__init__()
        self.backbone = backbone
        self._make_head(psi, _feature_dim(backbone, feature_dim), hidden, weight_range, gumbel_tau)

    def _make_head(self, psi, feature_dim: int, hidden: int, weight_range: float, gumbel_tau: float) -> None:
        if weight_range < 0:
            raise ValueError(f"weight_range must be >= 0 (0: no per-image weights), got {weight_range}")
        if gumbel_tau < 0:
            raise ValueError(f"gumbel_tau must be >= 0 (0: soft labels), got {gumbel_tau}")
        self.hierarchy = psi if isinstance(psi, Hierarchy) else Hierarchy(psi)
        self.weight_range = float(weight_range)
        self.gumbel_tau = float(gumbel_tau)
        self.head = mlp_head(feature_dim, self.hierarchy.num_aux + (1 if weight_range else 0), hidden)

    def logits(self, x: Tensor) -> Tensor:
        """Unmasked logits ``[B, sum(ψ)]`` (``[B, sum(ψ) + 1]`` with a weight range: the last
        column is the weight's logit z)."""
        return self.head(self.backbone(x))

    def _scales(self, logits: Tensor) -> Tensor:
        """Each image's auxiliary-loss scale s = 2^(2r·σ(z) − r) float ``[B]`` from the head's
        logits ``[B, sum(ψ) + 1]`` (z: the last column); needs a weight range."""
        r = self.weight_range
        return torch.exp2(2 * r * torch.sigmoid(logits[:, self.hierarchy.num_aux]) - r)

    def labels_and_scales(self, x: Tensor, primary: Tensor) -> tuple[Tensor, Tensor]:
        """Soft labels float ``[B, sum(ψ)]`` and each image's auxiliary-loss scale float ``[B]``,
        s = 2^(2r·σ(z) − r) (all ones without a weight range)."""
        logits = self.logits(x)
        soft = self.hierarchy.masked_softmax(logits[:, : self.hierarchy.num_aux], primary)
        return soft, (self._scales(logits) if self.weight_range else torch.ones_like(soft[:, 0]))

    def labels_and_targets(self, x: Tensor, primary: Tensor) -> tuple[Tensor, Tensor]:
        """The soft labels and what the auxiliary head learns from, both functions of θ2.

        ``soft`` = masked softmax(z), the label distribution (J's entropy terms and the
        statistics use it). ``target``: ``soft``; with τ = ``gumbel_tau`` > 0 in training mode
        a hard sample of it passed straight through (Jang, Gu, Poole, ICLR 2017, Sec. 2–3):

            h = one_hot(argmax_{c ∈ block} (z_c + G_c)),   G_c = −log E_c, E_c ~ Exp(1)  (Gumbel(0, 1))
            r = masked softmax((z + G) / τ)
            target = h + (r − r.detach())

        so its value is exactly h, a draw from ``soft`` (the Gumbel-max trick, Eq. 1), and its
        gradient that of the relaxed sample r (Eq. 2). The noise ``[B, sum(ψ)]`` comes from
        torch's global generator (``torch.empty_like(z).exponential_()``, the draw of
        ``torch.nn.functional.gumbel_softmax``); classes outside the block never win. With per-image
        weights (``weight_range`` > 0) ``target`` is further scaled by s ``[B]`` (WAMAL).

        Returns:
            ``(soft float [B, sum(ψ)], target float [B, sum(ψ)])``; ``target`` is ``soft`` itself
            without weights and without sampling.
        """
        logits = self.logits(x)
        k = self.hierarchy.num_aux
        z = logits[:, :k]
        soft = self.hierarchy.masked_softmax(z, primary)  # [B, K], the distribution
        target = soft
        if self.gumbel_tau and self.training:
            perturbed = z - torch.empty_like(z).exponential_().log()  # z + G, G ~ Gumbel(0, 1)
            relaxed = self.hierarchy.masked_softmax(perturbed / self.gumbel_tau, primary)  # r [B, K]
            inside = self.hierarchy.block_mask(primary)
            winner = perturbed.masked_fill(~inside, float("-inf")).argmax(1)  # [B], the Gumbel-max sample
            hard = torch.nn.functional.one_hot(winner, k).to(z.dtype)
            target = hard + (relaxed - relaxed.detach())  # exactly h (r − r = 0), gradient ∂r: straight through
        if self.weight_range:
            target = target * self._scales(logits)[:, None]  # s = 2^(2r·σ(z) − r), [B]
        return soft, target

    def forward(self, x: Tensor, primary: Tensor) -> Tensor:
        # the label columns only: with a weight range the last logit is the weight's
        return self.hierarchy.masked_softmax(self.logits(x)[:, : self.hierarchy.num_aux], primary)


class FeatureLabelGenerator(LabelGenerator):
    """A label-generation network that reads the multi-task network's features: a head on the
    shared backbone's output, detached, then the hierarchy-masked softmax.

    θ2 is the head alone; the backbone is the multi-task network's (θ1), held by reference and
    not registered as a submodule, so it is neither trained nor checkpointed here. Its features
    are computed without a graph and with copies of its BatchNorm buffers (in the backbone's
    current mode), so the generator never moves θ1 or its running statistics. The generated
    splits then follow what the multi-task network has learnt, and a generator step costs one
    backbone forward instead of a second backbone's forward and backward (issue 13's remedy
    "a generator that reads the multi-task network's features").

    In the backbone's training mode its BatchNorm layers normalise by the batch's statistics, so
    an image's label then depends a little on the other images of its batch. With
    ``running_statistics`` the features are always computed with the running statistics (the
    backbone in eval mode for this forward): each image's label is a function of the image alone.

    Args:
        backbone: the multi-task network's backbone, images ``[B, C, H, W]`` → ``[B, F]``.
        psi, hidden, feature_dim, weight_range, gumbel_tau: as in :class:`LabelGenerator`.
        running_statistics: compute the features in the backbone's eval mode (False: in its
            current mode, the batch's statistics during training).
    """

    shared_backbone: nn.Module  # set with object.__setattr__: not a submodule

    def __init__(
        self,
        backbone: nn.Module,
        psi: Hierarchy | Sequence[int],
        hidden: int = 512,
        feature_dim: int | None = None,
        weight_range: float = 0.0,
        gumbel_tau: float = 0.0,
        running_statistics: bool = False,
    ):
        nn.Module.__init__(self)
        object.__setattr__(self, "shared_backbone", backbone)  # by reference: its parameters are θ1
        self.running_statistics = running_statistics
        self._make_head(psi, _feature_dim(backbone, feature_dim), hidden, weight_range, gumbel_tau)

    def logits(self, x: Tensor) -> Tensor:
        shared = self.shared_backbone
        params = {n: p.detach() for n, p in shared.named_parameters()}
        buffers = {n: b.clone() for n, b in shared.named_buffers()}  # running statistics stay untouched
        mode = shared.training
        if self.running_statistics:
            shared.train(False)
        try:
            with torch.no_grad():
                features = functional_call(shared, (params, buffers), (x,))  # [B, F], no graph to θ1
        finally:
            shared.train(mode)
        return self.head(features)

    def extra_repr(self) -> str:
        return f"running_statistics={self.running_statistics}"
