"""A store kept in a directory on this machine.

Layout (docs/FORMAT.md)::

    vmlfs-store.json
    entries/<entry>/entry.json
    entries/<entry>/backups/<ts>/{manifest.sqlite, layer.tar.zst, meta.json, env.txt, history.txt}
    entries/<entry>/.tmp/            work in progress, never shown
    entries/<entry>/.lock            one backup at a time per entry

Every name used here is chosen by vmlfs and passes :mod:`vmlfs.names`, so the
store works on any file system. Only a committed directory (renamed out of
``.tmp`` after everything in it was fsynced) is ever listed as a backup.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from vmlfs import names
from vmlfs.archive.manifest import Manifest
from vmlfs.archive.seekable import FrameCache, SeekableReader
from vmlfs.backends.lock import EntryLock
from vmlfs.engine.store import (
    LAYER,
    MANIFEST,
    STORE_FILE,
    StoreLayout,
    backup_path,
    entry_path,
)
from vmlfs.errors import AlreadyExists, write_failed

log = logging.getLogger(__name__)


def default_store_path() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "vmlfs")


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file so readers see the old or the new content, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failed(exc, f"cannot write {path}") from exc


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(StoreLayout):
    """A store in a directory of this machine."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True, cache: FrameCache | None = None) -> None:
        self.root = Path(root).absolute()
        self.description = str(self.root)
        self.frame_cache = cache or FrameCache()
        if create and not (self.root / STORE_FILE).exists():
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise write_failed(exc, f"cannot create store at {self.root}") from None
        self._create_or_check(create)

    # primitives --------------------------------------------------------------

    def _read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def _write(self, rel: str, data: bytes) -> None:
        write_atomic(self.root / rel, data)

    def _listdir(self, rel: str) -> list[str]:
        return os.listdir(self.root / rel)

    def _exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def _mkdir(self, rel: str) -> None:
        (self.root / rel).mkdir()

    def _rename(self, rel: str, new_rel: str) -> None:
        os.rename(self.root / rel, self.root / new_rel)

    def _rmtree(self, rel: str) -> None:
        shutil.rmtree(self.root / rel)

    def space(self) -> tuple[int, int]:
        vfs = os.statvfs(self.root)
        return vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize

    def close(self) -> None:
        """Nothing to release for a local store; SshStore closes its connection here."""

    # paths (the engine's tests and benchmarks look inside) --------------------

    def entry_dir(self, name: str) -> Path:
        return self.root / entry_path(name)

    def backup_dir(self, entry: str, ts: str) -> Path:
        return self.root / backup_path(entry, ts)

    # the rest of the port --------------------------------------------------------

    def open_manifest(self, entry: str, ts: str) -> Manifest:
        return Manifest(self.backup_dir(entry, ts) / MANIFEST, f"{entry}@{ts}")

    def open_layer(self, entry: str, ts: str) -> SeekableReader:
        return SeekableReader(self.backup_dir(entry, ts) / LAYER, cache=self.frame_cache, name=f"layer of {entry}@{ts}")

    def file_digest(self, entry: str, ts: str, name: str) -> tuple[int, str]:
        """(size, sha256 hex) of a file of a backup directory, for verify."""
        h = hashlib.sha256()
        size = 0
        with open(self.backup_dir(entry, ts) / name, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        return size, h.hexdigest()

    def lock(self, entry: str) -> EntryLock:
        return EntryLock(str(self.entry_dir(entry) / ".lock"), f"entry {entry!r}")

    def clean_tmp(self, entry: str) -> int:
        """Remove leftovers of interrupted backups; call only while holding the lock."""
        tmp = self.entry_dir(entry) / ".tmp"
        removed = 0
        if tmp.exists():
            for leftover in tmp.iterdir():
                log.info("removing leftover of an interrupted backup: %s", leftover)
                shutil.rmtree(leftover, ignore_errors=True)
                removed += 1
        return removed

    def new_work_dir(self, entry: str, ts: str) -> Path:
        work = self.entry_dir(entry) / ".tmp" / f"{names.timestamp(ts)}-{os.getpid()}"
        try:
            work.mkdir(parents=True)
        except OSError as exc:
            raise write_failed(exc, f"cannot create {work}") from exc
        return work

    def commit(self, entry: str, work: Path, ts: str) -> None:
        """fsync everything in ``work`` and make it visible with one rename."""
        target = self.backup_dir(entry, ts)
        if target.exists():
            raise AlreadyExists(f"backup {entry}@{ts} already exists")
        try:
            for p in work.iterdir():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            fsync_dir(work)
            os.rename(work, target)
            fsync_dir(target.parent)
        except OSError as exc:
            raise write_failed(exc, f"cannot commit backup {entry}@{ts}") from exc
