"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test's tensor ops on one thread: the tensors of the tiny end-to-end runs are so
    small that a second thread only adds synchronisation, which costs several times the work
    itself when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
