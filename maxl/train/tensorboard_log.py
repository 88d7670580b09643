"""TensorBoard events of the per-epoch metrics (``--tensorboard``; optional dependency).

The records are the ones of ``metrics.jsonl``; each numeric field becomes a scalar of that
name with the epoch as its step. Needs the ``tensorboard`` package
(``pip install 'maxl[tensorboard]'``), imported only when used.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TensorBoardLog"]

_MISSING = (
    "TensorBoard logging needs the tensorboard package, which is not installed: "
    "pip install 'maxl[tensorboard]' (or pip install tensorboard), or leave out --tensorboard"
)


class TensorBoardLog:
    """Writes metric records as TensorBoard scalars.

    Args:
        log_dir: folder of the event files (created).
        first_epoch: the first epoch this writer will log. Above 1 (a resumed run), events
            of this and later epochs left by an earlier, interrupted process are dropped
            (``purge_step``), so that no epoch appears twice.

    Raises:
        ImportError: tensorboard is not installed.
    """

    def __init__(self, log_dir: str | os.PathLike, first_epoch: int = 1):
        writer_class = self.check_available()
        self.writer = writer_class(str(Path(log_dir)), purge_step=first_epoch if first_epoch > 1 else None)

    @staticmethod
    def check_available():
        """Return ``SummaryWriter``, or raise ImportError saying how to install tensorboard."""
        try:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard
        except ImportError as err:
            raise ImportError(_MISSING) from err
        return SummaryWriter

    def log(self, record: dict) -> None:
        """Add every numeric field of ``record`` (which holds ``"epoch"``) at step ``epoch``."""
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
