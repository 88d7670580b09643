"""Sparse sharing: per task a subnetwork of one base network, found by iterative magnitude pruning.

Every task t reads the base backbone through a binary mask M_t over its weight tensors (the
convolution and linear kernels; biases and BatchNorm stay unmasked, as in the lottery-ticket
literature):

    f_t(x) = backbone(x; θ ⊙ M_t)

so tasks share exactly the weights where their masks overlap (identical masks: hard sharing). The
masks come from iterative magnitude pruning with rewinding (Sun et al. 2020, Alg. 1; Frankle &
Carbin 2019): from the weights θ_w after a multi-task warm-up, for each task, ``rounds`` times: train
the masked subnetwork on that task alone, remove the fraction ``rate`` of its remaining weights with
the smallest magnitude (per tensor), rewind the rest to θ_w. After ``rounds`` rounds a tensor keeps
(1 − rate)^rounds of its weights (rounding each round), e.g. rate = 1 − 0.1^(1/20) for 10 % after 20.
Then the tasks train together, each batch through every task's mask.

Masked weights and their gradients are exactly zero: a task's forward multiplies by its mask, and
:meth:`SparseSharing.set_masks` sets the weights that no task's mask holds to zero, so their
gradient is zero and no optimiser state (momentum, weight decay, Adam's moments) ever moves them.

MAXL's meta-gradient: the masks are fixed during training, the network a plain function of θ1, and
the meta-gradient exact; the masks themselves (a discrete choice) are not differentiated. Each
task's forward is a ``torch.func.functional_call`` of the backbone at θ ⊙ M_t, which the ``func``
and ``jvp`` engines (and the first-order one) take; the ``higher`` engine's patched modules do not
(``maxl train`` refuses that pair).

References:
    Sun, Shao, Li, Liu, Yan, Qiu, Huang. "Learning Sparse Sharing Architectures for Multiple Tasks".
    AAAI 2020, arXiv:1911.05034, Sec. 3 (Algorithm 1).
    Frankle, Carbin. "The Lottery Ticket Hypothesis". ICLR 2019 (iterative pruning, rewinding).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call

from maxl.nn.architectures.base import BackboneFactory, TaskTrunk, branched_network

if TYPE_CHECKING:  # for the annotations only
    from maxl.nn.networks import MultiTaskNetwork

__all__ = ["SparseSharing", "sparse_sharing", "magnitude_prune", "round_rate", "search_masks"]

Masks = dict[str, Tensor]


def round_rate(final_density: float, rounds: int) -> float:
    """The pruning rate per round that leaves ``final_density`` after ``rounds`` rounds:
    1 − final_density^(1/rounds) (e.g. 1 − 0.1^(1/20) ≈ 0.1087)."""
    return 1.0 - final_density ** (1.0 / rounds)


def magnitude_prune(weight: Tensor, mask: Tensor, rate: float) -> Tensor:
    """A new mask: ``mask`` less the ⌊rate · remaining + ½⌋ remaining weights of smallest |weight|
    (ties: the lower flat index first).

    Shapes:
        ``weight``, ``mask``: the same shape; the result: that shape, float 0/1.

    Raises:
        ValueError: rate outside [0, 1).
    """
    if not 0 <= rate < 1:
        raise ValueError(f"a pruning rate is in [0, 1), got {rate}")
    flat_mask = mask.detach().flatten().clone()
    remaining = flat_mask.nonzero().flatten()
    k = math.floor(rate * len(remaining) + 0.5)
    if k:
        magnitude = weight.detach().flatten()[remaining].abs()
        order = torch.sort(magnitude, stable=True).indices  # ascending; equal values keep index order
        flat_mask[remaining[order[:k]]] = 0.0
    return flat_mask.view_as(mask)


class SparseSharing(TaskTrunk):
    """One backbone read by every task through its own binary mask over the weight tensors.

    Args:
        make_backbone: returns a fresh backbone ``[B, C, H, W]`` → ``[B, F]`` with ``out_features``
            (called once).
        num_tasks: T.

    Parameters: the backbone's (masked entries included, held at zero); the masks are buffers
    ``mask_{t}_{name}``, one per task and weight tensor (all ones at first: hard sharing).

    Shapes:
        ``forward``: ``[B, C, H, W]`` → ``[B, T, F]``.

    Raises:
        ValueError: a backbone without ``out_features``.
    """

    def __init__(self, make_backbone: BackboneFactory, num_tasks: int):
        backbone = make_backbone()
        dim = getattr(backbone, "out_features", None)
        if dim is None:
            raise ValueError("sparse sharing needs a backbone with an `out_features` attribute")
        super().__init__(num_tasks, int(dim))
        self.backbone = backbone
        self.prunable = [n for n, p in backbone.named_parameters() if p.ndim >= 2]  # the kernels
        self.names = [n for n, _ in backbone.named_parameters()]
        for t in range(num_tasks):
            for n in self.prunable:
                self.register_buffer(self._key(t, n), torch.ones_like(backbone.get_parameter(n)))

    @staticmethod
    def _key(task: int, name: str) -> str:
        return f"mask_{task}_{name.replace('.', '_')}"

    def mask(self, task: int, name: str) -> Tensor:
        """M_t of the weight tensor ``name`` (a name of the backbone's parameters)."""
        return cast(Tensor, getattr(self, self._key(task, name)))

    def masks(self, task: int) -> Masks:
        """Task ``task``'s masks by weight name."""
        return {n: self.mask(task, n) for n in self.prunable}

    def task_features(self, x: Tensor) -> list[Tensor]:
        # the backbone's tensors by attribute (inside the engines' functional_call they are θ1⁺)
        # cast: a parameter name leads to a tensor, which nn.Module's __getattr__ types loosely
        params = {n: cast(Tensor, functools.reduce(getattr, n.split("."), self.backbone)) for n in self.names}
        features = []
        for t in range(self.num_tasks):
            masked = {n: p * self.mask(t, n) if n in self.prunable else p for n, p in params.items()}
            features.append(functional_call(self.backbone, masked, (x,)))  # θ ⊙ M_t
        return features  # T × [B, F]

    @torch.no_grad()
    def set_masks(self, masks: Sequence[Masks]) -> None:
        """Install one mask per task (by weight name) and set the weights outside every mask to zero.

        Raises:
            ValueError: not one mask set per task, missing names, wrong shapes, entries other than 0/1.
        """
        if len(masks) != self.num_tasks:
            raise ValueError(f"{len(masks)} mask sets for {self.num_tasks} tasks")
        for t, task_masks in enumerate(masks):
            if set(task_masks) != set(self.prunable):
                raise ValueError(f"task {t}'s masks name {sorted(task_masks)}, expected {self.prunable}")
            for n, m in task_masks.items():
                buf = self.mask(t, n)
                if m.shape != buf.shape or not torch.all((m == 0) | (m == 1)):
                    raise ValueError(
                        f"task {t}'s mask of {n}: expected 0/1 of shape {tuple(buf.shape)}, got {tuple(m.shape)}"
                    )
                buf.copy_(m)
        for n in self.prunable:
            union = torch.stack([self.mask(t, n) for t in range(self.num_tasks)]).amax(0)
            self.backbone.get_parameter(n).mul_(union)  # a weight no task reads: zero, and its gradient too

    def density(self, task: int) -> float:
        """The fraction of task ``task``'s weights (in the masked tensors) that its mask keeps."""
        kept = sum(float(self.mask(task, n).sum()) for n in self.prunable)
        return kept / sum(self.mask(task, n).numel() for n in self.prunable)

    def shared_fraction(self) -> float:
        """Of the weights some task keeps, the fraction that every task keeps (1: hard sharing)."""
        both = union = 0.0
        for n in self.prunable:
            stacked = torch.stack([self.mask(t, n) for t in range(self.num_tasks)])
            both += float(stacked.amin(0).sum())
            union += float(stacked.amax(0).sum())
        return both / union if union else 0.0


def sparse_sharing(
    make_backbone: BackboneFactory, num_primary: int, num_aux: int = 0, hidden: int = 512
) -> MultiTaskNetwork:
    """The multi-task network with sparse sharing (:class:`SparseSharing` and two heads); its masks
    are all ones (hard sharing) until :func:`search_masks` or :meth:`SparseSharing.set_masks`."""
    return branched_network(SparseSharing(make_backbone, 2 if num_aux > 0 else 1), num_primary, num_aux, hidden)


Batches = Callable[[], Iterable[tuple[Tensor, Tensor, Tensor]]]
"""``() -> iterable of (images, primary labels, auxiliary targets)``: a fresh pass over the training set."""


def _sgd_steps(
    net: nn.Module,
    batches: Batches,
    loss: Callable[[tuple[Tensor, Tensor | None], Tensor, Tensor], Tensor],
    steps: int,
    lr: float,
    momentum: float,
) -> None:
    """``steps`` SGD steps of ``loss(net(x), y, aux)`` over as many passes of ``batches`` as it takes."""
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr, momentum=momentum)
    done = 0
    while done < steps:
        for x, y, aux in batches():
            opt.zero_grad(set_to_none=True)
            loss(net(x), y, aux).backward()
            opt.step()
            done += 1
            if done == steps:
                return


def search_masks(
    net: MultiTaskNetwork,
    batches: Batches,
    task_losses: Sequence[Callable[[tuple[Tensor, Tensor | None], Tensor, Tensor], Tensor]],
    *,
    rounds: int,
    rate: float,
    steps: int,
    warmup_steps: int = 0,
    lr: float = 0.01,
    momentum: float = 0.9,
    log: Callable[[str], None] | None = None,
) -> list[Masks]:
    """Sparse sharing's masks by iterative magnitude pruning with rewinding, one task at a time,
    installed in the trunk (:meth:`SparseSharing.set_masks`); the network ends at the warm-up's
    weights θ_w (the masked-out ones zero).

    Args:
        net: a network on a :class:`SparseSharing` trunk (``net.backbone``).
        batches: a fresh pass of training batches ``(x, y, aux_target)`` per call.
        task_losses: per task t, ``loss((primary_logits, aux_logits), y, aux_target) -> scalar``.
        rounds: pruning rounds per task (≥ 0; 0: every mask all ones).
        rate: the fraction of the remaining weights pruned each round (:func:`round_rate`).
        steps: SGD steps of the subnetwork per round.
        warmup_steps: SGD steps of the multi-task loss (every task, full masks) before the search.
        lr, momentum: the SGD of the warm-up and the rounds.
        log: where a line per task goes.

    Returns:
        The masks, one dict per task.

    Raises:
        ValueError: a network without a :class:`SparseSharing` trunk, or bad counts.
    """
    trunk = net.backbone
    if not isinstance(trunk, SparseSharing):
        raise ValueError("search_masks needs a network on a SparseSharing trunk (--arch sparse)")
    if rounds < 0 or steps < 0 or warmup_steps < 0 or len(task_losses) != trunk.num_tasks:
        raise ValueError(
            f"rounds, steps and warmup_steps must be >= 0 and one loss per task ({trunk.num_tasks}), got "
            f"{rounds}, {steps}, {warmup_steps}, {len(task_losses)}"
        )
    ones = [{n: torch.ones_like(m) for n, m in trunk.masks(t).items()} for t in range(trunk.num_tasks)]
    trunk.set_masks(ones)
    if warmup_steps:  # θ_w: the multi-task warm-up, every task on the whole network

        def multitask(out: tuple[Tensor, Tensor | None], y: Tensor, a: Tensor) -> Tensor:
            return torch.stack([f(out, y, a) for f in task_losses]).sum()

        _sgd_steps(net, batches, multitask, warmup_steps, lr, momentum)
    warm = copy.deepcopy(net.state_dict())
    found: list[Masks] = []
    for t, task_loss in enumerate(task_losses):
        mask = {n: torch.ones_like(m) for n, m in trunk.masks(t).items()}
        for _ in range(rounds):
            net.load_state_dict(warm)  # rewind to θ_w
            trunk.set_masks([mask] * trunk.num_tasks)  # the subnetwork: θ_w ⊙ M
            _sgd_steps(net, batches, task_loss, steps, lr, momentum)
            mask = {n: magnitude_prune(trunk.backbone.get_parameter(n), mask[n], rate) for n in mask}
        found.append(mask)
        if log is not None:
            kept = sum(float(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
            log(f"[sparse] task {t}: {rounds} rounds, {kept:.3f} of the weights kept")
    net.load_state_dict(warm)
    trunk.set_masks(found)
    return found
