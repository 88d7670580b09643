"""Shared fixtures.

The whole suite runs torch on one thread (also in the subprocesses it starts, through
OMP_NUM_THREADS): its networks are tiny, so a second thread only adds synchronisation, and on
a CPU shared with other jobs oversubscribed threads made the suite 10x slower (1002 s vs 87 s
measured on the same loaded 2-core machine).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: subprocesses inherit it

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """Run the test's tensor ops on one thread: the tensors of the tiny end-to-end runs are so
    small that a second thread only adds synchronisation, which costs several times the work
    itself when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
