"""Stopping a run cleanly when its job is pre-empted.

Clusters stop jobs with SIGTERM (SLURM sends it at the end of a time limit or on pre-emption;
with ``--signal=USR1@90`` it sends SIGUSR1 some seconds before), and a user stops a run with
Ctrl-C (SIGINT). While :class:`StopSignals` is active, each of these signals only *asks* the run
to stop: the trainer finishes the step it is in, writes a step-level checkpoint atomically, says
so in one line and the command exits with :data:`EXIT_PREEMPTED`. ``maxl train --resume RUN``
then continues mid-epoch to exactly the numbers of an uninterrupted run. A signal that arrives
while the checkpoint is written changes nothing: the handler only records it.

Under torchrun every process takes the stop at the same step (:meth:`StopSignals.agreed` asks the
others), since writing a checkpoint gathers every process's random state.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch

from maxl.train import distributed

__all__ = ["StopSignals", "Preempted", "EXIT_PREEMPTED", "STOP_SIGNALS"]

#: Exit status of ``maxl train`` stopped by a signal after writing its checkpoint:
#: ``EX_TEMPFAIL`` of sysexits.h ("a temporary failure; the user is invited to retry").
EXIT_PREEMPTED = 75

#: The signals that ask a run to stop (SIGUSR1 where the platform has it).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


class Preempted(Exception):
    """The run stopped on a signal after writing its checkpoint.

    Attributes:
        signal_name: e.g. ``"SIGTERM"``.
        checkpoint: the path written, or None where the run writes no files.
        epoch, step: epochs completed, and the multi-task steps of the run completed.
    """

    def __init__(self, signal_name: str, checkpoint, epoch: int, step: int):
        self.signal_name, self.checkpoint, self.epoch, self.step = signal_name, checkpoint, epoch, step
        where = f"; checkpoint written to {checkpoint}" if checkpoint is not None else ""
        resume = f"; continue with: maxl train --resume {checkpoint.parent}" if checkpoint is not None else ""
        super().__init__(f"stopped by {signal_name} after step {step} (in epoch {epoch + 1}){where}{resume}")


class StopSignals:
    """A context in which SIGTERM, SIGINT and SIGUSR1 set :attr:`received` instead of ending
    the process; the previous handlers come back on exit. Outside the main thread (where Python
    cannot install handlers) it does nothing."""

    def __init__(self):
        self.received: int | None = None  # the first signal's number
        self._previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}  # signal.signal's

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def agreed(self, device: torch.device) -> str | None:
        """The name of the signal that stops the run now, or None. Under torchrun a
        collective: every process must call it after every step, and all of them stop when any
        one was signalled (the lowest signal number names it)."""
        received = self.received
        if distributed.world_size() > 1:
            flag = torch.tensor([float(received or 1e9)], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            received = None if flag.item() >= 1e9 else int(flag.item())
        return None if received is None else signal.Signals(received).name
