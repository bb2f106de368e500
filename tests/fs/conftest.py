"""Fixtures for the mount: a guest tree, a store with backups of it, and real mounts through /dev/fuse.

Every mount is made with the ``vmlfs mount`` command (background mode, the
default) and unmounted at teardown with ``fusermount3 -u -z`` even when the
test failed, so a broken test never leaves a mount behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.engine.backup import BackupOptions, run_backup
from vmlfs.engine.model import EntryConfig

VMLFS = [sys.executable, "-m", "vmlfs"]
FUSE_MISSING = not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None


def needs_fuse(fn):
    """Mark a test as a real-mount test, skipped with a reason when FUSE is unavailable."""
    return pytest.mark.fuse(pytest.mark.skipif(FUSE_MISSING, reason="needs /dev/fuse and fusermount3")(fn))


def make_guest(root: Path, big_mib: int = 3) -> Path:
    """A home with what a backup must carry: modes, owners, ns mtimes, symlinks, hardlinks, odd names, a multi-frame file."""
    home = root / "home"
    (home / "src" / "deep" / "er").mkdir(parents=True)
    (home / "data").mkdir()
    (home / "src" / "main.py").write_text("print('hello')\n" * 50)
    (home / "src" / "deep" / "er" / "leaf.txt").write_text("leaf\n")
    (home / ".bashrc").write_text("export PS1='$ '\n")
    (home / "empty").write_bytes(b"")
    (home / "secret").write_text("root only\n")
    os.chmod(home / "secret", 0o600)
    (home / "shared.txt").write_text("everyone\n")
    os.chmod(home / "shared.txt", 0o644)
    (home / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(home / "run.sh", 0o751)
    os.symlink("src/main.py", home / "link-to-main")
    os.symlink("/nonexistent/target", home / "dangling")
    os.link(home / "src" / "main.py", home / "data" / "hardlink-to-main")
    (home / "caf\xe9-\u00fc.txt").write_text("unicode name\n")
    os.mknod(home / os.fsdecode(b"raw-\xff-name"), 0o644 | 0o100000)
    chunk = os.urandom(1 << 20)
    with open(home / "data" / "big.bin", "wb") as f:
        for i in range(big_mib):
            f.write(bytes([i]) * 100 + chunk[100:])
    if os.geteuid() == 0:
        os.chown(home / "shared.txt", 1234, 5678)
        os.lchown(home / "dangling", 4321, 8765)
    os.utime(home / "src" / "deep" / "er" / "leaf.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return home


@dataclass
class StoreSetup:
    root: Path
    store_path: Path
    home: Path
    entry: str = "e1"

    def store(self) -> LocalStore:
        return LocalStore(self.store_path, create=False)

    def backup(self, kind: str | None = None) -> str:
        """Take a backup through the engine; return its timestamp."""
        store = self.store()
        cfg = store.load_entry(self.entry)
        return run_backup(store, cfg, LocalGuest(self.home), BackupOptions(kind=kind)).timestamp

    def snapshot_copy(self, ts: str) -> Path:
        """A ``cp -a`` copy of the guest taken right after backup ``ts``: what the mount must show."""
        copy = self.root / "copies" / ts
        copy.parent.mkdir(exist_ok=True)
        subprocess.run(["cp", "-a", str(self.home), str(copy)], check=True)
        return copy


def make_store(root: Path, big_mib: int = 3) -> StoreSetup:
    home = make_guest(root, big_mib)
    store = LocalStore(root / "store")
    store.add_entry(EntryConfig("e1", str(home)))
    return StoreSetup(root, root / "store", home)


class Mount:
    def __init__(self, store_path: Path, mountpoint: Path, log: Path) -> None:
        self.store_path, self.path, self.log = store_path, mountpoint, log

    def vmlfs(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*VMLFS, "--store", str(self.store_path), *args], capture_output=True, text=True, check=check)

    def start(self, *options: str) -> "Mount":
        self.path.mkdir(exist_ok=True)
        done = self.vmlfs("mount", str(self.path), "--log-file", str(self.log), *options, check=False)
        assert done.returncode == 0, done.stderr
        assert os.path.ismount(self.path)
        return self

    def stop(self) -> None:
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        deadline = time.monotonic() + 10
        while os.path.ismount(self.path) and time.monotonic() < deadline:
            time.sleep(0.05)

    def entry(self, name: str = "e1") -> Path:
        return self.path / "entries" / name


@pytest.fixture
def mount_factory(tmp_path):
    mounts: list[Mount] = []

    def factory(store_path: Path, *options: str) -> Mount:
        m = Mount(store_path, tmp_path / f"mnt{len(mounts)}", tmp_path / f"mount{len(mounts)}.log")
        mounts.append(m)
        return m.start(*options)

    yield factory
    for m in mounts:
        m.stop()


def serving_pid(mountpoint: Path) -> int:
    """The pid of the vmlfs process serving ``mountpoint`` (the one with it in its argv)."""
    wanted = os.fsencode(mountpoint)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mount" in argv and wanted in argv and int(entry) != os.getpid():
                return int(entry)
    raise AssertionError(f"no process serves {mountpoint}")
