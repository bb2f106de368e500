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
from dataclasses import dataclass
from pathlib import Path

from vmlfs import names
from vmlfs.archive.manifest import Manifest
from vmlfs.archive.seekable import FrameCache, SeekableReader
from vmlfs.backends.lock import EntryLock
from vmlfs.engine.model import (
    STORE_VERSION,
    BackupMeta,
    EntryConfig,
    check_version,
    dump_json,
    parse_json,
)
from vmlfs.errors import (
    AlreadyExists,
    CorruptData,
    InvalidRequest,
    NotFound,
    StorageFull,
    VmlfsError,
)

log = logging.getLogger(__name__)

STORE_FILE = "vmlfs-store.json"
LAYER, MANIFEST, META = "layer.tar.zst", "manifest.sqlite", "meta.json"


@dataclass
class BackupRecord:
    """A committed backup as listed: its metadata, or why it cannot be read."""

    entry: str
    timestamp: str
    meta: BackupMeta | None
    error: str | None = None


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
        raise StorageFull(f"cannot write {path}: {exc.strerror}") from exc


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    def __init__(self, root: str | os.PathLike[str], *, create: bool = True, cache: FrameCache | None = None) -> None:
        self.root = Path(root).absolute()
        self.description = str(self.root)
        self.frame_cache = cache or FrameCache()
        header = self.root / STORE_FILE
        if not header.exists():
            if not create:
                raise NotFound(f"no vmlfs store at {self.root}", hint="create one with 'vmlfs entry add' or pass --store")
            try:
                (self.root / "entries").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageFull(f"cannot create store at {self.root}: {exc.strerror}") from None
            write_atomic(header, dump_json({"format": "vmlfs-store", "version": STORE_VERSION, "default_entry": None}))
        self._header = self._read_header()

    def _read_header(self) -> dict:
        where = str(self.root / STORE_FILE)
        try:
            doc = parse_json((self.root / STORE_FILE).read_bytes(), where)
        except OSError as exc:
            raise CorruptData(f"cannot read {where}: {exc.strerror}") from None
        if doc.get("format") != "vmlfs-store":
            raise CorruptData(f"{where} is not a vmlfs store header")
        check_version(doc, STORE_VERSION, where)
        return doc

    # entries -----------------------------------------------------------------

    def entry_dir(self, name: str) -> Path:
        return self.root / "entries" / names.entry_name(name)

    def entry_names(self) -> list[str]:
        try:
            found = sorted(p.name for p in (self.root / "entries").iterdir())
        except FileNotFoundError:
            return []
        out = []
        for name in found:
            try:
                names.entry_name(name)
            except InvalidRequest:
                log.warning("ignoring %r in the store: not a valid entry name", name)
                continue
            out.append(name)
        return out

    def load_entry(self, name: str) -> EntryConfig:
        path = self.entry_dir(name) / "entry.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no entry {name!r} in {self.root}", hint="see 'vmlfs entry list'") from None
        return EntryConfig.from_json(data, str(path))

    def add_entry(self, cfg: EntryConfig) -> None:
        d = self.entry_dir(cfg.name)
        try:
            d.mkdir(parents=False, exist_ok=False)
        except FileExistsError:
            raise AlreadyExists(f"entry {cfg.name!r} already exists") from None
        (d / "backups").mkdir()
        write_atomic(d / "entry.json", cfg.to_json())

    def save_entry(self, cfg: EntryConfig) -> None:
        write_atomic(self.entry_dir(cfg.name) / "entry.json", cfg.to_json())

    def remove_entry(self, name: str) -> None:
        self.load_entry(name)
        with self.lock(name):
            doomed = self.root / "entries" / f".removing-{names.entry_name(name)}-{os.getpid()}"
            os.rename(self.entry_dir(name), doomed)
        shutil.rmtree(doomed)
        if self.default_entry() == name:
            self.set_default_entry(None)

    def default_entry(self) -> str | None:
        configured = self._read_header().get("default_entry")
        if configured:
            return configured
        entries = self.entry_names()
        return entries[0] if len(entries) == 1 else None

    def set_default_entry(self, name: str | None) -> None:
        if name is not None:
            self.load_entry(name)
        doc = self._read_header()
        doc["default_entry"] = name
        write_atomic(self.root / STORE_FILE, dump_json(doc))

    # backups -----------------------------------------------------------------

    def timestamps(self, entry: str) -> list[str]:
        """Committed backups of ``entry``, oldest first, by name only (no metadata read): for the mount."""
        try:
            found = os.listdir(self.entry_dir(entry) / "backups")
        except FileNotFoundError:
            raise NotFound(f"no entry {entry!r}") from None
        except OSError as exc:
            raise CorruptData(f"cannot list backups of {entry!r}: {exc.strerror}") from None
        return sorted(ts for ts in found if names.TIMESTAMP.fullmatch(ts))

    def check_alive(self) -> None:
        """CorruptData if the store vanished or became unreadable (a mount answers EIO, not an empty tree)."""
        try:
            os.stat(self.root / STORE_FILE)
        except OSError as exc:
            raise CorruptData(f"the store {self.root} is gone or unreadable: {exc.strerror}") from None

    def close(self) -> None:
        """Nothing to release for a local store; SshStore closes its connection here."""

    def backup_dir(self, entry: str, ts: str) -> Path:
        return self.entry_dir(entry) / "backups" / names.timestamp(ts)

    def backups(self, entry: str) -> list[BackupRecord]:
        """Committed backups, oldest first; unreadable ones carry their error."""
        base = self.entry_dir(entry) / "backups"
        try:
            found = sorted(os.listdir(base))
        except FileNotFoundError:
            self.load_entry(entry)
            return []
        records = []
        for ts in found:
            if not names.TIMESTAMP.fullmatch(ts):
                continue
            records.append(self.backup_record(entry, ts))
        return records

    def backup_record(self, entry: str, ts: str) -> BackupRecord:
        path = self.backup_dir(entry, ts) / META
        try:
            return BackupRecord(entry, ts, BackupMeta.from_json(path.read_bytes(), str(path)))
        except FileNotFoundError:
            return BackupRecord(entry, ts, None, f"{path}: metadata missing")
        except OSError as exc:
            return BackupRecord(entry, ts, None, f"{path}: {exc.strerror}")
        except VmlfsError as exc:
            return BackupRecord(entry, ts, None, str(exc))

    def meta(self, entry: str, ts: str) -> BackupMeta:
        record = self.backup_record(entry, ts)
        if record.meta is None:
            if not self.backup_dir(entry, ts).exists():
                raise NotFound(f"entry {entry!r} has no backup {ts}")
            raise CorruptData(record.error or "unreadable backup")
        return record.meta

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

    def read_backup_file(self, entry: str, ts: str, name: str) -> bytes:
        """A small file of the backup directory (env.txt, history.txt)."""
        if name not in ("env.txt", "history.txt", META):
            raise InvalidRequest(f"{name!r} is not a backup file")
        try:
            return (self.backup_dir(entry, ts) / name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{entry}@{ts} has no {name}") from None

    # writing -----------------------------------------------------------------

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
            raise StorageFull(f"cannot create {work}: {exc.strerror}") from exc
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
            raise StorageFull(f"cannot commit backup {entry}@{ts}: {exc.strerror}") from exc
