"""The ``vmlfs`` command (:mod:`vmlfs.cli.main`); :func:`main` is its entry point.

This module and :mod:`vmlfs.cli.collector` import nothing but :mod:`gc`, so that
:func:`~vmlfs.cli.collector.held_collections` covers the whole start-up.
"""

from __future__ import annotations

from vmlfs.cli.collector import become_the_command_process, held_collections


def main(argv: list[str] | None = None) -> None:
    """Run the ``vmlfs`` command as this process (its modules imported under :func:`held_collections`)."""
    become_the_command_process()
    with held_collections():
        from vmlfs.cli.main import main as run
    run(argv)
