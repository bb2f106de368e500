"""A mount of an S3 store: trees from the local cache, file bytes by ranged GETs of whole frames."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_backup_cycle import build_guest, change_guest
from tests.conftest import Vmlfs, snapshot_copy, tree_listing
from tests.fs.conftest import needs_fuse
from tests.s3.conftest import S3Server

pytestmark = pytest.mark.s3


@needs_fuse
def test_mount_reads_every_backup_like_the_guest_was(s3vmlfs: Vmlfs, mountpoint: Path, tmp_path: Path) -> None:
    home = tmp_path / "guest"
    home.mkdir()
    build_guest(home)
    s3vmlfs.run("entry", "add", "e", "--guest", str(home))
    copies = []
    for step in range(2):
        if step:
            change_guest(home, step)
        s3vmlfs.run("backup", "e")
        copies.append(snapshot_copy(home, tmp_path / f"copy{step}"))
    s3vmlfs.run("mount", str(mountpoint), "--log-file", str(tmp_path / "mount.log"))
    assert os.path.ismount(mountpoint)
    entry = mountpoint / "entries" / "e"
    stamps = sorted(n for n in os.listdir(entry) if n[:1].isdigit())
    assert len(stamps) == 2
    for ts, copy in zip(stamps, copies):
        subprocess.run(["diff", "-r", "--no-dereference", str(copy), str(entry / ts / "home")], check=True)
    out = tmp_path / "out"
    subprocess.run(["cp", "-a", str(entry / stamps[1] / "home"), str(out)], check=True)
    assert tree_listing(out).keys() == tree_listing(copies[1]).keys()  # modes differ: the mount is read-only
    subprocess.run(["diff", "-r", "--no-dereference", str(copies[1]), str(out)], check=True)


@pytest.mark.parametrize("first_tail", [16, 64 << 10])
def test_a_layer_is_opened_from_its_tail_alone(seaweedfs: S3Server, s3_store: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch, first_tail: int) -> None:
    """One GET of the tail gives the seek table and the size; a table longer than the first read
    (here forced by a first read of 16 bytes) is read again, whole."""
    for name, value in seaweedfs.env(tmp_path).items():
        monkeypatch.setenv(name, value)
    from vmlfs.archive.seekable import SeekableWriter
    from vmlfs.backends import s3_store as module

    monkeypatch.setattr(module, "FIRST_TAIL", first_tail)
    plain, out = os.urandom(3 << 20), io.BytesIO()
    writer = SeekableWriter(out)
    writer.write(plain)
    writer.close()
    store = module.S3Store(s3_store)
    store.bucket.put(store._key("objects/layers/x.tar.zst"), out.getvalue())
    reader = store._layer_reader("objects/layers/x.tar.zst", "x", "layer x")
    assert reader.table.frames == 3 and reader.read(0, len(plain)) == plain
