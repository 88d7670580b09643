"""MTL-NAS: one tower per task, and searched fusion edges from the other towers' layers.

Tower t computes its blocks as its own backbone does; after block i its output r_t^i is fused with
gated features of the other towers' layers j ≤ i (within a depth limit D: i − D ≤ j ≤ i), NDDR-style:

    h_t^i = ReLU(BN(W_t^i * [r_t^i, g_e · P(h_s^j) for the edges e = (s, j) into (t, i)]))

with P the average pool of h_s^j to r_t^i's resolution (h_s^i: tower s's raw output r_s^i at the
same layer, the fused one below it), W_t^i a 1×1 convolution initialised NDDR-style to
[(1 − β) I, β/m I, …, β/m I] over the own feature and the m sources (I of a source of another
width: the rectangular identity on the first min(C_i, C_j) channels), and one gate logit α_e per edge.
β = ``source_init`` defaults to 0.1 (MTL-NAS's and NDDR-CNN's 0.9 / 0.1): with β = 0 every source's
weights start at 0, which leaves each gate logit without gradient at initialisation (∂L/∂g_e flows
only through the source's weights), and the gates stay near σ(0) = 0.5 until those weights grow
(the minimum-entropy term is stationary at 0.5 too). With β = 0 the towers are independent at
initialisation (the ReLU of a ReLU feature being itself, and BatchNorm at its initial statistics);
with β > 0 each fused feature starts as (1 − β) of the own feature plus β of the gated sources':
BatchNorm in training normalises the scale away, so the own path dominates but is not alone.

* in training, g_e a RelaxedBernoulli sample at temperature τ_e = τ₀ · γ^epoch, decayed towards 0
  (:meth:`MTLNAS.begin_epoch`); in evaluation g_e = σ(α_e);
* the multi-task loss gains the minimum-entropy regulariser λ Σ_e H(σ(α_e)),
  H(p) = −p log p − (1 − p) log(1 − p), which pushes every gate to 0 or 1;
* the final architecture keeps the edges with α_e > 0 (:func:`derive_edges`), trained from
  scratch with those gates fixed at 1 (``edges``). It holds exactly the parameters its forward
  uses: no gate logits, and no fusion weights on the edges left out, so that its parameter count is
  the derived network's, and MAXL's look-ahead, which differentiates every trainable parameter,
  finds each of them in the graph (issue 25).

The edge count of the search space for T towers of L blocks: T (T − 1) Σ_{i=0}^{L−1} (min(i, D) + 1)
(T (T − 1) L (L + 1) / 2 without a limit).

Training alternates, as the paper does, architecture updates and weight updates on two disjoint,
class-stratified halves of the training images (``model.mtlnas_arch_split``,
:func:`maxl.train.build.hold_out_for_architecture`): the weight updates (one pass over half A, the
trainer's epoch) with the RelaxedBernoulli samples and the gate logits not trainable; then the
architecture updates (:meth:`MTLNAS.arch_step`, one pass over half B) of the gate logits alone with
sigmoid gates g_e = σ(α_e), the minimum-entropy term, and an optimiser of their own (Adam, lr
``arch_lr``, reference 3·10⁻³, betas (0.5, 0.999), weight decay 10⁻³), the weights and BatchNorm
statistics untouched. What differs from the reference: it interleaves one architecture step and
one weight step, and reshuffles the halves every pass; here a pass of each, on fixed halves.
``alternate=False`` keeps the joint scheme (the gate logits take the multi-task optimiser's steps
on the same batches as the weights, with the samples). MAXL's meta-gradient: exact for fixed
edges; in the search, the gradient at the drawn RelaxedBernoulli noise (the reparameterised sample,
the noise held fixed), the gate logits constants of the weight updates under the alternation.

References:
    Gao, Bai, Jie, Ma, Jia, Liu. "MTL-NAS: Task-Agnostic Neural Architecture Search towards
    General-Purpose Multi-Task Learning". CVPR 2020, Sec. 3.
    Gao, Ma, Zhao, Liu, Yuille. "NDDR-CNN". CVPR 2019 (the fusion operation).
    Maddison, Mnih, Teh. "The Concrete Distribution". ICLR 2017 (RelaxedBernoulli).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maxl.nn.architectures.base import BackboneFactory, TaskTrunk, branched_network
from maxl.nn.architectures.cross_stitch import blocks_view, per_task_backbones

if TYPE_CHECKING:  # for the annotations only
    from maxl.nn.networks import MultiTaskNetwork

__all__ = ["MTLNAS", "mtl_nas", "search_space", "gate_entropy", "derive_edges", "edges_text", "parse_edges"]

Edge = tuple[int, int, int, int]
"""``(t, i, s, j)``: from layer j of tower s into layer i of tower t."""


def search_space(num_tasks: int, num_blocks: int, depth: int | None = None) -> list[Edge]:
    """The candidate edges, in a fixed order: for each target (t, i), the sources (s ≠ t, j) with
    max(0, i − D) ≤ j ≤ i (every j ≤ i when ``depth`` is None)."""
    edges = []
    for t in range(num_tasks):
        for i in range(num_blocks):
            lowest = 0 if depth is None else max(0, i - depth)
            edges += [(t, i, s, j) for s in range(num_tasks) if s != t for j in range(lowest, i + 1)]
    return edges


def gate_entropy(logits: Tensor) -> Tensor:
    """Σ_e H(σ(α_e)) with H(p) = −p log p − (1 − p) log(1 − p) (nats; a scalar)."""
    p = torch.sigmoid(logits)
    # log σ(α) = −softplus(−α), log(1 − σ(α)) = −softplus(α): finite for every α
    return (p * F.softplus(-logits) + (1 - p) * F.softplus(logits)).sum()


def parse_edges(text: str, num_edges: int) -> Tensor:
    """Kept edges from text: one 0/1 per edge of :func:`search_space`, comma-separated → ``[E]``.

    Raises:
        ValueError: not ``num_edges`` entries of 0 and 1.
    """
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ValueError(f"mtlnas_edges {text!r}: expected comma-separated 0/1") from None
    if len(values) != num_edges or any(v not in (0, 1) for v in values):
        raise ValueError(f"mtlnas_edges {text!r}: expected {num_edges} entries of 0 or 1 (the search space's edges)")
    return torch.tensor(values, dtype=torch.float32)


def _pool_to(h: Tensor, size: tuple[int, int]) -> Tensor:
    """Average-pool ``h`` ``[B, C, H, W]`` to ``size`` (an exact factor where there is one)."""
    if tuple(h.shape[-2:]) == size:
        return h
    fh, fw = h.shape[-2] // size[0], h.shape[-1] // size[1]
    if fh * size[0] == h.shape[-2] and fw * size[1] == h.shape[-1]:
        return F.avg_pool2d(h, (fh, fw))
    return F.adaptive_avg_pool2d(h, size)


class MTLNAS(TaskTrunk):
    """T towers with searched, gated NDDR-style fusion edges between them (module docstring).

    Args:
        make_backbone: returns a fresh backbone with the blocks view, once per task.
        num_tasks: T.
        depth: the depth limit D (None: every j ≤ i).
        tau, tau_decay: τ₀ > 0 and γ in (0, 1] of the RelaxedBernoulli temperature.
        entropy_weight: λ ≥ 0 of the minimum-entropy regulariser.
        batchnorm: BatchNorm in the fusion.
        source_init: β in [0, 1): the fusion's initial weight on the sources (shared among them),
            1 − β on the own feature (module docstring).
        alternate: the paper's alternation (module docstring): the gate logits are trained only
            inside :meth:`arch_step`, by :meth:`make_arch_optimizer`'s optimiser. False: jointly.
        arch_lr: the gate logits' Adam learning rate (> 0).
        edges: the kept edges (0/1 ``[E]`` or its text, :func:`parse_edges`): a fixed architecture,
            gates 1 on kept edges; the others are left out, and there are no gate logits.

    Parameters: T × the backbone's + Σ_{(t,i)} C_i (C_i + Σ_{e into (t,i)} C_j) + 2 C_i per target
    with BatchNorm, the sum over the edges e kept (all of them in the search); + E gate logits in
    the search only.

    Raises:
        ValueError: a backbone without a blocks view, bad settings.
    """

    def __init__(
        self,
        make_backbone: BackboneFactory,
        num_tasks: int,
        depth: int | None = None,
        tau: float = 1.0,
        tau_decay: float = 0.9,
        entropy_weight: float = 0.0,
        batchnorm: bool = True,
        edges: str | Tensor | None = None,
        source_init: float = 0.1,
        alternate: bool = True,
        arch_lr: float = 3e-3,
    ):
        backbones = per_task_backbones(make_backbone, num_tasks, "mtl-nas")
        first = blocks_view(backbones[0])
        if tau <= 0 or not 0 < tau_decay <= 1 or entropy_weight < 0 or (depth is not None and depth < 0):
            raise ValueError(
                "mtl-nas: tau must be > 0, tau_decay in (0, 1], the entropy weight >= 0 and depth >= 0, got "
                f"{tau}, {tau_decay}, {entropy_weight}, {depth}"
            )
        if not 0 <= source_init < 1:
            raise ValueError(f"mtl-nas: source_init must be in [0, 1), got {source_init}")
        if not arch_lr > 0:
            raise ValueError(f"mtl-nas: arch_lr must be > 0, got {arch_lr}")
        super().__init__(num_tasks, first.out_features)
        self.backbones = backbones
        widths = first.block_widths
        self.edges = search_space(num_tasks, len(widths), depth)
        if isinstance(edges, str):
            edges = parse_edges(edges, len(self.edges))
        if edges is not None and tuple(edges.shape) != (len(self.edges),):
            raise ValueError(f"mtl-nas: {tuple(edges.shape)} kept edges, expected ({len(self.edges)},)")
        self.register_buffer("kept", torch.ones(len(self.edges)) if edges is None else edges.float())
        self.fixed = edges is not None
        if not self.fixed:  # a derived architecture's gates are its kept edges: no logits (unused parameters)
            self.gate_logits = nn.Parameter(torch.zeros(len(self.edges)))  # α [E]
        else:  # weights saved before issue 25's fix hold the unused logits: they load, the entry ignored
            self.register_load_state_dict_pre_hook(_ignore_gate_logits)
        self.tau0, self.tau_decay, self.tau = float(tau), float(tau_decay), float(tau)
        self.entropy_weight = float(entropy_weight)
        self.into: dict[tuple[int, int], list[int]] = {}  # (t, i) -> indices of its edges
        for k, (t, i, _, _) in enumerate(self.edges):
            self.into.setdefault((t, i), []).append(k)
        self.fuse = nn.ModuleList()  # [T][L]
        for t in range(num_tasks):
            per_block = nn.ModuleList()
            for i, width in enumerate(widths):
                sources = [k for k in self.into.get((t, i), []) if self.kept_mask()[k] > 0]
                c_in = width + sum(widths[self.edges[k][3]] for k in sources)
                conv = nn.Conv2d(c_in, width, 1, bias=False)
                with torch.no_grad():  # [(1 − β) I, β/m I, …]: mostly the own feature, a share of each source
                    conv.weight.zero_()
                    conv.weight[:, :width, 0, 0] = (1 - source_init) * torch.eye(width)
                    start = width
                    for k in sources:
                        c = widths[self.edges[k][3]]
                        conv.weight[:, start : start + c, 0, 0] = source_init / len(sources) * torch.eye(width, c)
                        start += c
                layers = [conv, nn.BatchNorm2d(width)] if batchnorm else [conv]
                per_block.append(nn.Sequential(*layers, nn.ReLU()))
            self.fuse.append(per_block)
        self.gumbel_noise: Tensor | None = None  # fixed logistic noise ``[E]`` (tests); None: drawn each forward
        self.alternate, self.arch_lr, self.in_arch_step = bool(alternate) and not self.fixed, float(arch_lr), False
        if self.alternate:  # trained only inside arch_step, with their own optimiser
            self.gate_logits.requires_grad_(False)

    # ------------------------------------------------------------------ alternation
    def arch_parameters(self) -> list[nn.Parameter]:
        """The parameters of the architecture updates (the gate logits) under the alternation; []
        otherwise."""
        return [self.gate_logits] if self.alternate else []

    @property
    def arch_step_active(self) -> bool:
        """Every epoch of the search ends with architecture updates (under the alternation)."""
        return self.alternate

    def make_arch_optimizer(self) -> torch.optim.Optimizer:
        """The gate logits' own optimiser: Adam, lr ``arch_lr``, betas (0.5, 0.999), weight decay
        10⁻³ (the reference code's).

        Raises:
            ValueError: a fixed architecture (it has no gate logits).
        """
        self._require_search("make_arch_optimizer()")
        return torch.optim.Adam([self.gate_logits], lr=self.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)

    @contextlib.contextmanager
    def arch_step(self) -> Iterator[None]:
        """Inside, the gate logits are trainable, the gates are σ(α) (no sample) and the
        minimum-entropy term is part of :meth:`penalty` (an architecture update).

        Raises:
            ValueError: a fixed architecture (it has no gate logits).
        """
        self._require_search("arch_step()")
        self.in_arch_step = True
        self.gate_logits.requires_grad_(True)
        try:
            yield
        finally:
            self.in_arch_step = False
            self.gate_logits.requires_grad_(not self.alternate)

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        """τ = τ₀ · γ^epoch; returns what the epoch's record logs."""
        if self.fixed:
            return {"mtlnas_edges": float(self.kept_mask().sum())}
        self.tau = self.tau0 * self.tau_decay**epoch
        p = torch.sigmoid(self.gate_logits.detach())
        return {"mtlnas_tau": self.tau, "mtlnas_gate_mean": float(p.mean()), "mtlnas_edges_on": float((p > 0.5).sum())}

    def _require_search(self, what: str) -> None:
        if self.fixed:
            raise ValueError(
                f"mtl-nas: {what} needs the edge search; a fixed architecture (edges given) has no gate logits"
            )

    def kept_mask(self) -> Tensor:
        """The kept edges ``[E]`` (all ones during the search)."""
        return cast(Tensor, self.kept)  # cast: a buffer, which nn.Module's __getattr__ types loosely

    def gates(self) -> Tensor:
        """g ``[E]``: 1 on kept edges of a fixed architecture; in the search a RelaxedBernoulli sample
        at τ in training, σ(α) in evaluation and in an architecture update."""
        if self.fixed:
            return self.kept_mask()
        if not self.training or self.in_arch_step:
            return torch.sigmoid(self.gate_logits)
        noise = self.gumbel_noise
        if noise is None:  # logistic noise: log U − log(1 − U)
            u = torch.rand_like(self.gate_logits).clamp(1e-6, 1 - 1e-6)
            noise = u.log() - (-u).log1p()
        return torch.sigmoid((self.gate_logits + noise) / self.tau)

    def task_features(self, x: Tensor) -> list[Tensor]:
        nets = [blocks_view(net) for net in self.backbones]
        nets[0].check_input(x)
        g = self.gates()
        hs = [x] * self.num_tasks
        fused: list[list[Tensor]] = [[] for _ in range(self.num_tasks)]  # h_t^j of the layers below
        for i in range(nets[0].num_blocks):
            raw = [net.block(i, h) for net, h in zip(nets, hs)]  # r_t^i
            for t in range(self.num_tasks):
                parts = [raw[t]]
                size = (raw[t].shape[-2], raw[t].shape[-1])
                for k in self.into.get((t, i), []):
                    if self.fixed and self.kept_mask()[k] == 0:
                        continue
                    _, _, s, j = self.edges[k]
                    source = raw[s] if j == i else fused[s][j]
                    parts.append(g[k] * _pool_to(source, size))
                per_block = cast(nn.ModuleList, self.fuse[t])  # cast: one ModuleList per task
                fused[t].append(per_block[i](torch.cat(parts, dim=1)))
            hs = [fused[t][i] for t in range(self.num_tasks)]
        return [net.pool(h) for net, h in zip(nets, hs)]  # T × [B, F]

    @property
    def has_penalty(self) -> bool:
        return not self.fixed and self.entropy_weight > 0 and (self.in_arch_step or not self.alternate)

    def penalty_from(self, params: Mapping[str, Tensor]) -> Tensor | None:
        """λ Σ_e H(σ(α_e)) of ``params["gate_logits"]`` during the search (under the alternation:
        in an architecture update only); None otherwise."""
        if not self.has_penalty:
            return None
        return self.entropy_weight * gate_entropy(params["gate_logits"])


def derive_edges(trunk: MTLNAS) -> Tensor:
    """The final architecture's edges ``[E]``: 1 where α_e > 0 (a fixed architecture: its own)."""
    if trunk.fixed:
        return trunk.kept_mask().clone()
    return (trunk.gate_logits.detach() > 0).float()


def _ignore_gate_logits(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *_: object) -> None:
    """``load_state_dict`` pre-hook of a fixed :class:`MTLNAS`: drops ``gate_logits``, which a
    derived architecture's weights saved before issue 25's fix hold (unused there)."""
    state_dict.pop(prefix + "gate_logits", None)


def edges_text(edges: Tensor) -> str:
    """The text of kept edges that :func:`parse_edges` reads."""
    return ",".join(str(int(v)) for v in edges.tolist())


def mtl_nas(
    make_backbone: BackboneFactory, num_primary: int, num_aux: int = 0, hidden: int = 512, **settings
) -> MultiTaskNetwork:
    """The multi-task network of MTL-NAS (:class:`MTLNAS` and two heads); ``settings`` the trunk's."""
    return branched_network(MTLNAS(make_backbone, 2 if num_aux > 0 else 1, **settings), num_primary, num_aux, hidden)
