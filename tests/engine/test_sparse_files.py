"""Sparse files: holes are not read from the guest and come back as holes, locally and over the SSH agent."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.backends.fake_runner import RecordingRunner
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.backends.ssh_guest import SshGuest
from vmlfs.backends.ssh_restore import restore_to_guest
from vmlfs.engine.backup import run_backup
from vmlfs.engine.guest import ScanReport
from vmlfs.engine.model import EntryConfig
from vmlfs.engine.restore import restore_tree
from vmlfs.engine.rules import Rules

MIB = 1 << 20
RUNS = [(0, 10_000), (50 * MIB, 4096), (80 * MIB + 100, 3000)]  # (offset, length) of data; 100 MiB in all


def _sparse(path: Path) -> bytes:
    """A 100 MiB file with 17 KB of data in three runs, two of them not block-aligned, and a hole at the end."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        for offset, length in RUNS:
            os.pwrite(fd, os.urandom(length), offset)
        os.ftruncate(fd, 100 * MIB)
    finally:
        os.close(fd)
    return path.read_bytes()


def _allowed(block: int) -> int:
    """Each data run rounded out to whole blocks, plus one block per run."""
    return sum((offset + length + block - 1) // block * block - offset // block * block + block
               for offset, length in RUNS)


def _check_restored(path: Path, content: bytes) -> int:
    st = path.stat()
    assert st.st_size == 100 * MIB and hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(content).digest()
    du = int(subprocess.run(["du", "--block-size=1", str(path)], check=True, capture_output=True, text=True).stdout.split()[0])
    assert du == st.st_blocks * 512 <= _allowed(st.st_blksize), f"{du} bytes allocated"
    return du


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[LocalStore, str, bytes]:
    home = tmp_path / "g"
    home.mkdir()
    content = _sparse(home / "sparse.img")
    if (home / "sparse.img").stat().st_blocks * 512 >= 100 * MIB:
        pytest.skip("the file system here does not keep holes")
    store = LocalStore(tmp_path / "s")
    cfg = EntryConfig("e", str(home))
    store.add_entry(cfg)
    return store, run_backup(store, cfg, LocalGuest(home)).timestamp, content


def test_a_local_restore_keeps_the_holes(tmp_path: Path, backed_up: tuple[LocalStore, str, bytes]) -> None:
    store, ts, content = backed_up
    restore_tree(store.open_manifest("e", ts), lambda layer: store.open_layer("e", layer), str(tmp_path / "t"))
    _check_restored(tmp_path / "t" / "sparse.img", content)


def test_a_restore_through_the_agent_keeps_the_holes(tmp_path: Path, backed_up: tuple[LocalStore, str, bytes]) -> None:
    store, ts, content = backed_up
    restore_to_guest(store.open_manifest("e", ts), lambda layer: store.open_layer("e", layer), RecordingRunner(),
                     str(tmp_path / "t"))
    _check_restored(tmp_path / "t" / "sparse.img", content)


def test_the_local_guest_does_not_read_holes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "g"
    home.mkdir()
    content = _sparse(home / "sparse.img")
    read = []
    real_pread, real_read = os.pread, os.read
    monkeypatch.setattr(os, "pread", lambda fd, n, at: read.append(n) or real_pread(fd, n, at))
    monkeypatch.setattr(os, "read", lambda fd, n: read.append(n) or real_read(fd, n))
    guest = LocalGuest(home)
    entry = next(e for e in guest.scan(Rules(), ScanReport()) if e.type == "f")
    got = b"".join(b"".join(chunks) for _, chunks in guest.read_many([entry]))
    assert got == content
    assert sum(read) <= _allowed(os.stat(home / "sparse.img").st_blksize)


def test_the_agent_reads_a_sparse_file_exactly(tmp_path: Path) -> None:
    home = tmp_path / "g"
    home.mkdir()
    content = _sparse(home / "sparse.img")
    store = LocalStore(tmp_path / "s")
    cfg = EntryConfig("e", str(home))
    store.add_entry(cfg)
    meta = run_backup(store, cfg, SshGuest(RecordingRunner(), str(home)))
    node = store.open_manifest("e", meta.timestamp).lookup((b"sparse.img",))
    assert node.sha256 == hashlib.sha256(content).digest()
    restore_tree(store.open_manifest("e", meta.timestamp), lambda layer: store.open_layer("e", layer), str(tmp_path / "t"))
    _check_restored(tmp_path / "t" / "sparse.img", content)
