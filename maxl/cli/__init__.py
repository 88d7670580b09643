"""Command line: ``maxl train``, ``maxl demo``, ``maxl visualise``, ``maxl compare``."""

from maxl.cli.commands import main

__all__ = ["main"]
