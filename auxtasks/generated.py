"""MAXL's generated labels as an auxiliary task.

A label-generation network g(θ2) gives every image a soft auxiliary label inside the block
of its primary class (the hierarchy-masked softmax); the shared network learns to predict it.
θ2 is not trained by this task's loss but by MAXL's meta-gradient: the primary loss after
a look-ahead step of the shared network, through that step back to the labels
(:func:`maxl.meta.meta_gradient`). :meth:`auxtasks.AuxiliaryLearner.meta_step` runs it, with
the other auxiliary tasks of the learner in the look-ahead when ``lookahead_other_tasks``.

References:
    Liu, Davison, Johns. "Self-Supervised Generalisation with Meta Auxiliary Learning".
    NeurIPS 2019, arXiv:1901.08933, Sec. 3, Eq. 3–4, Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from maxl.core.heads import mlp_head
from maxl.core.losses import focal_loss
from maxl.meta import MetaConfig, ObjectiveConfig
from maxl.meta.lookahead import generated_targets
from maxl.nn.networks import LabelGenerator

from .task import AuxiliaryTask

__all__ = ["GeneratedLabels", "random_flip_shift", "random_colour", "random_rotation"]


def random_flip_shift(images: Tensor, shift: int = 4, flip: bool = True) -> Tensor:
    """Another view of each image: a random horizontal flip (if ``flip``) and a random translation
    by up to ``shift`` pixels (reflect padding), drawn per image from torch's generator.

    Args:
        images: float ``[B, C, H, W]``.
        shift: the largest translation in pixels, per axis.
        flip: flip half of the images (False for data whose classes a mirror image changes,
            such as digits).

    Returns:
        float ``[B, C, H, W]``.
    """
    b, _, h, w = images.shape
    views = images
    if flip:
        flipped = torch.rand(b, device=images.device) < 0.5
        views = torch.where(flipped[:, None, None, None], images.flip(3), images)
    padded = torch.nn.functional.pad(views, (shift,) * 4, mode="reflect")
    dx, dy = torch.randint(0, 2 * shift + 1, (2, b)).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


def _per_channel(images: Tensor, mean, std) -> tuple[Tensor, Tensor]:
    """The normalisation's ``mean`` and ``std`` (sequences of C or 1 floats) as ``[1, C, 1, 1]``
    tensors of ``images``' dtype and device: pixels = images · std + mean."""

    def shaped(values):
        return torch.as_tensor(values, dtype=images.dtype, device=images.device).reshape(1, -1, 1, 1)

    return shaped(mean), shaped(std)


def random_colour(images: Tensor, strength: float, mean, std, grayscale_p: float = 0.2) -> Tensor:
    """Another view of each image with other colours: per image, a random brightness, contrast and
    saturation factor in [1 − s, 1 + s] applied in that order, then grayscale with probability
    ``grayscale_p``, on the pixels in [0, 1] (un-normalised by ``mean``, ``std``, clamped after each
    step and normalised again), with torchvision's formulas for float images (ColorJitter without
    hue, RandomGrayscale). Colour is then not what two views share, so a view-consistent label
    has to follow shape and texture (the colour distortion of SimCLR, Chen et al., ICML 2020, Sec. 3).

    Args:
        images: normalised images float ``[B, C, H, W]``, C = 1 (brightness and contrast only) or 3.
        strength: s in [0, 1); 0 returns ``images``.
        mean, std: the per-channel normalisation, sequences of C (or 1) floats.
        grayscale_p: probability of the grayscale step (RGB only).

    Returns:
        float ``[B, C, H, W]``, normalised like ``images``.

    Raises:
        ValueError: ``strength`` outside [0, 1), or C not 1 or 3.
    """
    from torchvision.transforms.v2.functional import rgb_to_grayscale

    if not 0 <= strength < 1:
        raise ValueError(f"colour strength must be in [0, 1), got {strength}")
    b, c = images.shape[:2]
    if c not in (1, 3):
        raise ValueError(f"random_colour needs 1 or 3 channels, got {c}")
    if not strength:
        return images
    mean, std = _per_channel(images, mean, std)
    pixels = images * std + mean
    factors = 1 + strength * (2 * torch.rand(3, b, 1, 1, 1, dtype=images.dtype, device=images.device) - 1)

    def gray(x):
        return rgb_to_grayscale(x) if c == 3 else x

    pixels = (pixels * factors[0]).clamp(0, 1)  # brightness: a blend with black
    level = gray(pixels).mean(dim=(1, 2, 3), keepdim=True)
    pixels = (level + factors[1] * (pixels - level)).clamp(0, 1)  # contrast: a blend with the mean grey level
    if c == 3:
        g = gray(pixels)
        pixels = (g + factors[2] * (pixels - g)).clamp(0, 1)  # saturation: a blend with the grey image
        to_gray = torch.rand(b, 1, 1, 1, device=images.device) < grayscale_p
        pixels = torch.where(to_gray, gray(pixels).expand_as(pixels), pixels)
    return (pixels - mean) / std


def random_rotation(images: Tensor, degrees: float, mean, std) -> Tensor:
    """Another view of each image, rotated about its centre by an angle drawn uniformly from
    [−``degrees``, ``degrees``] per image (torchvision's ``rotate``, bilinear), on the pixels
    (un-normalised by ``mean``, ``std`` and normalised again), the corners black (pixel value 0).

    Args:
        images: normalised images float ``[B, C, H, W]``.
        degrees: the largest angle in degrees, in [0, 180]; 0 returns ``images``.
        mean, std: the per-channel normalisation, sequences of C (or 1) floats.

    Returns:
        float ``[B, C, H, W]``.

    Raises:
        ValueError: ``degrees`` outside [0, 180].
    """
    from torchvision.transforms.v2.functional import InterpolationMode, rotate

    if not 0 <= degrees <= 180:
        raise ValueError(f"rotation must be in [0, 180] degrees, got {degrees}")
    if not degrees:
        return images
    mean, std = _per_channel(images, mean, std)
    angles = (degrees * (2 * torch.rand(len(images), dtype=torch.float64) - 1)).tolist()
    rotated = torch.stack(
        [rotate(pixels, angle, InterpolationMode.BILINEAR) for pixels, angle in zip(images * std + mean, angles)]
    )
    return (rotated - mean) / std


class GeneratedLabels(AuxiliaryTask):
    """Predict the soft labels of MAXL's label-generation network.

    Args:
        generator: the label-generation network, ``generator(x, y) -> [B, sum(ψ)]`` soft
            labels (a :class:`maxl.LabelGenerator`). It must not share weights with the
            learner's backbone.
        meta: settings of the meta-gradient (look-ahead step α, order, engine); default
            :class:`maxl.MetaConfig` (α = 0.01, exact second order).
        objective: the terms of the generator's objective J (entropy weight λ, ...; the views of
            the view-consistency term); default :class:`maxl.ObjectiveConfig` (the paper's J,
            λ = 0.2).
        loss_fn: ``loss(logits [B, K], soft [B, K]) -> scalar`` of the auxiliary head, also
            used for the primary loss of the meta objective; default the focal loss with γ = 2
            of the MAXL reference code.
        lookahead_other_tasks: put the learner's other auxiliary tasks into the look-ahead
            step (θ1⁺ = θ1 − α∇(L_pri + L_gen + Σ L_other)), so that the step the generator
            plans for is the step the shared network takes. Costs a pass of each other task
            in the look-ahead. False gives MAXL's look-ahead on L_pri + L_gen alone.
        hidden: width of the head's hidden layer.
        name: key of the loss (default ``"generated"``).
        head: a ready head producing ``sum(ψ)`` logits (e.g. a ``MultiTaskNetwork``'s ``aux_head``).
        normalisation: the images' per-channel ``(mean, std)``, needed when
            ``objective.consistency_colour`` > 0 (the colour view works on pixels in [0, 1]) or
            ``objective.consistency_rotation`` > 0 (black corners).

    Raises:
        ValueError: ``generator`` is not a module, or a colour or rotation view without
            ``normalisation``.

    Notes:
        The generator's parameters never keep a ``.grad`` outside ``meta_step``, so an
        optimiser built on all of the learner's parameters leaves them alone; give the
        generator its own optimiser (MAXL: SGD, lr 1e-3, weight decay 5e-4).

    References:
        Liu, Davison, Johns. NeurIPS 2019, arXiv:1901.08933.
    """

    name = "generated"

    def __init__(
        self,
        generator: nn.Module,
        *,
        meta: MetaConfig | None = None,
        objective: ObjectiveConfig | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = focal_loss,
        lookahead_other_tasks: bool = True,
        hidden: int = 512,
        name: str | None = None,
        head: nn.Module | None = None,
        normalisation: tuple | None = None,
    ):
        super().__init__(name, head)
        if not isinstance(generator, nn.Module):
            raise ValueError(f"generator must be an nn.Module (a maxl.LabelGenerator), got {type(generator).__name__}")
        self.generator = generator
        self.meta = meta if meta is not None else MetaConfig()
        self.objective = objective if objective is not None else ObjectiveConfig()
        self.loss_fn = loss_fn
        self.lookahead_other_tasks = lookahead_other_tasks
        self.hidden = hidden
        self.graph_checked = False  # the double-backward graph walk runs on the first meta step only
        if (self.objective.consistency_colour or self.objective.consistency_rotation) and normalisation is None:
            raise ValueError(
                "objective.consistency_colour > 0 or objective.consistency_rotation > 0 needs the images' "
                "normalisation=(mean, std)"
            )
        self.normalisation = normalisation

    def second_view(self, images: Tensor, primary_labels: Tensor) -> Callable[[], Tensor] | None:
        """The second view of the ``"view-consistency"`` term of J (:mod:`maxl.meta.objective`):
        draws x′ from ``images`` float ``[B, C, H, W]`` now (:func:`random_flip_shift`, then
        :func:`random_rotation` by up to ``objective.consistency_rotation`` degrees and
        :func:`random_colour` of strength ``objective.consistency_colour`` if > 0) and returns
        ``() -> g(x′, y)`` float ``[B, K]``, which runs the generator when the term is taken; None
        when ``objective.consistency_weight`` is 0 (no view is drawn)."""
        o = self.objective
        if not o.consistency_weight:
            return None
        views = random_flip_shift(images, flip=o.consistency_flip) if images.shape[-1] >= 8 else images.flip(3)
        if o.consistency_rotation:
            assert self.normalisation is not None  # __init__ requires it with a rotation view
            views = random_rotation(views, o.consistency_rotation, *self.normalisation)
        if o.consistency_colour:
            assert self.normalisation is not None  # __init__ requires it with a colour view
            views = random_colour(views, o.consistency_colour, *self.normalisation)
        return lambda: self.generator(views, primary_labels)

    def make_inputs_and_targets(self, images, primary_labels, *, index=None, target=None):
        """``(images, targets float [B, sum(ψ)])``: the generator's current labels (no gradient to
        θ2), each scaled by its image's weight for a generator with per-image weights (WAMAL), or
        a hard one-hot sample of it for a generator with ``gumbel_tau`` > 0 in training mode
        (:func:`maxl.meta.lookahead.generated_targets`), or ``target`` if the caller made them already."""
        if target is not None:
            return images, target
        with torch.no_grad():
            return images, generated_targets(self.generator, images, primary_labels)[1]

    def build_head(self, feature_dim: int) -> nn.Module:
        """``Linear(F, hidden) → ReLU → Linear(hidden, sum(ψ))``.

        Raises:
            ValueError: the generator is not a :class:`maxl.LabelGenerator` (its number of
                classes is unknown: pass ``head=``).
        """
        if not isinstance(self.generator, LabelGenerator):
            raise ValueError(
                f"cannot tell the number of generated classes of a {type(self.generator).__name__}: "
                "pass head= (a module producing sum(psi) logits)"
            )
        return mlp_head(feature_dim, self.generator.hierarchy.num_aux, self.hidden)

    def loss(self, predictions: Tensor, targets: Tensor) -> Tensor:
        return self.loss_fn(predictions, targets)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, lookahead_other_tasks={self.lookahead_other_tasks}"
