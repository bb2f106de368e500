"""The ``vmlfs`` command imports its modules with the cyclic garbage collector held off, then freezes
them (vmlfs.engine.throughput.held_collections). Run in a fresh interpreter through both ways in: freezing is for
the life of a process, and the test process must keep its own collector as it is."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import gc, sys
passes = []
gc.callbacks.append(lambda phase, info: passes.append(info["generation"]) if phase == "start" else None)
sys.argv = ["vmlfs", "--help"]  # imports every command's module (for their one-line help)
try:
    {start}
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(len(passes), gc.get_freeze_count(), gc.isenabled(), file=sys.stderr)
"""


@pytest.mark.parametrize("start", ["from vmlfs.cli import main; main()", "import runpy; runpy.run_module('vmlfs', run_name='__main__')"])
def test_start_up_makes_no_collector_pass_and_leaves_it_on(start: str) -> None:
    done = subprocess.run([sys.executable, "-c", CHECK.format(start=start)], capture_output=True, text=True, check=True)
    assert "Usage: vmlfs" in done.stdout
    passes, frozen, enabled = done.stderr.split()
    # Importing vmlfs.engine.throughput (logging) before the hold may make a few passes over a small
    # heap, and writing the help one or two; importing everything with the collector on made about 95.
    assert int(passes) <= 10
    assert int(frozen) > 20_000 and enabled == "True"


def test_the_group_used_in_another_process_leaves_its_collector_unfrozen() -> None:
    check = """
import gc, click
from vmlfs.cli.main import cli
cli.list_commands(click.Context(cli))
print(gc.get_freeze_count(), gc.isenabled())
"""
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "True"]
