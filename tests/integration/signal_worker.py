"""``python signal_worker.py SIGNAL K [--again-while-writing SIGNAL2] [--only-rank R] -- maxl ARGS``:
run ``maxl ARGS`` in this process and send it ``SIGNAL`` (a name, e.g. SIGTERM or SIGKILL) right
after the run's ``K``-th step (1-based, every step of every pass), as a cluster's scheduler would
at that moment. With ``--again-while-writing``, ``SIGNAL2`` arrives while the checkpoint that the
first signal asked for is being written (in the middle of ``torch.save``). With ``--only-rank``
(under torchrun), only that process is signalled, and only in the first attempt (a process that
torchrun restarted runs undisturbed). Used by ``test_preemption.py``.
"""

import argparse
import os
import signal
import sys

import torch

from maxl.cli.commands import main
from maxl.train import Trainer

if __name__ == "__main__":
    split = sys.argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("signal")
    parser.add_argument("k", type=int)
    parser.add_argument("--again-while-writing")
    parser.add_argument("--only-rank", type=int)
    opts, argv = parser.parse_args(sys.argv[1:split]), sys.argv[split + 1 :]
    signum, k = getattr(signal, opts.signal), opts.k
    again = getattr(signal, opts.again_while_writing) if opts.again_while_writing else None
    if opts.only_rank is not None and (
        int(os.environ["RANK"]) != opts.only_rank or int(os.environ["TORCHELASTIC_RESTART_COUNT"]) > 0
    ):
        k = -1  # never
    after_step, count, save = Trainer.after_step, [0], torch.save

    def patched(self, position):
        count[0] += 1
        if signum == signal.SIGKILL:  # killed after the step, once the trainer has done its part
            after_step(self, position)
            if count[0] == k:
                os.kill(os.getpid(), signum)
            return
        if count[0] == k:
            os.kill(os.getpid(), signum)
        after_step(self, position)

    def save_signalled_midway(obj, f, *args, **kwargs):
        if again is not None and count[0] >= k > 0:
            os.kill(os.getpid(), again)
            print(f"signal_worker: sent {signal.Signals(again).name} while writing {f}", file=sys.stderr)
        return save(obj, f, *args, **kwargs)

    Trainer.after_step = patched
    torch.save = save_signalled_midway
    sys.exit(main(argv))
