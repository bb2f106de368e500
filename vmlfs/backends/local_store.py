"""A store kept in a directory on this machine.

Layout: docs/FORMAT.md. Every name used here is chosen by vmlfs and passes
:mod:`vmlfs.names`, so the store works on any file system. Objects are
hardlinked from the backup's work directory (same file system) into place,
never overwritten; a record is created with ``link()``, which fails if the
name is taken, after everything it names was fsynced.

A tree's sha256 is checked every time this process first opens it (and again
if the file changes): a flipped bit in a tree is found before it is used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from pathlib import Path

from vmlfs import names
from vmlfs.archive.placement import PlacementProofs
from vmlfs.archive.seekable import FrameCache, SeekableReader
from vmlfs.backends.lock import EntryLock
from vmlfs.backends.remote_reads import cache_root
from vmlfs.engine.store import STORE_FILE, StoreLayout, backup_path, entry_path
from vmlfs.errors import CorruptData, write_failed

log = logging.getLogger(__name__)


def default_store_path() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "vmlfs")


def temporary_beside(path: Path, data: bytes, *, durable: bool = True) -> Path:
    """``data`` in a temporary file beside ``path``, on disk (fsynced) if ``durable``: what a rename
    or a link then names."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write a small file so readers see the old or the new content, never half; on disk before it
    is renamed into place if ``durable``."""
    try:
        tmp = temporary_beside(path, data, durable=durable)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise write_failed(exc, f"cannot write {path}") from exc


def file_sha256(path: str | os.PathLike[str]) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


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
        # Placement proofs of the layers (a cold read far into a big layer need not walk it at every mount).
        self.proofs = PlacementProofs(cache_root("local") / hashlib.sha256(self.description.encode()).hexdigest()[:16])
        self._checked: dict[tuple, str] = {}  # (path, inode, size, mtime) -> sha256 found
        self._checked_lock = threading.Lock()
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

    def _write_volatile(self, rel: str, data: bytes) -> None:
        # No fsync: under a backup's writeback an fsync waits for the journal to flush it all
        # (0.6 s seen at a mount's start), and a lease need not outlive a crash of this host.
        write_atomic(self.root / rel, data, durable=False)

    def _listdir(self, rel: str) -> list[str]:
        return os.listdir(self.root / rel)

    def _exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def _mkdir(self, rel: str) -> None:
        (self.root / rel).mkdir()

    def _rename(self, rel: str, new_rel: str) -> None:
        os.rename(self.root / rel, self.root / new_rel)

    def _unlink(self, rel: str) -> None:
        (self.root / rel).unlink()

    def _rmtree(self, rel: str) -> None:
        shutil.rmtree(self.root / rel)

    def space(self) -> tuple[int, int]:
        vfs = os.statvfs(self.root)
        return vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize

    def _create(self, rel: str, data: bytes) -> None:
        """Write a temporary file, fsync it, and link() it to ``rel``: EEXIST if the name is taken."""
        target = self.root / rel
        tmp = temporary_beside(target, data)
        try:
            os.link(tmp, target)
            fsync_dir(target.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def _put(self, local: Path, rel: str) -> None:
        """fsync ``local`` and hardlink it into place (it is in this store's .tmp); an existing
        object of that name has that content already and is kept."""
        target = self.root / rel
        with open(local, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(local, target)
        except FileExistsError:
            return
        except OSError:  # another file system after all: copy under a temporary name, then link
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                shutil.copyfile(local, tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.link(tmp, target)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        fsync_dir(target.parent)

    def _size(self, rel: str) -> int:
        return (self.root / rel).stat().st_size

    def _digest(self, rel: str) -> tuple[int, str]:
        return file_sha256(self.root / rel)

    def _tree_file(self, rel: str, digest: str, where: str) -> str:
        path = self.root / rel
        try:
            st = path.stat()
            key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
            with self._checked_lock:
                known = self._checked.get(key)
            if known is None:
                known = file_sha256(path)[1]
                with self._checked_lock:
                    self._checked[key] = known
        except FileNotFoundError:
            raise CorruptData(f"{where}: tree {digest[:12]} is missing from the store") from None
        except OSError as exc:
            raise CorruptData(f"{where}: cannot read tree {digest[:12]}: {exc.strerror}") from None
        if known != digest:
            raise CorruptData(f"{where}: tree {digest[:12]} differs from the sha256 its record names (damaged)")
        return str(path)

    def _layer_reader(self, rel: str, digest: str, name: str) -> SeekableReader:
        return SeekableReader(self.root / rel, cache=self.frame_cache, name=name, proofs=self.proofs)

    def _local_path(self, rel: str) -> Path:
        return self.root / rel

    def close(self) -> None:
        """Nothing to release for a local store; SshStore closes its connection here."""

    # paths (the engine's tests and benchmarks look inside) --------------------

    def entry_dir(self, name: str) -> Path:
        return self.root / entry_path(name)

    def backup_dir(self, entry: str, ts: str) -> Path:
        """A format-1 backup's directory."""
        return self.root / backup_path(entry, ts)

    def object_file(self, kind: str, digest: str) -> Path:
        return self.root / self._object_rel(kind, digest)

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
