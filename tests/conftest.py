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
from hypothesis import settings  # noqa: E402

torch.set_num_threads(1)

# Hypothesis profiles of the property tests (tests/**/test_*_properties.py).
# * "ci": derandomised (the examples are a function of the test's source, so every run tries the
#   same ones and a failure reproduces), a fixed 30 examples per test (the three property files
#   take 11-16 s on 2 shared cores), no deadline (a loaded CPU makes timings meaningless), and a
#   failing example is printed with its @reproduce_failure blob. Hypothesis' example database is
#   off (derandomize=True implies database=None), so nothing is written into the tree.
# * "dev": the same, but randomised with 200 examples and the database in .hypothesis/: a hunt
#   for new failures (HYPOTHESIS_PROFILE=dev python -m pytest tests -k properties).
# CI sets CI=true and gets "ci"; a plain local `python -m pytest` gets "ci" as well, so that the
# default run is reproducible and as fast as CI's: only HYPOTHESIS_PROFILE=<name> picks another.
settings.register_profile("ci", derandomize=True, max_examples=30, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=200, deadline=None, print_blob=True)  # random, with the database
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "ci")  # CI=true or not: "ci" unless asked


@pytest.fixture
def one_thread():
    """Run the test's tensor ops on one thread: the tensors of the tiny end-to-end runs are so
    small that a second thread only adds synchronisation, which costs several times the work
    itself when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
