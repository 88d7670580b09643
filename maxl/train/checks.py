"""Checks that stop a run early and say why: data that does not fit the networks, labels
out of range, NaN/Inf losses, gradients and parameters.

Every check raises with a message naming the bad value, where it is and what was expected;
nothing prints and continues.
"""

from __future__ import annotations

from collections.abc import Iterable, Sized
from typing import cast

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from maxl.core.hierarchy import Hierarchy
from maxl.train import distributed

__all__ = [
    "NonFiniteLossError",
    "NonFiniteGradientError",
    "FiniteChecks",
    "check_data",
    "check_primary_labels",
    "check_aux_labels",
]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or Inf; the message names the loss, the epoch and the step."""


class NonFiniteGradientError(FloatingPointError):
    """A gradient (or, at the end of an epoch, a parameter) became NaN or Inf; the message
    names the parameter, the network, the epoch and the step."""


class FiniteChecks:
    """NaN/Inf checks of the losses, gradients and parameters of a run.

    Args:
        where: a callable returning ``(epoch, step)`` (1-based) for the messages.
    """

    def __init__(self, where):
        self.where = where

    def losses(self, **losses: Tensor) -> None:
        """Raise :class:`NonFiniteLossError` if any named scalar loss is NaN/Inf (under
        torchrun: on any process, so that every process stops at the same step)."""
        place = ""
        if distributed.world_size() > 1:
            values = torch.stack([v.detach().float() for v in losses.values()])
            distributed.all_reduce_mean_([values])
            losses = dict(zip(losses, values))
            place = f" on at least one of the {distributed.world_size()} processes"
        epoch, step = self.where()
        for name, value in losses.items():
            if not torch.isfinite(value):
                raise NonFiniteLossError(
                    f"{name} became {value.item()} at epoch {epoch}, step {step}{place}; try a smaller learning rate"
                )

    def grads(self, named_grads: Iterable[tuple[str, Tensor | None]], network: str) -> None:
        """Raise :class:`NonFiniteGradientError` naming the first parameter whose gradient
        holds NaN/Inf (one reduction and one host sync when all is well)."""
        present = [(n, g) for n, g in named_grads if g is not None]
        if not present:
            return
        if torch.isfinite(torch.stack([torch.linalg.vector_norm(g.detach()) for _, g in present]).sum()):
            return
        epoch, step = self.where()
        for name, g in present:
            if not torch.isfinite(g).all():
                raise NonFiniteGradientError(
                    f"the gradient of {name} of the {network} became non-finite "
                    f"({int((~torch.isfinite(g)).sum())} of {g.numel()} entries NaN/Inf) at epoch {epoch}, "
                    f"step {step}, although the losses were finite; try a smaller learning rate"
                )

    def parameters(self, networks: dict[str, nn.Module | None]) -> None:
        """Raise :class:`NonFiniteGradientError` if a parameter of ``{name: module}`` is NaN/Inf."""
        epoch, _ = self.where()
        for network, module in networks.items():
            for name, p in module.named_parameters() if module is not None else ():
                if not torch.isfinite(p).all():
                    raise NonFiniteGradientError(
                        f"parameter {name} of the {network} became non-finite in epoch "
                        f"{epoch}; the checkpoint of the previous epoch is kept"
                    )


def check_primary_labels(y: Tensor, num_primary: int | None) -> None:
    """Raise ValueError if a primary label of a training batch is outside ``[0, num_primary)``."""
    if num_primary is not None and len(y) and (y.min() < 0 or y.max() >= num_primary):
        bad = y[(y < 0) | (y >= num_primary)][0].item()
        raise ValueError(
            f"primary label {bad} in a training batch is out of range: the network has "
            f"{num_primary} primary classes (labels 0..{num_primary - 1})"
        )


def check_data(
    net: nn.Module, generator: nn.Module | None, train_set: Dataset, test_set: Dataset, device: torch.device
) -> None:
    """Fail at start-up, not mid-epoch, on images or labels that do not fit the networks.

    Raises:
        ValueError: an empty split, a primary label out of range, a sample that is not a float
            image ``[C, H, W]``, or images the networks cannot take (the message names which).
    """
    num_primary = getattr(net, "num_primary", None)
    for split, dataset in (("training", train_set), ("test", test_set)):
        if len(cast(Sized, dataset)) == 0:  # cast: a map-style data set has a length
            raise ValueError(f"the {split} set is empty")
        labels = getattr(dataset, "labels", None)
        if num_primary is not None and isinstance(labels, Tensor) and len(labels):
            bad = ((labels < 0) | (labels >= num_primary)).nonzero().flatten()
            if len(bad):
                raise ValueError(
                    f"{split} sample {int(bad[0])} has primary label {int(labels[bad[0]])}, but the network "
                    f"has {num_primary} primary classes (labels 0..{num_primary - 1}); {len(bad)} of "
                    f"{len(labels)} labels are out of range"
                )
        with torch.random.fork_rng(devices=[]):  # an augmenting transform draws random numbers
            image = dataset[0][0]
        if not isinstance(image, Tensor) or image.ndim != 3 or not image.dtype.is_floating_point:
            raise ValueError(
                f"{split} sample 0 must be a float image [C, H, W], got "
                f"{getattr(image, 'dtype', type(image).__name__)} {tuple(getattr(image, 'shape', ()))}"
            )
        for name, module in (("multi-task network", net), ("label-generation network", generator)):
            if module is not None:
                _check_takes(module, name, image, split, device, is_generator=module is generator)


def _check_takes(
    module: nn.Module, name: str, image: Tensor, split: str, device: torch.device, is_generator: bool
) -> None:
    was_training = module.training
    module.eval()  # no BatchNorm statistics are touched
    x = image[None].to(device)  # [1, C, H, W]
    try:
        with torch.no_grad():
            module(x, torch.zeros(1, dtype=torch.long, device=device)) if is_generator else module(x)
    except (ValueError, RuntimeError) as err:
        raise ValueError(
            f"the {name} cannot take the {split} images, of shape {list(image.shape)} [C, H, W]: {err}"
        ) from err
    finally:
        module.train(was_training)


def check_aux_labels(aux: Tensor, train_set: Dataset, num_aux: int | None, psi: Hierarchy | list[int] | None) -> None:
    """Fixed auxiliary labels: one integer per training image, in range, inside its ψ block.

    Raises:
        ValueError: wrong dtype or length, a label out of range, or outside its image's block.
    """
    n_train = len(cast(Sized, train_set))  # cast: a map-style data set has a length
    if aux.dtype.is_floating_point or aux.dtype == torch.bool or aux.ndim != 1 or len(aux) != n_train:
        raise ValueError(
            f"aux_labels must be integers [N_train] = [{n_train}], one per training image; "
            f"got {aux.dtype} {list(aux.shape)}"
        )
    if num_aux is not None and len(aux) and (aux.min() < 0 or aux.max() >= num_aux):
        bad = aux[(aux < 0) | (aux >= num_aux)][0].item()
        raise ValueError(
            f"auxiliary label {bad} is out of range: the auxiliary head has {num_aux} classes (labels 0..{num_aux - 1})"
        )
    labels = getattr(train_set, "labels", None)
    if psi is not None and isinstance(labels, Tensor):
        hierarchy = psi if isinstance(psi, Hierarchy) else Hierarchy(psi)
        hierarchy.check_aux_labels(aux.cpu(), labels.cpu())
