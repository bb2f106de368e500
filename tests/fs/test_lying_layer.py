"""A layer whose seek table lies (one entry covering two frames), through the real CLI and a real mount:
restore and verify name the damaged files, the mount answers EIO, no one serves other bytes.

The attacker also fixed meta.json's size and sha256 of the layer, so only the
frame checks of vmlfs/archive/seekable.py can find it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.archive.test_lying_seek_table import entries, rewrite
from tests.fs.conftest import make_store, needs_fuse


def lie_in_the_layer(store: Path, entry: str, ts: str) -> None:
    folder = store / "entries" / entry / "backups" / ts
    layer = folder / "layer.tar.zst"
    frames, sizes = entries(layer)
    (c0, d0), (c1, _) = sizes[0], sizes[1]
    sizes[0:2] = [(c0 + c1, d0)]  # frame 1 is swallowed: every later frame moves back by one
    rewrite(layer, frames, sizes)
    data = layer.read_bytes()
    meta = json.loads((folder / "meta.json").read_text())
    meta["layer"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (folder / "meta.json").write_text(json.dumps(meta))


@needs_fuse
def test_a_lying_seek_table_is_named_damage_everywhere(tmp_path: Path, mount_factory) -> None:
    setup = make_store(tmp_path)
    ts = setup.backup()
    lie_in_the_layer(setup.store_path, "e1", ts)
    vmlfs = [sys.executable, "-m", "vmlfs", "--store", str(setup.store_path)]

    verify = subprocess.run([*vmlfs, "verify"], capture_output=True, text=True)
    assert verify.returncode == 7 and "DAMAGED" in verify.stdout and "data/big.bin" in verify.stdout

    target = tmp_path / "r"
    restore = subprocess.run([*vmlfs, "restore", "e1", str(target)], capture_output=True, text=True)
    assert restore.returncode == 7 and "data/big.bin" in restore.stderr and "Traceback" not in restore.stderr
    assert not (target / "data" / "big.bin").exists()

    mount = mount_factory(setup.store_path)
    fd = os.open(mount.entry() / ts / "home" / "data" / "big.bin", os.O_RDONLY)
    try:
        os.pread(fd, 4096, 2 << 20)
        raise AssertionError("the mount served bytes from a misplaced frame")
    except OSError as exc:
        assert exc.errno == errno.EIO
    finally:
        os.close(fd)
