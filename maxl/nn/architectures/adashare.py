"""AdaShare: one residual backbone, and per task and residual block a select-or-skip policy.

Task t runs the shared stem, then every residual block l either executed or skipped:

    h ← u_{t,l,0} · block_l(h) + u_{t,l,1} · S_l(h),      u_{t,l} ∈ Δ¹ (select, skip)

with S_l the block's shortcut (the identity, or its downsample path where the block changes
resolution or width), so a skipped block passes S_l(h). The policy u is, by phase
(:meth:`AdaShare.begin_epoch`, from the epoch alone, so a resumed run takes the same):

* ``"warmup"`` (the first ``warmup`` epochs): every block selected, u = (1, 0): the plain ResNet
  for every task, the backbone shared.
* ``"search"``: a Gumbel-softmax sample of the policy logits α_{t,l} ``[T, L, 2]`` at temperature
  τ_e = τ₀ · γ^e in the e-th search epoch (reference: τ₀ = 5, γ = 0.965), u = softmax((α + g)/τ),
  g ~ Gumbel(0, 1) drawn at every forward in training (in evaluation: the argmax of α). The
  curriculum hands the policy the last k_e = min(L, 1 + ⌊e / speed⌋) blocks; the others stay
  selected. The multi-task loss gains λ_sp L_sparsity + λ_sh L_sharing (Sun et al., Sec. 3.3):

      L_sparsity = Σ_{t, l} log p_{t,l},      p = softmax(α)[..., 0] the probability to select
      L_sharing  = Σ_{t ≠ s} Σ_{l=1..L} (L − l)/L · |p_{t,l} − p_{s,l}|

  (minimising L_sparsity pushes towards skipping, L_sharing ties the tasks' lower blocks; the
  sum over ordered task pairs, as the paper writes it).
* ``"fixed"``: a 0/1 policy ``[T, L]`` (the derived architecture, :func:`derive_policy`), re-trained
  from scratch. A trunk constructed with it (``policy``) holds no policy logits, and the blocks that
  no task executes are frozen (``requires_grad`` off; kept, so that the weights keep the
  backbone's layout): its trainable parameters are exactly those its forward uses, which MAXL's
  look-ahead (it differentiates every trainable parameter) and DistributedDataParallel need
  (issue 25).

Which blocks are computed: with a 0/1 policy (the warm-up's all-ones, a fixed policy, the argmax
in evaluation) a skipped block is not computed at all, only its shortcut, in training and in
evaluation, and the tasks that share a policy prefix share its computation: block l runs once per
distinct prefix u_{·,1..l} (with the same policy for every task, once: the cost of hard sharing
over the blocks executed). The result is the formula's (1·block + 0·S = block); a skipped block's
parameters have no gradient and its BatchNorm running statistics do not move, and a block shared
by a prefix updates its running statistics once per step (as hard sharing's), not once per task.
Only the search in training mixes both paths with the Gumbel-softmax weights, every block
computed for every task.

Training in the search phase alternates, as the paper does (Sun et al., Sec. 3.4; the reference
code's defaults), on two disjoint, class-stratified splits of the training images (split B:
``model.adashare_policy_split`` images, :func:`maxl.train.build.hold_out_for_architecture`):

* weight updates: one pass over split A (the trainer's epoch) with the multi-task optimiser; the
  policy logits are not trainable then (``requires_grad`` off: no optimiser, look-ahead or
  meta-gradient sees them) and u is a Gumbel-softmax sample at every forward;
* policy updates: then one pass over split B (:meth:`AdaShare.arch_step`, by the trainer) with an
  optimiser of their own, Adam (lr ``policy_lr``, reference 0.01; weight decay 5·10⁻⁴), on the
  multi-task loss + λ_sp L_sparsity + λ_sh L_sharing, Gumbel-softmax samples, the network's
  weights and BatchNorm statistics untouched (BatchNorm normalises with the batch's statistics);
* τ and the curriculum then move on with the next (search) epoch: τ decays once per policy epoch.

The warm-up trains on split A alone (the paper warms up on both splits). ``alternate=False``
keeps the earlier joint scheme (a documented simplification): the logits are parameters of the
multi-task network, take the multi-task optimiser's steps on the same batches as the weights,
and the sparsity and sharing losses join the multi-task loss.

After the search, :meth:`AdaShare.sample_architectures` (``--adashare-samples N``) draws N policies
from the learned distribution and keeps the one of best validation accuracy (validation carved from
the training images, ``--val-subset``; never the test set), each scored with the searched weights;
the paper re-trains the sampled architectures from scratch before choosing, which costs N runs: a
run with ``adashare_policy`` re-trains the chosen one.

MAXL's meta-gradient: in ``warmup`` and ``fixed`` the network is a plain function of θ1 and the
meta-gradient is exact; in ``search`` it is the gradient at the drawn Gumbel noise (the
reparameterised sample, the noise held fixed: a stochastic estimate of the expectation's).

References:
    Sun, Panda, Feris, Saenko. "AdaShare: Learning What To Share For Efficient Deep Multi-Task
    Learning". NeurIPS 2020, Sec. 3 (Eq. 1–3 and the curriculum, Sec. 3.4).
    Jang, Gu, Poole. "Categorical Reparameterization with Gumbel-Softmax". ICLR 2017.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from maxl.nn.architectures.base import BackboneFactory, TaskTrunk, branched_network
from maxl.nn.architectures.cross_stitch import per_task_backbones

if TYPE_CHECKING:  # for the annotations only
    from maxl.nn.networks import MultiTaskNetwork
    from maxl.nn.resnet import ResNet

__all__ = [
    "AdaShare",
    "adashare",
    "sparsity_loss",
    "sharing_loss",
    "temperature",
    "curriculum",
    "derive_policy",
    "parse_policy",
    "policy_text",
    "best_of_samples",
    "PHASES",
]

PHASES = ("warmup", "search", "fixed")


def sparsity_loss(select: Tensor) -> Tensor:
    """L_sparsity = Σ_{t,l} log p_{t,l} of the select probabilities ``[T, L]`` (a scalar)."""
    return select.log().sum()


def sharing_loss(select: Tensor) -> Tensor:
    """L_sharing = Σ_{t≠s} Σ_l (L − l)/L |p_{t,l} − p_{s,l}| (l = 1..L) of ``[T, L]`` (a scalar)."""
    num_blocks = select.shape[1]
    weights = (num_blocks - torch.arange(1, num_blocks + 1, dtype=select.dtype, device=select.device)) / num_blocks
    diff = (select[:, None, :] - select[None, :, :]).abs()  # [T, T, L]; the diagonal is 0
    return (diff * weights).sum()


def temperature(search_epoch: int, start: float = 5.0, decay: float = 0.965) -> float:
    """τ_e = τ₀ · γ^e of the e-th search epoch (0-based)."""
    return start * decay**search_epoch


def curriculum(search_epoch: int, num_blocks: int, speed: int = 1) -> int:
    """k_e = min(L, 1 + ⌊e / speed⌋): how many of the last blocks the policy decides in search epoch e."""
    return min(num_blocks, 1 + search_epoch // speed)


def parse_policy(text: str, num_tasks: int, num_blocks: int) -> Tensor:
    """A fixed policy from text: one row per task separated by ``;``, one 0/1 per residual block
    separated by ``,`` (``"1,1,0;1,0,1"``) → float ``[T, L]``.

    Raises:
        ValueError: not T rows of L entries, or an entry other than 0 and 1.
    """
    rows = [r for r in text.replace(" ", "").split(";") if r]
    try:
        values = [[int(v) for v in r.split(",")] for r in rows]
    except ValueError:
        raise ValueError(f"adashare_policy {text!r}: expected rows of 0/1 such as 1,1,0;1,0,1") from None
    if len(values) != num_tasks or any(len(r) != num_blocks for r in values):
        raise ValueError(
            f"adashare_policy {text!r}: expected {num_tasks} rows (tasks) of {num_blocks} entries (residual blocks)"
        )
    if any(v not in (0, 1) for r in values for v in r):
        raise ValueError(f"adashare_policy {text!r}: entries are 0 (skip) or 1 (select)")
    return torch.tensor(values, dtype=torch.float32)


class AdaShare(TaskTrunk):
    """A shared residual backbone, executed per task with a select/skip policy per residual block.

    Args:
        make_backbone: returns a fresh residual backbone (:class:`maxl.nn.resnet.ResNet`: blocks
            view with ``shortcut`` and ``residual_blocks``); called once.
        num_tasks: T.
        warmup: epochs with every block selected before the search.
        sparsity_weight, sharing_weight: λ_sp, λ_sh ≥ 0.
        tau, tau_decay: τ₀ > 0 and γ in (0, 1] of the temperature schedule.
        curriculum_speed: search epochs per further block handed to the policy (≥ 1).
        policy: a fixed 0/1 policy ``[T, L]`` or its text (:func:`parse_policy`): the derived
            architecture, trained without a search: no policy logits, the blocks that no task
            executes frozen.
        alternate: the paper's alternation of weight and policy updates (module docstring): the
            policy logits are trained only inside :meth:`arch_step`, by :meth:`make_arch_optimizer`'s
            optimiser. False: the joint scheme (the logits train with the weights).
        policy_lr: the policy optimiser's (Adam) learning rate (> 0).
        samples: N ≥ 0 policies to draw after the search, the best on validation kept
            (:meth:`sample_architectures`); 0: none.

    Parameters: the backbone's + 2·T·L policy logits (L residual blocks) in a search; the
    backbone's alone with a fixed ``policy`` (the blocks no task executes among them, frozen).

    Shapes:
        ``forward``: ``[B, C, H, W]`` → ``[B, T, F]``.

    Raises:
        ValueError: a backbone without residual blocks, bad weights, temperature or policy shape.
    """

    policy_logits: nn.Parameter | None  # α [T, L, 2]; None in a derived (fixed) trunk

    def __init__(
        self,
        make_backbone: BackboneFactory,
        num_tasks: int,
        warmup: int = 0,
        sparsity_weight: float = 0.0,
        sharing_weight: float = 0.0,
        tau: float = 5.0,
        tau_decay: float = 0.965,
        curriculum_speed: int = 1,
        policy: str | Tensor | None = None,
        alternate: bool = True,
        policy_lr: float = 0.01,
        samples: int = 0,
    ):
        backbone = per_task_backbones(make_backbone, 1, "adashare")[0]
        if not all(hasattr(backbone, a) for a in ("shortcut", "residual_blocks")):
            raise ValueError(
                "architecture 'adashare' skips residual blocks: it needs a residual backbone "
                f"(--backbone resnet20, resnet32 or resnet18), got {type(backbone).__name__}"
            )
        if min(sparsity_weight, sharing_weight) < 0 or tau <= 0 or not 0 < tau_decay <= 1 or curriculum_speed < 1:
            raise ValueError(
                "adashare: sparsity and sharing weights must be >= 0, tau > 0, tau_decay in (0, 1] and "
                f"curriculum speed >= 1, got {sparsity_weight}, {sharing_weight}, {tau}, {tau_decay}, "
                f"{curriculum_speed}"
            )
        if warmup < 0:
            raise ValueError(f"adashare: warm-up epochs must be >= 0, got {warmup}")
        if not policy_lr > 0:
            raise ValueError(f"adashare: policy_lr must be > 0, got {policy_lr}")
        if samples < 0:
            raise ValueError(f"adashare: samples must be >= 0, got {samples}")
        net = cast("ResNet", backbone)
        super().__init__(num_tasks, net.out_features)
        self.backbone = backbone
        self.residual = tuple(net.residual_blocks)
        n = len(self.residual)
        self.derived = policy is not None  # constructed with a fixed policy: no search, no logits
        if not self.derived:
            self.policy_logits = nn.Parameter(torch.zeros(num_tasks, n, 2))  # α [T, L, (select, skip)]
        else:  # unused there (issue 25); weights saved before the fix hold them: loaded, the entry ignored
            self.register_parameter("policy_logits", None)
            self.register_load_state_dict_pre_hook(_ignore_policy_logits)
        self.warmup, self.tau0, self.tau_decay, self.speed = int(warmup), float(tau), float(tau_decay), curriculum_speed
        self.sparsity_weight, self.sharing_weight = float(sparsity_weight), float(sharing_weight)
        if isinstance(policy, str):
            policy = parse_policy(policy, num_tasks, n)
        if policy is not None and tuple(policy.shape) != (num_tasks, n):
            raise ValueError(f"adashare: a fixed policy of shape {tuple(policy.shape)}, expected {(num_tasks, n)}")
        self.register_buffer("fixed_policy", torch.ones(num_tasks, n) if policy is None else policy.float())
        self.phase = "fixed" if policy is not None else ("warmup" if warmup > 0 else "search")
        self.tau, self.controlled = self.tau0, (1 if policy is None else n)  # k: the last k blocks decided
        self.gumbel_noise: Tensor | None = None  # a fixed g [T, L, 2] (tests); None: drawn at every forward
        # the paper's alternation: the logits train only inside arch_step, with their own optimiser
        self.alternate, self.policy_lr = bool(alternate) and policy is None, float(policy_lr)
        self.in_arch_step = False
        self.samples = int(samples) if policy is None else 0
        if self.alternate:
            self._logits().requires_grad_(False)
        if self.derived:  # the blocks no task executes: never computed, so not trained (no gradient)
            for j, used in enumerate(self.fixed_buffer().amax(0).tolist()):
                if not used:
                    net.blocks[self.residual[j] - 1].requires_grad_(False)

    # ------------------------------------------------------------------ schedule
    def begin_epoch(self, epoch: int) -> dict[str, float]:
        """Set the phase, τ and the curriculum for ``epoch`` (0-based, from the epoch alone);
        returns what the epoch's record logs."""
        if self.phase == "fixed":
            return {"adashare_selected": float(self.fixed_buffer().mean())}
        n = len(self.residual)
        if epoch < self.warmup:
            self.phase = "warmup"
            return {"adashare_tau": 0.0, "adashare_curriculum": 0.0}
        e = epoch - self.warmup
        self.phase = "search"
        self.tau, self.controlled = temperature(e, self.tau0, self.tau_decay), curriculum(e, n, self.speed)
        select = self.select_probabilities().detach()
        return {
            "adashare_tau": self.tau,
            "adashare_curriculum": float(self.controlled),
            "adashare_select_prob": float(select.mean()),
        }

    # ------------------------------------------------------------------ alternation
    def arch_parameters(self) -> list[nn.Parameter]:
        """The parameters of the policy updates (the logits α) under the alternation; [] otherwise
        (the joint scheme, a derived trunk)."""
        return [self._logits()] if self.alternate else []

    @property
    def arch_step_active(self) -> bool:
        """Whether this epoch has policy updates after its weight updates (the search phase)."""
        return self.alternate and self.phase == "search"

    def make_arch_optimizer(self) -> torch.optim.Optimizer:
        """The policy logits' own optimiser: Adam, lr ``policy_lr``, weight decay 5·10⁻⁴ (the
        reference code's).

        Raises:
            ValueError: a derived trunk (a fixed policy given: it has no policy logits).
        """
        self._require_search("make_arch_optimizer()")
        return torch.optim.Adam([self._logits()], lr=self.policy_lr, weight_decay=5e-4)

    @contextlib.contextmanager
    def arch_step(self) -> Iterator[None]:
        """Inside, the policy logits are trainable and the sparsity and sharing losses are part
        of :meth:`penalty` (a policy update); outside, under the alternation, neither.

        Raises:
            ValueError: a derived trunk (a fixed policy given: it has no policy logits).
        """
        self._require_search("arch_step()")
        logits = self._logits()
        self.in_arch_step = True
        logits.requires_grad_(True)
        try:
            yield
        finally:
            self.in_arch_step = False
            logits.requires_grad_(not self.alternate)

    def _require_search(self, what: str) -> None:
        if self.derived:
            raise ValueError(
                f"adashare: {what} needs the policy search; a derived architecture (a fixed policy given, "
                "--adashare-policy) has no policy logits"
            )

    def _logits(self) -> nn.Parameter:
        """α of a searching trunk (a derived one has none: :meth:`_require_search`)."""
        self._require_search("reading the policy logits")
        assert self.policy_logits is not None  # not derived
        return self.policy_logits

    @contextlib.contextmanager
    def fixed(self, policy: Tensor) -> Iterator[None]:
        """Inside, the network runs the fixed 0/1 policy ``[T, L]``; the phase and the fixed
        policy of before are restored on leaving. For a searching trunk (e.g. scoring sampled
        architectures in evaluation, :meth:`sample_architectures`); in training mode the blocks
        that no task executes have no gradient then.

        Raises:
            ValueError: a derived trunk (its policy is fixed at construction, its unexecuted
                blocks frozen by it).
        """
        self._require_search("fixed()")
        phase, before = self.phase, self.fixed_buffer().clone()
        self.fixed_buffer().copy_(policy)
        self.phase = "fixed"
        try:
            yield
        finally:
            self.phase = phase
            self.fixed_buffer().copy_(before)

    def sample_architectures(self, score: Callable[[], float], seed: int = 0) -> dict:
        """:func:`best_of_samples` with this trunk's ``samples`` and a generator seeded by ``seed``."""
        return best_of_samples(self, score, self.samples, torch.Generator().manual_seed(seed))

    # ------------------------------------------------------------------ policy
    def policy(self, logits: Tensor | None = None) -> Tensor:
        """u ``[T, L, 2]`` (select, skip) of the current phase (module docstring); ``logits``
        (default: the trunk's) are read in the search only."""
        if self.phase == "fixed":
            p = self.fixed_buffer()
            p = p if logits is None else p.to(logits.dtype)
            return torch.stack([p, 1 - p], dim=-1)
        logits = self._logits() if logits is None else logits
        t, n, _ = logits.shape
        select = torch.zeros(t, n, 2, dtype=logits.dtype, device=logits.device)
        select[..., 0] = 1.0  # every block executed
        if self.phase == "warmup":
            return select
        k = self.controlled
        if self.training:
            g = self.gumbel_noise
            if g is None:  # g = −log(−log U), U ~ U(0, 1)
                g = -torch.empty_like(logits).exponential_().log()
            u = ((logits + g.to(logits.dtype)) / self.tau).softmax(-1)
        else:
            u = nn.functional.one_hot(logits.argmax(-1), 2).to(logits.dtype)
        return torch.cat([select[:, : n - k], u[:, n - k :]], dim=1)

    def fixed_buffer(self) -> Tensor:
        """The fixed 0/1 policy ``[T, L]`` (all ones unless one was given)."""
        return cast(Tensor, self.fixed_policy)  # cast: a buffer, which nn.Module's __getattr__ types loosely

    def select_probabilities(self, logits: Tensor | None = None) -> Tensor:
        """p = softmax(α)[..., 0] ``[T, L]``: each task's probability to execute each block."""
        logits = self._logits() if logits is None else logits
        return logits.softmax(-1)[..., 0]

    def task_features(self, x: Tensor) -> list[Tensor]:
        net = cast("ResNet", self.backbone)
        net.check_input(x)
        stem = net.block(0, x)  # shared by every task: [B, C_0, H', W']
        u = self.policy()  # [T, L, 2]
        if self.training and self.phase == "search":  # both paths, weighted by the Gumbel-softmax sample
            features = []
            for t in range(self.num_tasks):
                h = stem
                for j, b in enumerate(self.residual):
                    h = u[t, j, 0] * net.block(b, h) + u[t, j, 1] * net.shortcut(b, h)
                features.append(net.pool(h))
            return features  # T × [B, F]
        # a 0/1 policy (warm-up, fixed, the argmax in evaluation): the chosen path of each choice
        # alone, once per distinct policy prefix (module docstring); 1·block + 0·S = block exactly
        select = (u[..., 0].detach() > 0.5).tolist()  # [T][L] bools, one transfer
        features = [net.pool(h) for h in self._executed(stem, select)]
        logits = self.policy_logits
        if self.training and logits is not None and logits.requires_grad:
            # a searching trunk's logits, trainable (the joint scheme) but unused here (its warm-up,
            # or fixed() in training): in the graph with a zero gradient, since the look-ahead of
            # MAXL's meta-gradient differentiates every trainable parameter and refuses unused ones
            # (tests/unit/meta/test_architectures.py); under the alternation they are not trainable
            features = [f + 0.0 * logits.sum() for f in features]
        return features  # T × [B, F]

    def _executed(self, stem: Tensor, select: list[list[bool]]) -> list[Tensor]:
        """The last residual block's output ``[B, C, h, w]`` of each task under the 0/1 policy
        ``select`` (``[T][L]``, True: execute): block l runs once per distinct prefix
        ``select[t][:l + 1]``, a skipped block not at all (its shortcut only); only the current
        depth's tensors are held."""
        net = cast("ResNet", self.backbone)
        level: dict[tuple[bool, ...], Tensor] = {(): stem}  # prefix -> its output
        for j, b in enumerate(self.residual):
            after: dict[tuple[bool, ...], Tensor] = {}
            for row in select:
                key = tuple(row[: j + 1])
                if key not in after:
                    h = level[key[:-1]]
                    after[key] = net.block(b, h) if key[-1] else net.shortcut(b, h)
            level = after
        return [level[tuple(row)] for row in select]

    # ------------------------------------------------------------------ losses
    @property
    def has_penalty(self) -> bool:
        weighted = self.sparsity_weight > 0 or self.sharing_weight > 0
        return self.phase == "search" and weighted and (self.in_arch_step or not self.alternate)

    def penalty_from(self, params: Mapping[str, Tensor]) -> Tensor | None:
        """λ_sp L_sparsity + λ_sh L_sharing of the policy logits ``params["policy_logits"]`` in
        the search phase (under the alternation: in a policy update only); None otherwise."""
        if not self.has_penalty:
            return None
        p = self.select_probabilities(params["policy_logits"])
        return self.sparsity_weight * sparsity_loss(p) + self.sharing_weight * sharing_loss(p)

    def derived_parameters(self, policy: Tensor | None = None) -> int:
        """Parameters of the derived network of a 0/1 policy ``[T, L]`` (default: the fixed one):
        the stem, and the residual blocks that some task executes (without the policy logits)."""
        policy = self.fixed_buffer() if policy is None else policy
        net = cast("ResNet", self.backbone)
        used = policy.amax(0)  # [L]
        total = sum(p.numel() for p in net.stem.parameters())
        for j, blk in enumerate(net.blocks):
            if used[j] > 0:
                total += sum(p.numel() for p in blk.parameters())
        return total

    def extra_repr(self) -> str:
        return f"phase={self.phase!r}, tau={self.tau:.4g}, controlled={self.controlled}"


def derive_policy(trunk: AdaShare, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """The 0/1 policy ``[T, L]`` of a searched trunk: select where p > 0.5 (``sample=False``), or a
    draw select ~ Bernoulli(p) (the paper samples N architectures and keeps the best on validation).
    Blocks outside the curriculum's last k stay selected. A derived trunk: its own policy."""
    if trunk.derived:
        return trunk.fixed_buffer().float().clone()
    with torch.no_grad():
        p = trunk.select_probabilities().float()
        out = torch.bernoulli(p, generator=generator) if sample else (p > 0.5).float()
        n = out.shape[1]
        out[:, : n - trunk.controlled] = 1.0
    return out


def best_of_samples(trunk: AdaShare, score: Callable[[], float], samples: int, generator: torch.Generator) -> dict:
    """Draw ``samples`` policies from the searched trunk (:func:`derive_policy`, ``sample=True``)
    and keep the one that ``score`` rates best (Sun et al., Sec. 4: the best of the sampled
    architectures; choose on validation, never on the test set).

    Args:
        trunk: the searched trunk.
        score: called with the trunk running each drawn policy (:meth:`AdaShare.fixed`); returns
            the number to maximise, e.g. the validation accuracy of the network.
        samples: N ≥ 1 draws.
        generator: the draws' random numbers.

    Returns:
        ``{"policies": [N texts], "scores": [N floats], "chosen": text, "chosen_index": i}``
        with i the first argmax of the scores (:func:`policy_text` texts, for ``adashare_policy``).

    Raises:
        ValueError: ``samples`` < 1.
    """
    if samples < 1:
        raise ValueError(f"best_of_samples needs samples >= 1, got {samples}")
    policies, scores = [], []
    for _ in range(samples):
        policy = derive_policy(trunk, sample=True, generator=generator)
        with trunk.fixed(policy):
            scores.append(float(score()))
        policies.append(policy_text(policy))
    best = max(range(samples), key=lambda i: scores[i])  # the first of equal scores
    return {"policies": policies, "scores": scores, "chosen": policies[best], "chosen_index": best}


def _ignore_policy_logits(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *_: object) -> None:
    """``load_state_dict`` pre-hook of a derived :class:`AdaShare`: drops ``policy_logits``, which a
    derived architecture's weights saved before issue 25's fix hold (unused there), and refuses the
    weights of another fixed policy (the trunk froze the blocks that its own policy skips).

    Raises:
        RuntimeError: the weights' ``fixed_policy`` is not the trunk's.
    """
    state_dict.pop(prefix + "policy_logits", None)
    saved, own = state_dict.get(prefix + "fixed_policy"), cast(AdaShare, module).fixed_buffer()
    if saved is not None and (saved.shape != own.shape or not torch.equal(saved.to(own), own)):
        raise RuntimeError(
            f"adashare: weights of the fixed policy {policy_text(saved)!r} do not load into a derived "
            f"architecture of the policy {policy_text(own)!r}"
        )


def policy_text(policy: Tensor) -> str:
    """The text form of a 0/1 policy ``[T, L]`` that :func:`parse_policy` reads."""
    return ";".join(",".join(str(int(v)) for v in row) for row in policy.tolist())


def adashare(
    make_backbone: BackboneFactory,
    num_primary: int,
    num_aux: int = 0,
    hidden: int = 512,
    *,
    policy: str | None = None,
    **settings,
) -> MultiTaskNetwork:
    """The multi-task network with AdaShare (:class:`AdaShare` and two heads); ``policy`` the text of
    a fixed policy (:func:`parse_policy`), ``settings`` the trunk's other arguments."""
    trunk = AdaShare(make_backbone, 2 if num_aux > 0 else 1, policy=policy or None, **settings)
    return branched_network(trunk, num_primary, num_aux, hidden)
