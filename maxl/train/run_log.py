"""What a run reports: progress bars, one line per epoch, ``metrics.jsonl`` and TensorBoard.

Only rank 0 of a torchrun job prints and writes. Progress bars switch themselves off when
stderr is not a terminal (a log file, CI).
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from maxl.data.readers import WriteError
from maxl.train.tensorboard_log import TensorBoardLog

__all__ = ["RunLog"]


class RunLog:
    """The run's reports.

    Args:
        out_dir: run folder, or None to write nothing.
        progress: show progress bars and the per-epoch line.
        is_main: this process writes (rank 0).
        tensorboard: also write the metrics as TensorBoard events to ``out_dir/tensorboard``.

    Raises:
        ImportError: ``tensorboard`` without the package (at construction, not after an epoch).
    """

    def __init__(self, out_dir: Path | None, progress: bool, is_main: bool, tensorboard: bool):
        self.out_dir, self.progress, self.is_main, self.tensorboard = out_dir, progress, is_main, tensorboard
        if tensorboard:
            TensorBoardLog.check_available()
        self._events: TensorBoardLog | None = None  # opened at the first record

    def bar(self, iterable, desc: str):
        """A progress bar over ``iterable`` (``disable=None``: off when stderr is no terminal)."""
        return tqdm(
            iterable,
            desc=desc,
            leave=False,
            disable=None if self.progress and self.is_main else True,
            dynamic_ncols=True,
        )

    def epoch(self, record: dict) -> None:
        """Report one epoch's record: a line on the terminal, a line of ``metrics.jsonl`` and
        TensorBoard scalars.

        Raises:
            WriteError: ``metrics.jsonl`` could not be appended to (e.g. no space left); the
                checkpoint of the epoch before is intact and ``--resume`` rewrites the file.
        """
        msg = f"epoch {record['epoch']:>3}  train acc {record['train_acc']:.4f}  test acc {record['test_acc']:.4f}"
        if "neg_entropy" in record:
            msg += f"  H {record['neg_entropy']:.3f}"
        if "label_used_fraction" in record:
            msg += f"  labels used {record['label_used_fraction']:.0%} sharp {record['label_sharpness']:.2f}"
        msg += f"  ({record['epoch_time_s']:.1f}s)"
        if self.progress and self.is_main:
            tqdm.write(msg)
        if self.out_dir is None or not self.is_main:
            return
        path = self.out_dir / "metrics.jsonl"
        try:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # a full disk: one line naming it (a torn line is skipped by every reader)
            raise WriteError(err.errno, err.strerror, str(path)) from err
        if self.tensorboard:
            if self._events is None:
                self._events = TensorBoardLog(self.out_dir / "tensorboard", first_epoch=record["epoch"])
            self._events.log(record)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
