"""The ``vmlfs`` command (:mod:`vmlfs.cli.main`); :func:`main` is its entry point.

This module imports only :mod:`vmlfs.engine.throughput` (the standard library's ``gc``,
``logging`` and a few more), so that :func:`~vmlfs.engine.throughput.held_collections` covers
nearly the whole start-up.
"""

from __future__ import annotations

from vmlfs.engine.throughput import become_the_command_process, held_collections


def main(argv: list[str] | None = None) -> None:
    """Run the ``vmlfs`` command as this process (its modules imported under :func:`held_collections`)."""
    become_the_command_process()
    with held_collections():
        from vmlfs.cli.main import main as run
    run(argv)
