"""A mount or WebDAV server takes its start-up objects out of the collector's passes and collects less
often (vmlfs.engine.throughput.serving_collections), yet still frees what it makes later. Each check
runs in a fresh interpreter: freezing is for the life of a process, and the test process must keep its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import gc, weakref
from vmlfs.engine import throughput

class Cycle:
    pass

throughput.serving_collections()
print(gc.get_freeze_count(), gc.get_threshold()[0] == throughput.GC_SERVING_YOUNG)
freed = []
for i in range(50_000):  # garbage that only the cyclic collector frees, made after the freeze
    a, b = Cycle(), Cycle()
    a.other, b.other = b, a
    weakref.finalize(a, freed.append, 1)
    del a, b
print(len(freed))
with throughput.rare_collections():  # a backup started from a control file: its threshold, then the mount's
    inside = gc.get_threshold()[0]
print(inside == throughput.GC_YOUNG, gc.get_threshold()[0] == throughput.GC_SERVING_YOUNG)
"""


@pytest.fixture(scope="module")
def report() -> list[str]:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    return done.stdout.split("\n")


def test_start_up_objects_are_frozen_and_the_threshold_raised(report: list[str]) -> None:
    frozen, raised = report[0].split()
    assert int(frozen) > 1000 and raised == "True"


def test_cycles_made_later_are_still_collected_without_being_asked(report: list[str]) -> None:
    # At most one threshold's worth (a few thousand objects) may still wait for the next pass.
    assert int(report[1]) > 45_000


def test_a_backup_raises_it_further_and_gives_the_mount_its_own_back(report: list[str]) -> None:
    assert report[2] == "True True"
