"""The store layout, once, over a few file primitives that each store implements.

A store directory looks the same wherever it lives (docs/FORMAT.md); what
differs between a local store and one over SSH is only how a file is read,
written, listed or renamed. :class:`StoreLayout` holds everything that is
about the layout — the header, entries, the default entry, listing backups
and reading their metadata — and calls the primitives with paths relative to
the store root, built only from names that passed :mod:`vmlfs.names`.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from vmlfs import names
from vmlfs.archive.manifest import Manifest
from vmlfs.archive.seekable import FrameCache, SeekableReader
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
BACKUP_FILES = ("env.txt", "history.txt", META)  # the small files read_backup_file serves


@dataclass
class BackupRecord:
    """A committed backup as listed: its metadata, or why it cannot be read."""

    entry: str
    timestamp: str
    meta: BackupMeta | None
    error: str | None = None


def entry_path(name: str, *parts: str) -> str:
    return "/".join(["entries", names.entry_name(name), *parts])


def backup_path(entry: str, ts: str, *parts: str) -> str:
    return entry_path(entry, "backups", names.timestamp(ts), *parts)


class StoreLayout(ABC):
    """A store: header, entries and backup listings here; file access and the rest of
    the port (manifests, layers, the lock, committing) in each implementation."""

    description: str

    # primitives (paths relative to the store root, '/'-separated) ---------------------

    @abstractmethod
    def _read(self, rel: str) -> bytes:
        """The whole file; FileNotFoundError if it is missing."""

    @abstractmethod
    def _write(self, rel: str, data: bytes) -> None:
        """Replace a small file so readers see the old or the new content, never half."""

    @abstractmethod
    def _listdir(self, rel: str) -> list[str]:
        """Names in a directory; FileNotFoundError if it is missing."""

    @abstractmethod
    def _exists(self, rel: str) -> bool: ...

    @abstractmethod
    def _mkdir(self, rel: str) -> None:
        """Create one directory; FileExistsError if it exists."""

    @abstractmethod
    def _rename(self, rel: str, new_rel: str) -> None: ...

    @abstractmethod
    def _rmtree(self, rel: str) -> None: ...

    # the rest of the store port (used by the engine, the mount and the CLI) -------------

    frame_cache: FrameCache

    @abstractmethod
    def lock(self, entry: str) -> AbstractContextManager:
        """The entry's backup lock: one backup at a time, across processes (and hosts)."""

    @abstractmethod
    def open_manifest(self, entry: str, ts: str) -> Manifest: ...

    @abstractmethod
    def open_layer(self, entry: str, ts: str) -> SeekableReader: ...

    @abstractmethod
    def file_digest(self, entry: str, ts: str, name: str) -> tuple[int, str]:
        """(size, sha256 hex) of a file of a backup directory, for verify."""

    @abstractmethod
    def clean_tmp(self, entry: str) -> int:
        """Remove leftovers of interrupted backups; call only while holding the lock."""

    @abstractmethod
    def new_work_dir(self, entry: str, ts: str) -> Path:
        """A local directory to build a backup in."""

    @abstractmethod
    def commit(self, entry: str, work: Path, ts: str) -> None:
        """Make the built backup visible atomically, everything in it durable first."""

    @abstractmethod
    def close(self) -> None: ...

    # header ---------------------------------------------------------------------------

    def _create_or_check(self, create: bool) -> None:
        """Make a new store's skeleton, or refuse a missing one; then check the header."""
        if not self._exists(STORE_FILE):
            if not create:
                raise NotFound(f"no vmlfs store at {self.description}", hint="create one with 'vmlfs entry add' or pass --store")
            try:
                if not self._exists("entries"):
                    self._mkdir("entries")
            except OSError as exc:
                raise StorageFull(f"cannot create store at {self.description}: {exc.strerror}") from None
            self._write(STORE_FILE, dump_json({"format": "vmlfs-store", "version": STORE_VERSION, "default_entry": None}))
        self._read_header()

    def _read_header(self) -> dict:
        where = f"{self.description}/{STORE_FILE}"
        try:
            doc = parse_json(self._read(STORE_FILE), where)
        except OSError as exc:
            raise CorruptData(f"cannot read {where}: {exc.strerror}") from None
        if doc.get("format") != "vmlfs-store":
            raise CorruptData(f"{where} is not a vmlfs store header")
        check_version(doc, STORE_VERSION, where)
        return doc

    def check_alive(self) -> None:
        """CorruptData if the store vanished or became unreadable (a mount answers EIO, not an empty tree)."""
        try:
            self._read(STORE_FILE)
        except OSError as exc:
            raise CorruptData(f"the store {self.description} is gone or unreadable: {exc.strerror}") from None

    # entries --------------------------------------------------------------------------

    def entry_names(self) -> list[str]:
        try:
            found = sorted(self._listdir("entries"))
        except FileNotFoundError:
            return []
        out = []
        for name in found:
            try:
                out.append(names.entry_name(name))
            except InvalidRequest:
                if not name.startswith(".removing-"):
                    log.warning("ignoring %r in the store: not a valid entry name", name)
        return out

    def load_entry(self, name: str) -> EntryConfig:
        rel = entry_path(name, "entry.json")
        try:
            data = self._read(rel)
        except FileNotFoundError:
            if self._exists(entry_path(name)):
                raise CorruptData(f"{self.description}/{rel} is missing (a stray directory, or a damaged entry)") from None
            raise NotFound(f"no entry {name!r} in {self.description}", hint="see 'vmlfs entry list'") from None
        except OSError as exc:
            raise CorruptData(f"cannot read {self.description}/{rel}: {exc.strerror}") from None
        return EntryConfig.from_json(data, f"{self.description}/{rel}")

    def add_entry(self, cfg: EntryConfig) -> None:
        try:
            self._mkdir(entry_path(cfg.name))
        except FileExistsError:
            raise AlreadyExists(f"entry {cfg.name!r} already exists") from None
        except OSError as exc:
            raise StorageFull(f"cannot create entry {cfg.name!r}: {exc.strerror}") from None
        self._mkdir(entry_path(cfg.name, "backups"))
        self._write(entry_path(cfg.name, "entry.json"), cfg.to_json())

    def save_entry(self, cfg: EntryConfig) -> None:
        self._write(entry_path(cfg.name, "entry.json"), cfg.to_json())

    def remove_entry(self, name: str) -> None:
        """Rename the entry away under its lock (it vanishes at once), then delete it."""
        self.load_entry(name)
        doomed = f"entries/.removing-{names.entry_name(name)}-{os.getpid()}"
        with self.lock(name):
            self._rename(entry_path(name), doomed)
        self._rmtree(doomed)
        if self.default_entry() == name:
            self.set_default_entry(None)

    def default_entry(self) -> str | None:
        """The configured default, or the only entry."""
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
        self._write(STORE_FILE, dump_json(doc))

    # backups --------------------------------------------------------------------------

    def timestamps(self, entry: str) -> list[str]:
        """Committed backups of ``entry``, oldest first, by name only (no metadata read): for the mount."""
        try:
            found = self._listdir(entry_path(entry, "backups"))
        except FileNotFoundError:
            if self._exists(entry_path(entry)):
                return []  # a damaged entry (or a stray directory) has no backups; load_entry says what is wrong
            raise NotFound(f"no entry {entry!r}") from None
        except OSError as exc:
            raise CorruptData(f"cannot list backups of {entry!r}: {exc.strerror}") from None
        return sorted(ts for ts in found if names.TIMESTAMP.fullmatch(ts))

    def backups(self, entry: str) -> list[BackupRecord]:
        """Committed backups, oldest first; unreadable ones carry their error."""
        try:
            stamps = self.timestamps(entry)
        except NotFound:
            self.load_entry(entry)  # a missing entry says so; an entry without backups/ has none
            return []
        return [self.backup_record(entry, ts) for ts in stamps]

    def backup_record(self, entry: str, ts: str) -> BackupRecord:
        problem = names.backup_name_problem(ts)
        if problem:
            return BackupRecord(entry, ts, None, f"{self.description}/{entry_path(entry, 'backups')}/{ts}: {problem}")
        rel = backup_path(entry, ts, META)
        where = f"{self.description}/{rel}"
        try:
            return BackupRecord(entry, ts, BackupMeta.from_json(self._read(rel), where))
        except FileNotFoundError:
            return BackupRecord(entry, ts, None, f"{where}: metadata missing")
        except OSError as exc:
            return BackupRecord(entry, ts, None, f"{where}: {exc.strerror}")
        except VmlfsError as exc:
            return BackupRecord(entry, ts, None, str(exc))

    def meta(self, entry: str, ts: str) -> BackupMeta:
        record = self.backup_record(entry, ts)
        if record.meta is None:
            if names.TIMESTAMP.fullmatch(ts) is None or not self._exists(entry_path(entry, "backups", ts)):
                raise NotFound(f"entry {entry!r} has no backup {ts}")
            raise CorruptData(record.error or "unreadable backup")
        return record.meta

    def read_backup_file(self, entry: str, ts: str, name: str) -> bytes:
        """A small file of the backup directory (env.txt, history.txt, meta.json)."""
        if name not in BACKUP_FILES:
            raise InvalidRequest(f"{name!r} is not a backup file")
        try:
            return self._read(backup_path(entry, ts, name))
        except FileNotFoundError:
            raise NotFound(f"{entry}@{ts} has no {name}") from None
