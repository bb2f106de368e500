"""A layer whose seek table lies (one entry covering two frames), through the real CLI and a real mount:
restore and verify name the damaged files, the mount answers EIO, no one serves other bytes.

The attacker also stored the layer under its new sha256 and made the tree and
the record name it (tests/conftest.py replace_layer), so only the frame checks
of vmlfs/archive/seekable.py can find it.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.archive.test_lying_seek_table import entries, one_frame_of, rewrite
from tests.conftest import peak_rss_kib, replace_layer
from tests.fs.conftest import make_store, needs_fuse, serving_pid


def lie_in_the_layer(store: Path, entry: str, ts: str, tmp: Path) -> None:
    layer = tmp / "layer.tar.zst"
    layer.write_bytes(layer_of(store, entry, ts).read_bytes())
    frames, sizes = entries(layer)
    (c0, d0), (c1, _) = sizes[0], sizes[1]
    sizes[0:2] = [(c0 + c1, d0)]  # frame 1 is swallowed: every later frame moves back by one
    rewrite(layer, frames, sizes)
    replace_layer(store, entry, ts, layer.read_bytes())


def layer_of(store: Path, entry: str, ts: str) -> Path:
    record = json.loads((store / "entries" / entry / "backups" / f"{ts}.json").read_text())
    return store / "objects" / "layers" / f"{record['layer']['sha256']}.tar.zst"


@needs_fuse
def test_a_lying_seek_table_is_named_damage_everywhere(tmp_path: Path, mount_factory) -> None:
    setup = make_store(tmp_path)
    ts = setup.backup()
    lie_in_the_layer(setup.store_path, "e1", ts, tmp_path)
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


@needs_fuse
@pytest.mark.parametrize("table_says", ["1 GiB", "1 MiB"])
def test_a_33_kib_layer_holding_a_1_gib_frame_costs_bounded_memory(tmp_path: Path, mount_factory, table_says: str) -> None:
    setup = make_store(tmp_path, big_mib=1)
    ts = setup.backup()
    layer = tmp_path / "layer.tar.zst"
    frame = one_frame_of(1 << 30)
    rewrite(layer, frame, [(len(frame), (1 << 30) if table_says == "1 GiB" else (1 << 20))])
    data = layer.read_bytes()
    assert len(data) < 64 << 10
    replace_layer(setup.store_path, "e1", ts, data)
    store = ("--store", str(setup.store_path))
    for argv in (("verify",), ("restore", "e1", str(tmp_path / "r"))):
        code, rss, text = peak_rss_kib(*store, *argv)
        assert code == 7 and "src/main.py" in text and "Traceback" not in text, text
        assert rss < 150_000, f"{argv[0]}: peak RSS {rss} KiB for a 1 GiB frame"
    mount = mount_factory(setup.store_path)
    with pytest.raises(OSError) as caught:
        (mount.entry() / ts / "home" / "src" / "main.py").read_bytes()
    assert caught.value.errno == errno.EIO
    status = Path(f"/proc/{serving_pid(mount.path)}/status").read_text()
    peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    assert peak < 150_000, f"mount: peak RSS {peak} KiB"
