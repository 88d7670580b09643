"""Training: the one step path, schedules, the trainer loop, checkpoints, checks, logging,
and the builder that turns a run configuration into a trainer."""

from maxl.train.checkpoint import CheckpointError, atomic_torch_save, atomic_write_text
from maxl.train.checks import NonFiniteGradientError, NonFiniteLossError
from maxl.train.config import FIXED_LABEL_METHODS, METHODS, RESUMABLE_CHANGES, SCHEDULES, GeneratorConfig, TrainConfig
from maxl.train.step import StepPath
from maxl.train.trainer import Trainer, resolve_device, seed_everything

__all__ = [
    "CheckpointError",
    "atomic_torch_save",
    "atomic_write_text",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "FIXED_LABEL_METHODS",
    "METHODS",
    "RESUMABLE_CHANGES",
    "SCHEDULES",
    "TrainConfig",
    "GeneratorConfig",
    "StepPath",
    "Trainer",
    "resolve_device",
    "seed_everything",
]
