"""Auxiliary tasks for maxl's trainer and command line (``maxl train --aux rotation ...``).

:func:`build_learner` puts a :class:`maxl.MultiTaskNetwork`'s backbone and primary head, the
method's own auxiliary head (MAXL's generated labels or fixed human labels) and the requested
self-supervised tasks into one :class:`auxtasks.AuxiliaryLearner`. The network's modules are
shared, not copied, so the trainer's evaluation of ``net`` sees what the learner trains.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from auxtasks.colourisation import Colourisation
from auxtasks.generated import GeneratedLabels
from auxtasks.learner import AuxiliaryLearner
from auxtasks.rotation import Rotation
from auxtasks.supervised import SupervisedLabels
from auxtasks.task import AuxiliaryTask
from auxtasks.weighting import WEIGHTINGS, Fixed, Weighting
from auxtasks.weighting import weighting_options as weighting_options_of
from maxl.meta import MetaConfig, ObjectiveConfig
from maxl.nn.networks import MultiTaskNetwork
from maxl.train.config import FIXED_LABEL_METHODS as _FIXED_LABEL_METHODS

__all__ = ["TASK_NAMES", "build_learner", "dataset_normalisation", "normalised_images"]

#: Self-supervised tasks by their command-line name.
TASK_NAMES = ("rotation", "colourisation")


def dataset_normalisation(dataset) -> tuple[list[float], list[float]]:
    """Per-channel ``(mean, std)`` of the ``v2.Normalize`` in ``dataset.transform``, or
    ``([0], [1])`` if there is none (images in [0, 1])."""
    transform = getattr(dataset, "transform", None)
    for step in getattr(transform, "transforms", [transform]):
        if isinstance(step, v2.Normalize):
            return [float(m) for m in step.mean], [float(s) for s in step.std]
    return [0.0], [1.0]


def build_learner(
    net: MultiTaskNetwork,
    method: str,
    aux: Sequence[str] = (),
    weighting: str = "equal",
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    in_channels: int | None = None,
    image_size: int | None = None,
    normalisation: tuple[Sequence[float], Sequence[float]] = ((0.0,), (1.0,)),
    generator: nn.Module | None = None,
    aux_labels: Tensor | None = None,
    meta: MetaConfig | None = None,
    objective: ObjectiveConfig | None = None,
    aux_weights: Mapping[str, float] | None = None,
    weighting_options: Mapping[str, object] | None = None,
    rotation_mode: str = "all",
    colourisation_mode: str = "regression",
    prior_images: Tensor | None = None,
    hidden: int = 512,
) -> AuxiliaryLearner:
    """The learner of one ``maxl train`` run.

    Args:
        net: the :class:`maxl.MultiTaskNetwork` (its ``aux_head`` serves the method's labels).
        method: ``"single"``, ``"maxl"`` or a fixed-label method (``"human"``, ...).
        aux: names from :data:`TASK_NAMES`.
        weighting: a key of :data:`auxtasks.weighting.WEIGHTINGS`; must be ``"equal"`` with ``aux_weights``.
        loss_fn: the loss of the primary task and of the method's auxiliary head.
        in_channels, image_size: of the data set's images.
        normalisation: per-channel ``(mean, std)`` of the images (for colourisation and the colour
            view of MAXL's consistency term).
        generator: the label-generation network (``maxl``).
        aux_labels: int64 ``[N_train]`` fixed auxiliary labels (fixed-label methods).
        meta: the meta-gradient's settings (``maxl``).
        objective: the terms of the generator's objective J (``maxl``).
        aux_weights: fixed weights by task name (the method's task is named after the method).
        weighting_options: the weighting's hyperparameters by name (its ``OPTIONS``; values as
            text or numbers).
        rotation_mode, colourisation_mode: see :class:`Rotation` and :class:`Colourisation`.
        prior_images: normalised training images for the colour prior of the classification mode.
        hidden: hidden width of the new heads.

    Raises:
        ImportError: a weighting of the optional extra ``mtl`` without it (with the pip line).
        ValueError: an unknown task or weighting or option of it, a task named twice, colourisation on
            images that are not RGB, a method without what it needs.
    """
    tasks: list[AuxiliaryTask] = []
    if method != "single" and getattr(net, "aux_head", None) is None:
        raise ValueError(f"method {method!r} needs a multi-task network with an auxiliary head")
    if method == "maxl":
        if generator is None:
            raise ValueError("method 'maxl' needs a label-generation network (generator=)")
        tasks.append(
            GeneratedLabels(
                generator,
                meta=meta,
                objective=objective,
                loss_fn=loss_fn,
                head=net.aux_head,
                name="maxl",
                normalisation=normalisation,
            )
        )
    elif method in _FIXED_LABEL_METHODS:
        if aux_labels is None:
            raise ValueError(f"method {method!r} needs fixed auxiliary labels (aux_labels=)")
        assert net.num_aux is not None, "the auxiliary head's class count: its last layer is not a Linear"
        tasks.append(SupervisedLabels(net.num_aux, aux_labels, loss_fn=loss_fn, head=net.aux_head, name=method))
    elif method != "single":
        raise ValueError(f"unknown method {method!r}")
    if len(set(aux)) != len(aux):
        raise ValueError(f"auxiliary tasks named twice: {list(aux)}")
    for name in aux:
        if name == "rotation":
            tasks.append(Rotation(rotation_mode, hidden))
        elif name == "colourisation":
            if in_channels != 3:
                raise ValueError(
                    f"auxiliary task 'colourisation' needs RGB images, but this data set has "
                    f"{in_channels} channel(s); use it with cifar10, cifar100 or an RGB imagefolder"
                )
            assert image_size is not None, "colourisation needs image_size="
            mean, std = normalisation
            task = Colourisation(
                colourisation_mode,
                target_size=max(1, image_size // 4),
                mean=mean if len(mean) == 3 else mean[0],
                std=std if len(std) == 3 else std[0],
            )
            if colourisation_mode == "classification":
                if prior_images is None:
                    raise ValueError("colourisation in classification mode needs training images for its colour prior")
                task.estimate_prior(prior_images)
            tasks.append(task)
        else:
            raise ValueError(f"unknown auxiliary task {name!r}; expected one of {TASK_NAMES}")
    if aux_weights:
        if weighting != "equal":
            raise ValueError(f"fixed weights {dict(aux_weights)} cannot be combined with the weighting {weighting!r}")
        if weighting_options:
            raise ValueError(f"fixed weights take no weighting options, got {dict(weighting_options)}")
        chosen: Weighting = Fixed(aux_weights)
    elif weighting in WEIGHTINGS:
        chosen = WEIGHTINGS[weighting](**weighting_options_of(WEIGHTINGS[weighting], weighting_options or {}))
    else:
        raise ValueError(f"unknown weighting {weighting!r}; expected one of {sorted(WEIGHTINGS)}")
    return AuxiliaryLearner.from_multitask_network(net, tasks, chosen, primary_loss=loss_fn)


def normalised_images(dataset, limit: int = 10000) -> Tensor | None:
    """Up to ``limit`` training images of an in-memory maxl data set, normalised as the network
    sees them (no augmentation), or None if the data set keeps no image tensor."""
    images = getattr(dataset, "images", None)
    if images is None:
        return None
    mean, std = dataset_normalisation(dataset)
    keep = torch.linspace(0, len(images) - 1, min(limit, len(images))).round().long()  # spread over all classes
    x = images[keep].float() / 255
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
