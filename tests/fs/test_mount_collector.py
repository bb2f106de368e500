"""A real mount keeps its start-up objects out of the garbage collector's passes once its state is
built (vmlfs.engine.throughput.serving_collections, called by ``vmlfs mount``): its debug log says how
many, and the mount answers as before."""

from __future__ import annotations

import os
import re
import subprocess

from tests.fs.conftest import VMLFS, Mount, make_store, needs_fuse


@needs_fuse
def test_the_mount_freezes_its_start_up_objects(tmp_path) -> None:
    s = make_store(tmp_path, big_mib=1)
    ts = s.backup()
    m = Mount(s.store_path, tmp_path / "mnt", tmp_path / "mount.log")
    m.path.mkdir()
    done = subprocess.run([*VMLFS, "--debug", "--store", str(s.store_path), "mount", str(m.path), "--log-file", str(m.log)],
                          capture_output=True, text=True)
    try:
        assert done.returncode == 0, done.stderr
        assert (m.entry() / ts / "home" / "src" / "main.py").read_text() == (s.home / "src" / "main.py").read_text()
        found = re.search(r"(\d+) start-up objects kept out of the garbage collector's passes", m.log.read_text())
        assert found and int(found.group(1)) > 10_000, m.log.read_text()[-2000:]
    finally:
        m.stop()
    assert not os.path.ismount(m.path)
