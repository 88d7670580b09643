"""Fixtures of the experiment scripts' tests (``python -m pytest experiments/tests``; in the
default run too, see pyproject's testpaths). The scripts are imported as ``experiments.<name>``
(pytest's importlib import mode names this folder's modules ``experiments.tests.*``, so that
``experiments`` is their parent package). As in tests/conftest.py, torch runs
on one thread: the networks are tiny and the CPUs shared."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: subprocesses inherit it

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
