"""The optimisers and learning-rate schedules of a run.

* The multi-task network (and a weighting's own parameters): SGD with ``lr``, momentum and
  weight decay; its lr either multiplied by ``lr_gamma`` every ``lr_step`` epochs (the paper's
  StepLR) or following a one-cycle schedule stepped every iteration (Smith, Topin, "Super-
  Convergence", 2019).
* The label-generation network: SGD (the paper: lr 1e-3, weight decay 5e-4) or Adam, with the
  StepLR of the multi-task network (constant under the one-cycle schedule).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from maxl.train.config import GeneratorConfig, TrainConfig

__all__ = ["Optimisers", "make_optimisers"]


@dataclass
class Optimisers:
    """Attributes:
    optimizer, scheduler: of the multi-task network.
    per_step: the scheduler steps every iteration (else every epoch).
    gen_optimizer, gen_scheduler: of the generator (None without one), stepped every epoch.
    """

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    per_step: bool
    gen_optimizer: torch.optim.Optimizer | None
    gen_scheduler: torch.optim.lr_scheduler.LRScheduler | None


def make_optimisers(
    cfg: TrainConfig,
    params: list[nn.Parameter],
    generator: nn.Module | None,
    steps_per_epoch: int,
    gen_config: GeneratorConfig | None = None,
) -> Optimisers:
    """Build the run's optimisers from ``cfg`` for the multi-task ``params`` and from ``gen_config``
    (default :class:`GeneratorConfig`) for ``generator``; the generator's lr follows ``cfg``'s step
    schedule.

    Raises:
        ValueError: a one-cycle schedule with no training step per epoch.
    """
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    per_step = cfg.lr_schedule == "onecycle"
    scheduler: torch.optim.lr_scheduler.LRScheduler
    if per_step:
        if steps_per_epoch < 1:
            raise ValueError("the one-cycle schedule needs at least one full batch per epoch")
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=cfg.epochs * steps_per_epoch,
            pct_start=cfg.warmup,
            cycle_momentum=False,
        )
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step, cfg.lr_gamma)
    gen_optimizer = gen_scheduler = None
    if generator is not None:
        g = gen_config or GeneratorConfig()
        kind = torch.optim.Adam if g.optimizer == "adam" else torch.optim.SGD
        gen_optimizer = kind(generator.parameters(), lr=g.lr, weight_decay=g.weight_decay)
        gen_scheduler = torch.optim.lr_scheduler.StepLR(
            gen_optimizer, cfg.epochs + 1 if per_step else cfg.lr_step, cfg.lr_gamma
        )
    return Optimisers(optimizer, scheduler, per_step, gen_optimizer, gen_scheduler)
