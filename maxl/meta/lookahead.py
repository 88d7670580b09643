"""The pieces every engine's look-ahead is built from.

The look-ahead θ1⁺ = θ1 − α ∇θ1 [L_pri + L_aux (+ L_x)] (Liu, Davison, Johns, NeurIPS 2019,
arXiv:1901.08933, Eq. 3), or its k-step form (:func:`unroll`), and the outer loss on the outer
batch (x_o, y_o) (:func:`outer_pair`) run through the multi-task network's own ``forward`` with
``torch.func.functional_call`` and replaced parameters, never through a second hand-written
forward, and on copies of the BatchNorm buffers, so that the real network is not changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.func import functional_call

from maxl.meta.engine import ExtraInnerLoss, LossFn, OuterBatch

if TYPE_CHECKING:
    from maxl.meta.config import MetaConfig

__all__ = [
    "Forward",
    "generated_targets",
    "trainable",
    "buffer_copies",
    "functional_forward",
    "outer_pair",
    "multitask_loss",
    "multitask_gradient",
    "unroll",
    "lookahead_direction",
    "primary_gradient",
    "zeros_for_unused",
]

Forward = Callable[[Sequence[Tensor]], tuple[Tensor, Tensor]]
"""``call(params) -> (primary [B, P], aux [B, K])``: the network's forward with replaced parameters."""


def generated_targets(generator: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The generator's soft labels and the auxiliary head's targets, both functions of θ2.

    For a generator with per-image weights (``weight_range`` > 0, WAMAL) each image's target is its
    label scaled by its weight s_b: with a loss linear in the target, as the cross-entropy and
    the focal loss are (ℓ(z, s·ŷ) = s·ℓ(z, ŷ)), this is the per-image weighted auxiliary loss
    mean_b s_b ℓ(z_b, ŷ_b). For a generator with hard labels (``gumbel_tau`` > 0, in training
    mode) each target is a one-hot sample of the label, passed straight through a Gumbel-softmax
    (h + r − r.detach(); Jang, Gu, Poole, ICLR 2017, Sec. 2–3), so J's look-ahead term reaches
    θ2 through the relaxed sample r. J's label terms (the entropy) keep the soft, unscaled labels.

    Args:
        generator: ``generator(x, y) -> [B, K]``; a :class:`maxl.nn.LabelGenerator` also has
            ``labels_and_targets(x, y) -> ([B, K], [B, K])``, which is used when present.
        x: images float ``[B, C, H, W]``.
        y: primary labels int64 ``[B]``.

    Returns:
        ``(soft [B, K], target [B, K])``; ``target`` is ``soft`` itself without weights and
        without sampling.
    """
    labels_and_targets = getattr(generator, "labels_and_targets", None)
    if labels_and_targets is not None:
        return labels_and_targets(x, y)
    soft = generator(x, y)
    return soft, soft


def trainable(net: nn.Module) -> tuple[list[str], list[Tensor]]:
    """The names and tensors of ``net``'s parameters that require grad, in ``named_parameters`` order."""
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def buffer_copies(net: nn.Module) -> dict[str, Tensor]:
    """Clones of ``net``'s buffers by name.

    ``functional_call`` in train mode writes BatchNorm running statistics into the buffers it is
    given: the look-ahead gets copies so that the real network's statistics stay as they were.
    """
    return {name: b.clone() for name, b in net.named_buffers()}


def functional_forward(net: nn.Module, names: list[str], buffers: dict[str, Tensor], x: Tensor) -> Forward:
    """``call(params) -> net(x)`` with the trainable parameters ``names`` replaced by ``params``.

    Args:
        net: the multi-task network.
        names: the trainable parameters' names (from :func:`trainable`).
        buffers: the buffers to use (from :func:`buffer_copies`).
        x: images float ``[B, C, H, W]``.

    Returns:
        ``call``, mapping one tensor per name to ``(primary [B, P], aux [B, K])``.
    """

    def call(params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return functional_call(net, ({**dict(zip(names, params)), **buffers}), (x,))

    return call


def outer_pair(x: Tensor, y: Tensor, outer_batch: OuterBatch | None) -> OuterBatch:
    """``(x_o, y_o)``, the batch of the outer loss: ``outer_batch``, or the inner batch ``(x, y)`` if None.

    Raises:
        ValueError: ``outer_batch`` is not a pair of images and labels of the same batch size.
    """
    if outer_batch is None:
        return x, y
    if len(outer_batch) != 2 or outer_batch[0].shape[0] != outer_batch[1].shape[0]:
        raise ValueError("outer_batch must be a pair (x_o [B', C, H, W], y_o [B']) of the same batch size B'")
    return outer_batch[0], outer_batch[1]


def multitask_loss(outputs: tuple[Tensor, Tensor], y: Tensor, soft: Tensor, loss_fn: LossFn) -> Tensor:
    """L_pri + L_aux of the multi-task network's ``(primary_logits [B, P], aux_logits [B, K])``
    on primary labels ``y`` int64 ``[B]`` and soft auxiliary labels ``soft`` float ``[B, K]``."""
    primary_logits, aux_logits = outputs
    return loss_fn(primary_logits, y) + loss_fn(aux_logits, soft)


def multitask_gradient(
    net: nn.Module,
    names: list[str],
    params: list[Tensor],
    x: Tensor,
    y: Tensor,
    soft: Tensor,
    loss_fn: LossFn,
    extra: ExtraInnerLoss | None,
    create_graph: bool,
) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, ...]]:
    """The fused forms' shared pass: the real multi-task forward and g = ∇θ1 (L_pri + L_aux + L_x).

    The forward runs on the real module in its current mode, so the BatchNorm running statistics
    advance exactly once, as in a plain multi-task step. g is both the multi-task update and the
    look-ahead's step.

    Args:
        net: the multi-task network.
        names, params: its trainable parameters (from :func:`trainable`).
        x: images float ``[B, C, H, W]``.
        y: primary labels int64 ``[B]``.
        soft: the auxiliary targets float ``[B, K]`` (with their graph to θ2 only if the caller
            differentiates g with respect to θ2).
        loss_fn: ``loss(logits, target) -> scalar``.
        extra: optional L_x(params), added to the loss.
        create_graph: keep g's graph (the double-backward engines).

    Returns:
        ``(primary_logits [B, P], primary_loss, aux_loss, g)`` with g one tensor per parameter.
    """
    primary_logits, aux_logits = net(x)  # the real forward: BatchNorm statistics advance once
    primary_loss = loss_fn(primary_logits, y)
    aux_loss = loss_fn(aux_logits, soft)
    inner = primary_loss + aux_loss
    if extra is not None:
        inner = inner + extra(dict(zip(names, params)))
    # g = ∇θ1 (L_pri + L_aux [+ L_x]): the multi-task update and the look-ahead's step
    grads = torch.autograd.grad(inner, params, create_graph=create_graph)
    return primary_logits, primary_loss, aux_loss, grads


def unroll(
    call: Forward,
    names: list[str],
    fast: list[Tensor],
    y: Tensor,
    soft: Tensor,
    loss_fn: LossFn,
    extra: ExtraInnerLoss | None,
    alpha: float,
    steps: int,
) -> list[Tensor]:
    """``steps`` differentiable look-ahead steps from ``fast`` on one batch and one set of labels.

    θ1^(j+1) = θ1^(j) − α ∇θ1 (L_pri + L_aux(·, soft) [+ L_x])(θ1^(j)), each gradient taken with
    ``create_graph=True``, so the result is a function of θ2 through ``soft`` at every step (and of
    θ1^(0) = ``fast``). One step from θ1 is MAXL's look-ahead (Liu, Davison, Johns, NeurIPS 2019,
    Eq. 3); several are MAML's multi-step inner loop (Finn, Abbeel, Levine, ICML 2017, Sec. 2.2, Eq. 1).

    Args:
        call: the functional forward on the inner batch x (from :func:`functional_forward`).
        names: the trainable parameters' names (for ``extra``).
        fast: θ1^(0), one tensor per trainable parameter.
        y: primary labels int64 ``[B]``.
        soft: g(x, y; θ2), float ``[B, K]``, with its graph to θ2.
        loss_fn: ``loss(logits, target) -> scalar``.
        extra: optional L_x(params), added to the loss of every step.
        alpha: α, the step size.
        steps: how many steps (0 returns ``fast``).

    Returns:
        θ1^(steps), one tensor per parameter.
    """
    for _ in range(steps):
        inner = multitask_loss(call(fast), y, soft, loss_fn)
        if extra is not None:
            inner = inner + extra(dict(zip(names, fast)))
        grads = torch.autograd.grad(inner, fast, create_graph=True)
        fast = [p - alpha * g for p, g in zip(fast, grads)]  # θ1^(j+1) = θ1^(j) − α ∇θ1 (L_pri + L_aux [+ L_x])
    return fast


def lookahead_direction(
    call: Forward, theta: list[Tensor], inner_grads: Sequence[Tensor], y: Tensor, loss_fn: LossFn, cfg: MetaConfig
) -> tuple[Tensor, list[Tensor]]:
    """L_pri at θ1⁺ = θ1 − α g on the outer batch and v = ∇θ1⁺ L_pri(θ1⁺), both detached from θ2.

    The first-order and the ``"jvp"`` engines need no graph through g: v is the direction along
    which they differentiate the inner gradient (DARTS's d).

    Args:
        call: the functional forward on the outer batch x_o (from :func:`functional_forward`).
        theta: θ1, detached, one tensor per trainable parameter.
        inner_grads: g = ∇θ1 (L_pri + L_aux [+ L_x]) on the inner batch, same shapes.
        y: the outer batch's primary labels y_o int64 ``[B']``.
        loss_fn: ``loss(logits, target) -> scalar``.
        cfg: supplies α (``inner_lr``).

    Returns:
        ``(L_pri(θ1⁺) detached scalar, v)``, v zero for parameters L_pri does not use (the
        auxiliary head).
    """
    assert cfg.inner_lr is not None, "inner_lr None is set to the learning rate before a meta step"
    fast = [(t - cfg.inner_lr * gi).requires_grad_() for t, gi in zip(theta, inner_grads)]  # θ1⁺
    return primary_gradient(call, fast, y, loss_fn)


def primary_gradient(call: Forward, params: list[Tensor], y: Tensor, loss_fn: LossFn) -> tuple[Tensor, list[Tensor]]:
    """L_pri(f(x; params), y) and its gradient with respect to ``params`` (tensors that require grad).

    Args:
        call: the functional forward on the batch x (from :func:`functional_forward`).
        params: one tensor per trainable parameter, requiring grad.
        y: primary labels int64 ``[B]``.
        loss_fn: ``loss(logits, target) -> scalar``.

    Returns:
        ``(loss, detached scalar; gradient)``, zero for parameters L_pri does not use (the auxiliary head).
    """
    with torch.enable_grad():
        loss = loss_fn(call(params)[0], y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), zeros_for_unused(grads, params)


def zeros_for_unused(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor]:
    """``grads`` of ``torch.autograd.grad(..., allow_unused=True)``, zeros where it gave None."""
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]
