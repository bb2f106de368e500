"""Opening an S3 store in the vmlfs command's process builds botocore's client with the collector
held off, then freezes it (vmlfs.engine.throughput.held_collections). In a fresh interpreter:
freezing is for the life of a process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.s3.conftest import S3Server

CHECK = """
import gc, sys
from vmlfs.backends.connect import open_store
from vmlfs.engine import throughput

throughput.become_the_command_process()
passes = []
gc.callbacks.append(lambda phase, info: passes.append(info["generation"]) if phase == "start" else None)
frozen = gc.get_freeze_count()
store = open_store(sys.argv[1])
print(len(passes), "botocore.client" in sys.modules, gc.get_freeze_count() - frozen, gc.isenabled())
"""


def test_botocore_is_imported_and_its_client_built_without_a_collector_pass(seaweedfs: S3Server, s3_store: str,
                                                                             tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", CHECK, s3_store], env=seaweedfs.env(tmp_path), capture_output=True,
                          text=True, check=True, timeout=60)
    passes, imported, frozen, enabled = done.stdout.split()
    assert imported == "True" and enabled == "True"
    assert passes == "0", "with the default threshold, about a hundred"
    assert int(frozen) > 20_000
