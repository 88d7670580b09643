"""Command line: ``maxl train``, ``maxl demo``, ``maxl visualise``, ``maxl compare``."""

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """The ``maxl`` command (:func:`maxl.cli.commands.main`; imported when called, so that
    ``python -m maxl.cli.schema`` runs its module once)."""
    from maxl.cli.commands import main as run

    return run(argv)
