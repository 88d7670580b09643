"""The learner: a user's backbone and primary head, a list of auxiliary tasks and a weighting.

It replaces the two lines ``logits = net(x); loss = criterion(logits, y)`` of a training loop
and returns the total loss and every task's loss; ``learner.backward(out)`` replaces
``loss.backward()`` so that weightings acting on gradients (GradNorm, PCGrad, gradient
similarity) can do their work. Nothing here depends on the backbone, the data set or maxl's
trainer::

    model = AuxiliaryLearner(backbone, head, [Rotation(), Colourisation()], Uncertainty())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in loader:
        out = model(x, y)                       # out.loss, out.losses["rotation"], ...
        opt.zero_grad(); model.backward(out); opt.step()

MAXL's generated labels (:class:`auxtasks.GeneratedLabels`) need one more call per step or
per pass, ``model.meta_step(x, y, gen_optimizer)``: the label-generation network's update by
the meta-gradient of the primary loss through a look-ahead step of the shared network.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from maxl.meta import FusedResult, MetaResult, fused_step, meta_gradient, supports_fused
from maxl.nn.networks import MultiTaskNetwork

from .generated import GeneratedLabels
from .task import LIKELIHOODS, AuxiliaryTask
from .weighting import PRIMARY, Equal, Weighting

__all__ = [
    "AuxiliaryLearner",
    "AuxOutput",
    "frozen_running_stats",
    "step_with",
    "feature_size_of",
    "FEATURE_SIZE_ATTRIBUTES",
    "LazyHeadsWarning",
]

#: The attributes a backbone may tell its feature size F by, read in this order: timm's
#: ``num_features`` (e.g. ``timm.create_model("resnet18", num_classes=0)``), then
#: ``feature_dim`` and ``out_features`` (maxl's backbones).
FEATURE_SIZE_ATTRIBUTES = ("num_features", "feature_dim", "out_features")


class LazyHeadsWarning(UserWarning):
    """The learner built auxiliary heads at its first batch, after an optimiser may have been
    made without their parameters."""


def feature_size_of(backbone: nn.Module) -> int | None:
    """The feature size F a backbone announces by one of :data:`FEATURE_SIZE_ATTRIBUTES` (the
    first that is a positive int), or None."""
    for name in FEATURE_SIZE_ATTRIBUTES:
        value = getattr(backbone, name, None)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) > 0:
            return int(value)
    return None


@dataclass
class AuxOutput:
    """What :meth:`AuxiliaryLearner.forward` returns.

    Attributes:
        loss: the weighted total, a scalar (what the update minimises for loss weightings;
            for gradient weightings ``Σ_i w_i L_i`` as logged, their update differs).
        losses: every task's own loss, ``{"primary": L_0, "rotation": L_1, ...}``, scalars
            with their graphs.
        weights: the weight of every task's loss at this step (floats, for logging).
        primary_logits: float ``[B, P]``, the primary head's output on the batch.
        targets: every auxiliary task's targets on the batch, ``{name: targets}`` (detached;
            e.g. the generated soft labels ``[B, K]`` that the auxiliary head learnt from).
        penalty: the architecture's term of the loss (soft sharing's tie), included in
            ``loss``; None without one.
        features: the backbone's output on the batch (with its graph), the shared
            representation of MGDA-UB.
    """

    loss: Tensor
    losses: dict[str, Tensor]
    weights: dict[str, float]
    primary_logits: Tensor
    targets: dict[str, Tensor] = field(default_factory=dict)
    penalty: Tensor | None = None
    features: Tensor | None = None


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Inside, BatchNorm layers in training mode normalise with the batch's statistics but
    leave their running statistics unchanged (momentum 0; the batch counter is restored)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 − 0)·running + 0·batch
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            if count is not None and m.num_batches_tracked is not None:  # count: saved where there is one
                m.num_batches_tracked.copy_(count)


class AuxiliaryLearner(nn.Module):
    """A primary task with auxiliary tasks on a shared backbone.

    Args:
        backbone: the user's shared network, images ``[B, C, H, W]`` → features ``[B, F]``.
        primary_head: the user's primary head, features ``[B, F]`` → logits ``[B, P]``.
        tasks: the auxiliary tasks (:class:`auxtasks.AuxiliaryTask`), with distinct names;
            their heads are built here for features of size F where F is known (``feature_dim``
            or an attribute of the backbone, see :data:`FEATURE_SIZE_ATTRIBUTES`), otherwise by
            :meth:`materialize` (a dry forward of an example batch) or, failing that, at the
            first batch the learner sees (with a :class:`LazyHeadsWarning`: an optimiser made
            before then lacks those heads' parameters).
        weighting: a :class:`auxtasks.weighting.Weighting`; default equal weights. It is
            bound to the tasks here, so build the optimiser after the learner.
        primary_loss: ``loss(logits [B, P], labels [B]) -> scalar``; default cross-entropy.
        feature_dim: F, which overrides the backbone's attributes; None: read them, or find F
            by a dry forward (:meth:`materialize`).
        aux_batchnorm_stats: let the auxiliary tasks' own inputs (rotated, grey images) update
            the backbone's BatchNorm running statistics. Default False: those inputs are
            normalised with their own batch statistics, but the running statistics, which the
            primary task is evaluated with, follow the primary images only.

    Raises:
        ValueError: tasks with the same name or the name ``"primary"``, more than one
            :class:`GeneratedLabels`, a ``feature_dim`` that is not a positive int, an unknown
            likelihood, a weighting that is not a :class:`auxtasks.weighting.Weighting`.

    Example (a backbone that tells nothing of its feature size)::

        model = AuxiliaryLearner(nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten()), head, [Rotation()])
        model.materialize(next(iter(loader))[0])     # finds F, builds the rotation head
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
    """

    def __init__(
        self,
        backbone: nn.Module,
        primary_head: nn.Module,
        tasks: Sequence[AuxiliaryTask] = (),
        weighting: Weighting | None = None,
        *,
        primary_loss=None,
        feature_dim: int | None = None,
        aux_batchnorm_stats: bool = False,
    ):
        super().__init__()
        tasks = list(tasks)
        for task in tasks:
            if not isinstance(task, AuxiliaryTask):
                raise ValueError(f"tasks must be auxtasks.AuxiliaryTask objects, got {type(task).__name__}")
            if task.likelihood not in LIKELIHOODS:
                raise ValueError(
                    f"task {task.name!r} has likelihood {task.likelihood!r}; expected one of {LIKELIHOODS}"
                )
        names = [t.name for t in tasks]
        if len(set(names)) != len(names) or PRIMARY in names:
            raise ValueError(
                f"auxiliary task names must be distinct and not {PRIMARY!r}, got {names}; "
                "pass name= to tell two tasks of one kind apart"
            )
        if weighting is not None and not isinstance(weighting, Weighting):
            raise ValueError(f"weighting must be an auxtasks.weighting.Weighting, got {type(weighting).__name__}")
        if sum(isinstance(t, GeneratedLabels) for t in tasks) > 1:
            raise ValueError("at most one GeneratedLabels task per learner (one label-generation network)")
        if feature_dim is not None and (
            not isinstance(feature_dim, numbers.Integral) or isinstance(feature_dim, bool) or feature_dim < 1
        ):
            raise ValueError(f"feature_dim must be a positive int (the backbone's feature size), got {feature_dim!r}")
        dim = int(feature_dim) if feature_dim is not None else feature_size_of(backbone)
        self.backbone, self.primary_head = backbone, primary_head
        if dim is not None:
            for task in tasks:
                task.attach(dim)
        #: F, the size of the backbone's features; None until :meth:`materialize` finds it.
        self.feature_dim = dim
        self.tasks = nn.ModuleList(tasks)
        self.weighting = weighting if weighting is not None else Equal()
        self.weighting.bind([PRIMARY, *names], {t.name: t.likelihood for t in tasks})
        self.primary_loss = primary_loss if primary_loss is not None else F.cross_entropy
        self.aux_batchnorm_stats = aux_batchnorm_stats

    @classmethod
    def from_multitask_network(
        cls, net: MultiTaskNetwork, tasks: Sequence[AuxiliaryTask] = (), weighting: Weighting | None = None, **kwargs
    ) -> AuxiliaryLearner:
        """A learner on a :class:`maxl.MultiTaskNetwork`'s backbone and primary head (shared,
        not copied), so that ``net`` still evaluates the primary task. ``kwargs`` go to the
        constructor."""
        return cls(net.backbone, net.primary_head, tasks, weighting, **kwargs)

    # ------------------------------------------------------------------ parameters
    @property
    def _task_list(self) -> Sequence[AuxiliaryTask]:
        """:attr:`tasks` as what it holds."""
        # cast: __init__ checks that every task is an AuxiliaryTask; nn.ModuleList's items are typed nn.Module
        return cast("Sequence[AuxiliaryTask]", self.tasks)

    @property
    def task_names(self) -> tuple[str, ...]:
        """``("primary", aux task names...)``, the keys of :attr:`AuxOutput.losses`."""
        return (PRIMARY, *(t.name for t in self._task_list))

    @property
    def generated(self) -> GeneratedLabels | None:
        """The :class:`GeneratedLabels` task, if the learner has one."""
        return next((t for t in self._task_list if isinstance(t, GeneratedLabels)), None)

    @property
    def pending_tasks(self) -> tuple[str, ...]:
        """Names of the tasks whose heads wait for the feature size (see :meth:`materialize`)."""
        return tuple(t.name for t in self._task_list if t.head is None)

    def _size_error(self, reason: str) -> str:
        return (
            f"cannot tell the feature size of backbone {type(self.backbone).__name__}: {reason}. Give it a "
            f"{' / '.join(f'`{a}`' for a in FEATURE_SIZE_ATTRIBUTES)} attribute, pass feature_dim=, or call "
            "learner.materialize(images) with a batch the backbone accepts"
        )

    def _require_heads(self, what: str) -> None:
        pending = self.pending_tasks
        if pending:
            raise ValueError(
                f"{what} needs the heads of tasks {list(pending)}, which are not built yet: the feature "
                f"size of backbone {type(self.backbone).__name__} is unknown until a forward. Call "
                "learner.materialize(example_images) first (before making the optimiser), pass "
                f"feature_dim=, or give the backbone a "
                f"{' / '.join(f'`{a}`' for a in FEATURE_SIZE_ATTRIBUTES)} attribute"
            )

    @torch.no_grad()
    def materialize(self, example) -> int:
        """Find the feature size F by a dry forward of the backbone on an example batch and
        build the heads that wait for it, on the device of the features and in the dtype of
        the backbone's parameters. Call it before making the optimiser (and before wrapping
        the learner in ``DistributedDataParallel`` or loading a ``state_dict``), so that
        ``learner.parameters()`` holds the new heads.

        The forward runs under ``torch.no_grad()`` with the backbone in eval mode; afterwards
        every submodule's training flag and every buffer of the backbone (BatchNorm running
        statistics, batch counters) are what they were. With every head built already it only
        checks that the backbone's features still have size F.

        Args:
            example: images float ``[B, C, H, W]`` (B >= 1) that the backbone accepts, or a
                loader's batch ``(images, labels, ...)`` whose first element they are.

        Returns:
            F.

        Raises:
            ValueError: the backbone's forward fails on the batch, its output is not
                ``[B, F]``, or F differs from the size the heads were built for.
        """
        images = example[0] if isinstance(example, (tuple, list)) and example else example
        if not isinstance(images, Tensor):
            raise ValueError(
                f"materialize needs a batch of images (a tensor [B, C, H, W]), got {type(images).__name__}"
            )
        modes = [(m, m.training) for m in self.backbone.modules()]
        buffers = [(b, b.clone()) for b in self.backbone.buffers()]
        try:
            self.backbone.eval()
            features = self.backbone(images)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:  # the user's backbone: any error means the batch does not fit it
            raise ValueError(
                self._size_error(
                    f"its forward on a batch of shape {tuple(images.shape)} failed ({type(err).__name__}: {err})"
                )
            ) from err
        finally:
            for module, mode in modes:
                module.training = mode
            for buffer, saved in buffers:
                buffer.copy_(saved)
        if not isinstance(features, Tensor) or features.ndim != 2 or len(features) != len(images):
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(
                self._size_error(
                    f"its output on a batch of shape {tuple(images.shape)} is {shape}, "
                    "not features [B, F] (end it with pooling and a flatten, e.g. timm's "
                    "num_classes=0)"
                )
            )
        dim = features.shape[1]
        if self.feature_dim is not None and dim != self.feature_dim:
            raise ValueError(
                f"backbone {type(self.backbone).__name__} gives features of size {dim}, but the heads "
                f"were built for {self.feature_dim} (feature_dim= or the backbone's attribute)"
            )
        floating = [p.dtype for p in self.backbone.parameters() if p.is_floating_point()]
        dtype = floating[0] if floating else features.dtype
        for task in self._task_list:
            if task.head is None:
                task.attach(dim)
                # cast: attach() built the head (the type checker still holds it to the None tested above)
                cast(nn.Module, task.head).to(device=features.device, dtype=dtype)
        self.feature_dim = dim
        return dim

    def _materialize_at_first_batch(self, images: Tensor) -> None:
        pending = self.pending_tasks
        dim = self.materialize(images)
        warnings.warn(
            f"built the heads of tasks {list(pending)} for features of size {dim} at the first batch: an "
            "optimiser made before this call does not hold their parameters. Call "
            "learner.materialize(example_images) before making the optimiser (or pass feature_dim=)",
            LazyHeadsWarning,
            stacklevel=3,
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        """The backbone's trainable parameters (shared by all tasks)."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def task_parameters(self) -> list[nn.Parameter]:
        """The heads' trainable parameters (the primary head's and each task's).

        Raises:
            ValueError: heads not built yet (see :meth:`materialize`).
        """
        self._require_heads("task_parameters()")
        # _require_heads: no head is None
        heads = [self.primary_head, *(t.head for t in self._task_list if t.head is not None)]
        seen, out = set(), []
        for head in heads:
            for p in head.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def network_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter except the meta-parameters (backbone, heads, and the
        weighting's own if it trains with the network, e.g. uncertainty's log σ²): what the main
        optimiser trains.

        Raises:
            ValueError: heads not built yet (see :meth:`materialize`).
        """
        self._require_heads("network_parameters()")
        excluded = {id(p) for p in self.meta_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in excluded]

    def meta_parameters(self) -> list[nn.Parameter]:
        """The parameters learnt by an outer (meta) step, never by the main optimiser: the
        label-generation network's (MAXL, :meth:`meta_step`) and a meta-learned weighting's
        (Auto-λ's λ, :meth:`weight_step`)."""
        generator = self.generated.generator if self.generated is not None else None
        found = [p for p in generator.parameters() if p.requires_grad] if generator is not None else []
        seen = {id(p) for p in found}
        return found + [p for p in self.weighting.meta_parameters() if id(p) not in seen]

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Refuse a main optimiser that holds a meta-parameter (see :meth:`meta_parameters`).

        Raises:
            ValueError: naming the meta-parameters the optimiser holds; build it from
                :meth:`network_parameters` instead of ``parameters()``.
        """
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        meta = {id(q) for q in self.meta_parameters()}
        names = [n for n, p in self.named_parameters() if id(p) in held and id(p) in meta]
        if names:
            raise ValueError(
                f"the main optimiser holds the meta-parameters {names}, which only their own outer step may "
                "change: build it from learner.network_parameters(), not learner.parameters()"
            )

    # ------------------------------------------------------------------ forward / backward
    def _task_features(self, inputs: Tensor) -> Tensor:
        if self.aux_batchnorm_stats or not self.training:
            return self.backbone(inputs)
        with frozen_running_stats(self.backbone):
            return self.backbone(inputs)

    def forward(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        index: Tensor | None = None,
        aux_targets: Mapping[str, Tensor] | None = None,
    ) -> AuxOutput:
        """Losses of the primary task and of every auxiliary task on one batch.

        Args:
            images: float ``[B, C, H, W]``.
            labels: int64 ``[B]`` primary labels.
            index: int64 ``[B]`` positions of the samples in the training set, for tasks
                with a per-sample table (:class:`auxtasks.SupervisedLabels`).
            aux_targets: targets supplied with the batch, ``{task name: targets}``.

        Returns:
            :class:`AuxOutput`.

        Raises:
            ValueError: ``aux_targets`` names an unknown task; a task rejects the batch; heads
                still to build (see :meth:`materialize`, which runs here on the first batch with
                a :class:`LazyHeadsWarning`) and the backbone's output is not ``[B, F]``.
        """
        if self.pending_tasks:
            self._materialize_at_first_batch(images)
        aux_targets = dict(aux_targets or {})
        unknown = sorted(set(aux_targets) - set(self.task_names[1:]))
        if unknown:
            raise ValueError(f"aux_targets for unknown tasks {unknown}; the tasks are {list(self.task_names[1:])}")
        features = self.backbone(images)  # [B, F]
        primary_logits = self.primary_head(features)  # [B, P]
        losses = {PRIMARY: self.primary_loss(primary_logits, labels)}
        made, performance = {}, {PRIMARY: _accuracy(primary_logits, labels)}
        for task in self._task_list:
            inputs, targets = task.make_inputs_and_targets(
                images, labels, index=index, target=aux_targets.get(task.name)
            )
            task_features = features if inputs is images else self._task_features(inputs)
            outputs = task(task_features)
            losses[task.name] = task.loss(outputs, targets)
            made[task.name] = targets.detach()
            performance[task.name] = _accuracy(outputs, targets) if task.likelihood == "softmax" else None
        if self.weighting.uses_performance and self.training and torch.is_grad_enabled():
            self.weighting.observe(performance)  # e.g. DTP's moving averages of the accuracies
        total = self.weighting.combine(losses)
        penalty = self.penalty()
        if penalty is not None:
            total = total + penalty
        return AuxOutput(total, losses, self.weighting.weights(), primary_logits, made, penalty, features)

    def penalty(self) -> Tensor | None:
        """The architecture's term of the multi-task loss at the current parameters (soft
        sharing's tie, :meth:`maxl.nn.architectures.TaskTrunk.penalty`), or None."""
        penalty = getattr(self.backbone, "penalty", None)
        return penalty() if callable(penalty) else None

    def backward(self, out: AuxOutput) -> None:
        """Accumulate the update of ``out`` into the parameters' ``.grad`` (use it in place of
        ``out.loss.backward()``; gradient weightings combine the per-task gradients here)."""
        shared = self.shared_parameters()
        if out.penalty is not None and self.weighting.uses_gradients:  # the penalty's gradient joins the update
            torch.autograd.backward(out.penalty, inputs=shared, retain_graph=True)
        self.weighting.backward(out.losses, out.loss, shared, self.task_parameters(), representation=out.features)

    def predict(self, images: Tensor) -> Tensor:
        """Primary logits ``[B, P]`` of images ``[B, C, H, W]``."""
        return self.primary_head(self.backbone(images))

    def end_epoch(self) -> None:
        """Close an epoch for weightings with a loss history (DWA). Call once per epoch."""
        self.weighting.end_epoch()

    # ------------------------------------------------------------------ meta-learned weights
    def task_weight_problem(
        self,
        images: Tensor,
        labels: Tensor,
        held_out: tuple[Tensor, Tensor],
        *,
        index: Tensor | None = None,
        aux_targets: Mapping[str, Tensor] | None = None,
    ):
        """The closures of :func:`maxl.meta.task_weights.task_weight_gradient` for this learner.

        Every task's inputs and targets are made once here (a random rotation or the generator's
        labels stay the same at every call); each call runs the backbone and the heads by
        ``torch.func.functional_call`` on copies of the backbone's buffers, so that nothing of the
        learner changes. The architecture's penalty (soft sharing) is not in the look-ahead.

        Args:
            images: float ``[B, C, H, W]``, the training batch.
            labels: int64 ``[B]``, its primary labels.
            held_out: ``(x_v [B', C, H, W], y_v [B'])``, the batch of the outer (primary) loss.
            index, aux_targets: as for :meth:`forward`.

        Returns:
            ``(task_losses, outer_loss, params)``: ``task_losses(params) -> float [T]`` in the order
            of :attr:`task_names`, ``outer_loss(params) -> scalar`` the primary loss on
            ``held_out``, and ``params`` the network parameters by name (detached).
        """
        if self.pending_tasks:
            self._materialize_at_first_batch(images)
        targets = dict(aux_targets or {})
        prepared = [
            (i, task, *task.make_inputs_and_targets(images, labels, index=index, target=targets.get(task.name)))
            for i, task in enumerate(self._task_list)
        ]
        outer_loss, params = self.held_out_problem(held_out)
        buffers = dict(self.backbone.named_buffers())
        part = _part

        def features(params: dict[str, Tensor], inputs: Tensor) -> Tensor:  # [B, F], on fresh buffer copies
            state = {**{n: b.clone() for n, b in buffers.items()}, **part(params, "backbone.")}
            return functional_call(self.backbone, state, (inputs,))

        def task_losses(params: dict[str, Tensor]) -> Tensor:
            shared = features(params, images)
            logits = functional_call(self.primary_head, part(params, "primary_head."), (shared,))
            losses = [self.primary_loss(logits, labels)]
            for i, task, inputs, target in prepared:
                own = shared if inputs is images else features(params, inputs)
                losses.append(task.loss(functional_call(task, part(params, f"tasks.{i}."), (own,)), target))
            return torch.stack(losses)  # [T]

        return task_losses, outer_loss, params

    def _weight_parameters(self) -> dict[str, nn.Parameter]:
        """The network's trainable parameters by name, without the meta-parameters: the θ of the
        task weights' look-ahead."""
        meta = {id(p) for p in self.meta_parameters()}
        return {n: p for n, p in self.named_parameters() if p.requires_grad and id(p) not in meta}

    def held_out_problem(self, held_out: tuple[Tensor, Tensor]):
        """``(outer_loss, params)``: the primary loss on ``held_out = (x_v [B', C, H, W], y_v [B'])``
        as a function of the network parameters by name (``torch.func.functional_call`` on fresh
        copies of the backbone's buffers, so that nothing of the learner changes), and those
        parameters (detached). The outer loss of the task weights' look-ahead."""
        buffers = dict(self.backbone.named_buffers())
        params = {n: p.detach() for n, p in self._weight_parameters().items()}
        images, labels = held_out

        def outer_loss(params: dict[str, Tensor]) -> Tensor:
            state = {**{n: b.clone() for n, b in buffers.items()}, **_part(params, "backbone.")}
            features = functional_call(self.backbone, state, (images,))
            logits = functional_call(self.primary_head, _part(params, "primary_head."), (features,))
            return self.primary_loss(logits, labels)

        return outer_loss, params

    def task_gradients(self, out: AuxOutput) -> list[dict[str, Tensor | None]]:
        """g_i = ∇θ L_i(θ) of every task (:attr:`task_names` order) from the graph of ``out``, the
        real forward (:meth:`forward`), by one backward per task with the graph retained (tasks on
        their own inputs, such as rotation, backpropagate through their own part of the graph
        only). Each a dict over the network parameters by name, None where L_i does not use one
        (the meta-parameters are left out). The fused Auto-λ step's per-task gradients."""
        named = self._weight_parameters()
        tensors = list(named.values())
        grads: list[dict[str, Tensor | None]] = []
        for name in self.task_names:
            g = torch.autograd.grad(out.losses[name], tensors, retain_graph=True, allow_unused=True)
            grads.append({n: gi for n, gi in zip(named, g)})
        return grads

    def weight_step(
        self,
        images: Tensor,
        labels: Tensor,
        held_out: tuple[Tensor, Tensor] | None,
        *,
        alpha: float,
        index: Tensor | None = None,
    ):
        """One outer step of a meta-learned weighting (Auto-λ, OL-AUX, AuxiLearn): its weights
        learn from the primary loss on the held-out batch. Call it once per meta step, before
        the network's step on the same training batch.

        Args:
            images, labels: the training batch, ``[B, C, H, W]`` and ``[B]``.
            held_out: ``(x_v, y_v)``, a batch of images the network does not train on (None for a
                weighting that learns from the training batch, ``uses_held_out`` False: OL-AUX).
            alpha: the look-ahead's step size, the main optimiser's current learning rate.
            index: as for :meth:`forward`.

        Returns:
            What the weighting's ``meta_step`` returns (e.g. a
            :class:`maxl.meta.task_weights.TaskWeightGradient`).

        Raises:
            ValueError: the weighting is not meta-learned, or needs a held-out batch and got None.
        """
        if not self.weighting.meta_learned:
            raise ValueError(f"weighting {type(self.weighting).__name__} is not meta-learned: it has no weight step")
        if held_out is None and self.weighting.uses_held_out:
            raise ValueError(f"weighting {type(self.weighting).__name__} needs a held-out batch (x_v, y_v)")
        return self.weighting.meta_step(self, images, labels, held_out, alpha=alpha, index=index)

    # ------------------------------------------------------------------ MAXL
    def _other_tasks_loss(
        self, images, labels, index, exclude: AuxiliaryTask, weights: Mapping[str, float] | None = None
    ):
        """L_x(params): the other tasks' losses as a function of the look-ahead's parameters,
        each times its weight in ``weights`` (by task name; None: every weight 1)."""
        prepared = []
        for task in self._task_list:
            if task is not exclude and (weights is None or weights[task.name] != 0.0):
                prepared.append((task, *task.make_inputs_and_targets(images, labels, index=index)))
        if not prepared:
            return None
        buffers = {n: b.clone() for n, b in self.backbone.named_buffers()}  # BatchNorm stats stay untouched

        def other_tasks_loss(params: dict[str, Tensor]) -> Tensor:
            backbone_params = {n.removeprefix("backbone."): p for n, p in params.items() if n.startswith("backbone.")}
            total: Tensor | float = 0.0
            for task, inputs, targets in prepared:
                features = functional_call(self.backbone, {**backbone_params, **buffers}, (inputs,))
                loss = task.loss(task(features), targets)
                total = total + (loss if weights is None else weights[task.name] * loss)
            return cast(Tensor, total)  # cast: prepared is not empty, so a task's loss was added

        return other_tasks_loss

    def _primary_loss_of(self, images: Tensor, labels: Tensor, scale: float):
        """``scale`` · L_pri(params) on ``images`` as a function of the look-ahead's parameters (on
        copies of the backbone's buffers)."""
        buffers = {n: b.clone() for n, b in self.backbone.named_buffers()}

        def loss(params: dict[str, Tensor]) -> Tensor:
            trunk = {n.removeprefix("backbone."): p for n, p in params.items() if n.startswith("backbone.")}
            head = {n.removeprefix("primary_head."): p for n, p in params.items() if n.startswith("primary_head.")}
            features = functional_call(self.backbone, {**trunk, **buffers}, (images,))
            return scale * self.primary_loss(functional_call(self.primary_head, head, (features,)), labels)

        return loss

    def _meta_problem(self, images: Tensor, labels: Tensor, index: Tensor | None):
        """What the meta-gradient engines take: the look-ahead network f(θ1) (a view of the
        backbone, the primary head and the generated-labels head), the generator, the loss,
        the other tasks' loss L_x and the engine's settings.

        With a weighting whose update is ∇θ Σ_i λ_i L_i (:meth:`Weighting.lookahead_weights`)
        and a λ_i ≠ 1, the look-ahead takes that step, θ1⁺ = θ1 − α ∇θ1 Σ_i λ_i L_i (the other
        tasks only with ``lookahead_other_tasks``), with λ detached: the engines' inner loss is
        L_pri + L_aux (+ L_x), so for λ_pri > 0 it becomes L_pri + (λ_gen/λ_pri) L_aux +
        Σ_k (λ_k/λ_pri) L_k with the step α λ_pri (the same θ1⁺, no extra pass); for λ_pri = 0
        (or no α set) L_x gets a term (λ_pri − 1) L_pri instead. Unit weights change nothing."""
        task = self.generated
        if task is None:
            raise ValueError("the meta-gradient needs a GeneratedLabels task (MAXL's label-generation network)")
        if self.pending_tasks:
            self._materialize_at_first_batch(images)
        cfg = task.meta
        weights = self.weighting.lookahead_weights()
        if weights is not None and all(w == 1.0 for w in weights.values()):
            weights = None  # every loss weighted 1: the paper's look-ahead, bit for bit
        scale, aux_scale, correction = 1.0, 1.0, 0.0
        if weights is not None:
            primary = weights[PRIMARY]
            if primary > 0 and cfg.inner_lr is not None:  # Σ λ_i L_i = λ_pri (L_pri + Σ (λ_i/λ_pri) L_i)
                scale = primary
                cfg = replace(cfg, inner_lr=cfg.inner_lr * primary)
            else:
                correction = primary - 1.0  # L_x += (λ_pri − 1) L_pri
            aux_scale = weights[task.name] / scale
        extra = None
        if task.lookahead_other_tasks:
            others = None if weights is None else {n: w / scale for n, w in weights.items()}
            extra = self._other_tasks_loss(images, labels, index, exclude=task, weights=others)
        if correction:
            extra = _sum_losses(extra, self._primary_loss_of(images, labels, correction))
        if getattr(self.backbone, "has_penalty", False):  # the penalty is in the look-ahead's loss too
            extra = _with_penalty(self.backbone.penalty_from, extra, 1.0 / scale)

        def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
            # soft generated labels go to the task's loss, hard primary labels to the primary loss
            if target.dtype.is_floating_point:
                loss = task.loss(logits, target)
                return loss if aux_scale == 1.0 else aux_scale * loss
            return self.primary_loss(logits, target)

        network = MultiTaskNetwork.from_modules(self.backbone, self.primary_head, task.head)
        return task, network, loss_fn, extra, task.second_view(images, labels), cfg

    def meta_gradient(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        index: Tensor | None = None,
        outer_batch: tuple[Tensor, Tensor] | None = None,
    ) -> MetaResult:
        """MAXL's meta-gradient ∇θ2 J of the label-generation network on one batch.

        J(θ2) = L_pri(θ1⁺) + λ Σ ȳ log ȳ with the look-ahead θ1⁺ = θ1 − α ∇θ1 (λ_pri L_pri +
        λ_gen L_gen + Σ λ_k L_other,k), the last sum over the other auxiliary tasks if the task's
        ``lookahead_other_tasks`` is set, and λ the weighting's current weights, detached
        (:meth:`auxtasks.weighting.Weighting.lookahead_weights`: the step the network really
        takes; every weight 1 for equal weights, as in MAXL, and for a weighting whose update is
        not a weighted sum of the losses). ``outer_batch=(x_o, y_o)`` takes L_pri(θ1⁺) on another batch (see
        :func:`maxl.meta.meta_gradient`). Changes no parameter, ``.grad`` or BatchNorm statistic
        of the learner. The graph walk for ops without a double backward runs on the first call only.

        Raises:
            ValueError: the learner has no :class:`GeneratedLabels` task.
        """
        task, network, loss_fn, extra, second_view, cfg = self._meta_problem(images, labels, index)
        result = meta_gradient(
            network,
            task.generator,
            images,
            labels,
            loss_fn,
            cfg,
            check_graph=not task.graph_checked,
            extra_inner_loss=extra,
            outer_batch=outer_batch,
            objective=task.objective,
            second_view=second_view,
        )
        task.graph_checked = True
        return result

    def can_fuse(self) -> bool:
        """Whether :meth:`fused_gradients` gives this learner's multi-task update: a generated
        task whose engine has a fused form, every loss weighted 1 (the look-ahead's inner loss
        is the plain sum), the other tasks in the look-ahead, and their BatchNorm statistics
        frozen as in the look-ahead."""
        task = self.generated
        return (
            task is not None
            and supports_fused(task.meta)
            and self.weighting.is_unit_sum()
            and (task.lookahead_other_tasks or len(self.tasks) == 1)
            and not self.aux_batchnorm_stats
        )

    def fused_gradients(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        index: Tensor | None = None,
        outer_batch: tuple[Tensor, Tensor] | None = None,
    ) -> FusedResult:
        """The multi-task gradient ∇θ1 (L_pri + L_gen + Σ L_other) and the meta-gradient ∇θ2 J
        from one shared forward/backward (:func:`maxl.meta.fused_step`); equal to
        :meth:`meta_gradient` followed by :meth:`forward` / :meth:`backward` on the generator's
        labels before its update, when :meth:`can_fuse`. ``net_grads`` follow
        :meth:`lookahead_parameters`. Changes no parameter or ``.grad``.

        Raises:
            ValueError: :meth:`can_fuse` is False.
        """
        if not self.can_fuse():
            raise ValueError(
                "this learner's update is not the look-ahead's step (a weighting other than equal "
                "weights, other tasks outside the look-ahead, or an engine without a fused form): "
                "use meta_gradient and a separate multi-task step"
            )
        task, network, loss_fn, extra, second_view, cfg = self._meta_problem(images, labels, index)
        result = fused_step(
            network,
            task.generator,
            images,
            labels,
            loss_fn,
            cfg,
            extra_inner_loss=extra,
            check_graph=not task.graph_checked,
            outer_batch=outer_batch,
            objective=task.objective,
            second_view=second_view,
        )
        task.graph_checked = True
        return result

    def lookahead_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the look-ahead network (backbone, primary head,
        generated-labels head), in the order of the engines' gradients.

        Raises:
            ValueError: heads not built yet (see :meth:`materialize`).
        """
        self._require_heads("lookahead_parameters()")
        task = self.generated
        network = MultiTaskNetwork.from_modules(self.backbone, self.primary_head, task.head if task else None)
        return [p for p in network.parameters() if p.requires_grad]

    def apply_meta_gradient(self, result: MetaResult, optimizer: torch.optim.Optimizer) -> None:
        """Write ``result.grads`` into the label-generation network's ``.grad``, take one step of
        ``optimizer``, and clear the ``.grad`` again, so that the main optimiser never sees it."""
        task = self.generated
        assert task is not None, "apply_meta_gradient needs a GeneratedLabels task"
        params = [p for p in task.generator.parameters() if p.requires_grad]
        step_with(params, result.grads, optimizer)
        for p in params:
            p.grad = None

    def meta_step(
        self, images: Tensor, labels: Tensor, optimizer: torch.optim.Optimizer, *, index: Tensor | None = None
    ) -> MetaResult:
        """One update of the label-generation network by ``optimizer`` with :meth:`meta_gradient`."""
        result = self.meta_gradient(images, labels, index=index)
        self.apply_meta_gradient(result, optimizer)
        return result


def _accuracy(logits: Tensor, targets: Tensor) -> float | None:
    """Share of argmax predictions equal to the targets (class indices, or the argmax of soft
    targets of the logits' shape), classes along dim 1; None if the shapes do not fit."""
    with torch.no_grad():
        if targets.dtype.is_floating_point:
            if targets.shape != logits.shape:
                return None
            targets = targets.argmax(1)
        if logits.ndim < 2 or targets.shape != logits.shape[:1] + logits.shape[2:]:
            return None
        return (logits.argmax(1) == targets).float().mean().item()


def _part(params: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors of ``params`` whose names start with ``prefix``, by their names without it."""
    return {n.removeprefix(prefix): p for n, p in params.items() if n.startswith(prefix)}


def _with_penalty(penalty_from, extra, scale: float = 1.0):
    """L_x(params) + ``scale`` · the trunk's penalty at the look-ahead's parameters (named ``backbone.*``)."""

    def loss(params: dict[str, Tensor]) -> Tensor:
        trunk = {n.removeprefix("backbone."): p for n, p in params.items() if n.startswith("backbone.")}
        total = penalty_from(trunk)
        total = total if scale == 1.0 else scale * total
        return total if extra is None else total + extra(params)

    return loss


def _sum_losses(first, second):
    """``params -> first(params) + second(params)``, either of which may be None."""
    if first is None or second is None:
        return second if first is None else first
    return lambda params: first(params) + second(params)


def step_with(params: Sequence[Tensor], grads: Sequence[Tensor | None], optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()`` with ``grads`` as the gradients of ``params``: the one place where
    computed (meta-)gradients reach ``.grad``."""
    optimizer.zero_grad(set_to_none=True)
    for p, g in zip(params, grads):
        p.grad = g
    optimizer.step()
