"""The store layout, once, over a few file primitives that each store implements.

A store directory looks the same wherever it lives (docs/FORMAT.md); what
differs between a local store and one over SSH is only how a file is read,
written, listed or renamed. :class:`StoreLayout` holds everything that is
about the layout — the header, entries, the default entry, listing backups
and reading their records, opening a backup's tree and layers, committing a
backup (objects first, then its record with one conditional create) — for
format 2 and, read-only, format 1. It calls the primitives
(:mod:`vmlfs.engine.store_files`) with paths relative to the store root,
built only from names that passed :mod:`vmlfs.names`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from abc import abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable, TypeVar

from vmlfs import names
from vmlfs.archive.manifest import Manifest
from vmlfs.archive.seekable import FrameCache, SeekableReader
from vmlfs.engine import faults
from vmlfs.engine.store_files import (  # noqa: F401  (the layout's names, re-exported for its users)
    BACKUP_FILES,
    CVMFS_LAYER,
    CVMFS_TREE,
    GARBAGE,
    LAYER,
    LEASES,
    MANIFEST,
    META,
    OBJECT_KINDS,
    STORE_FILE,
    BackupRecord,
    StoreFiles,
    backup_path,
    entry_path,
    object_path,
    record_path,
)
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
    VmlfsError,
    write_failed,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
#: The directories every format-2 store has (besides entries/), made when it is created.
STORE_DIRS = ("objects", *(f"objects/{kind}" for kind in OBJECT_KINDS), GARBAGE, LEASES)


class StoreLayout(StoreFiles):
    """A store: header, entries, backup listings and format-2 objects here; file access
    and the rest of the port (the lock, opening trees and layers) in each implementation."""

    description: str
    format: int = 2
    #: A mount's read-ahead over this store, (frames ahead, parallel loads); None: the defaults, sized for
    #: decompression (one thread per core). A store whose every frame costs a round trip sets more.
    readahead: tuple[int, int] | None = None

    # the rest of the store port (used by the engine, the mount and the CLI) -------------

    frame_cache: FrameCache

    @abstractmethod
    def lock(self, entry: str) -> AbstractContextManager:
        """The entry's backup lock: one backup at a time, across processes (and hosts)."""

    @abstractmethod
    def clean_tmp(self, entry: str) -> int:
        """Remove leftovers of interrupted backups; call only while holding the lock."""

    @abstractmethod
    def new_work_dir(self, entry: str, ts: str) -> Path:
        """A local directory to build a backup in."""

    @abstractmethod
    def space(self) -> tuple[int, int]:
        """(total, available) bytes where the store lives, for ``df`` on a mount."""

    @abstractmethod
    def close(self) -> None: ...

    # header ---------------------------------------------------------------------------

    def _create_or_check(self, create: bool) -> None:
        """Make a new store's skeleton, or refuse a missing one; then check the header (read once: on
        a remote store, asking whether it exists first was one more round trip per command)."""
        try:
            header: bytes | None = self._read(STORE_FILE)
        except FileNotFoundError:
            header = None
        except OSError as exc:
            raise CorruptData(f"cannot read {self.description}/{STORE_FILE}: {exc.strerror}") from None
        if header is None:
            if not create:
                raise NotFound(f"no vmlfs store at {self.description}", hint="create one with 'vmlfs entry add' or pass --store")
            try:
                if not self._exists("entries"):
                    self._mkdir("entries")
            except OSError as exc:
                raise write_failed(exc, f"cannot create store at {self.description}") from None
            header = dump_json({"format": "vmlfs-store", "version": STORE_VERSION, "default_entry": None})
            self._write(STORE_FILE, header)
        self._read_header(header)
        if self.format >= 2:
            self.make_object_dirs()

    def make_object_dirs(self) -> None:
        for rel in STORE_DIRS:
            if not self._exists(rel):
                try:
                    self._mkdir(rel)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise write_failed(exc, f"cannot create {self.description}/{rel}") from None

    def set_version(self, version: str) -> None:
        """Switch the store's format with one atomic replace of its header (upgrade's commit point)."""
        doc = self._read_header()
        doc["version"] = version
        self._write(STORE_FILE, dump_json(doc))
        self._read_header()

    def _read_header(self, header: bytes | None = None) -> dict:
        """The store's header (``header``: its bytes, already read), checked; sets :attr:`format`."""
        where = f"{self.description}/{STORE_FILE}"
        try:
            doc = parse_json(self._read(STORE_FILE) if header is None else header, where)
        except OSError as exc:
            raise CorruptData(f"cannot read {where}: {exc.strerror}") from None
        if doc.get("format") != "vmlfs-store":
            raise CorruptData(f"{where} is not a vmlfs store header")
        self.format = check_version(doc, STORE_VERSION, where, oldest=1)
        return doc

    def require_format(self, major: int, what: str) -> None:
        if self.format < major:
            raise InvalidRequest(f"{what} needs a store in format {major}; {self.description} is in format {self.format}",
                                 hint="convert it with 'vmlfs store upgrade'")

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
        """A new entry; its name must be one a Windows file system can hold too, and must not differ only
        in case from an existing entry's (docs/FORMAT.md, "Windows-safe stores")."""
        names.new_entry_name(cfg.name)
        clash = [e for e in self.entry_names() if e.lower() == cfg.name.lower() and e != cfg.name]
        if clash:
            raise InvalidRequest(f"entry name {cfg.name!r} differs only in case from the existing entry {clash[0]!r}",
                                 hint="a store on a Windows or macOS file system could not hold both; choose another name")
        try:
            self._mkdir(entry_path(cfg.name))
        except FileExistsError:
            raise AlreadyExists(f"entry {cfg.name!r} already exists") from None
        except OSError as exc:
            raise write_failed(exc, f"cannot create entry {cfg.name!r}") from None
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
        if self.format >= 2:  # a format-2 backup is one record file; a directory left there is format-1 debris
            found = [n[:-5] for n in found if n.endswith(".json")]
        return sorted(ts for ts in found if names.TIMESTAMP.fullmatch(ts))

    def backups(self, entry: str) -> list[BackupRecord]:
        """Committed backups, oldest first; unreadable ones carry their error."""
        try:
            stamps = self.timestamps(entry)
        except NotFound:
            self.load_entry(entry)  # a missing entry says so; an entry without backups/ has none
            return []
        protected = self.protected(entry)
        records = self.backup_records(entry, stamps)
        for record in records:
            record.protected = record.timestamp in protected
        return records

    def _record_rel(self, entry: str, ts: str) -> str:
        return record_path(entry, ts) if self.format >= 2 else backup_path(entry, ts, META)

    def backup_record(self, entry: str, ts: str) -> BackupRecord:
        return self.backup_records(entry, [ts])[0]

    def backup_records(self, entry: str, stamps: list[str]) -> list[BackupRecord]:
        """The records of backups ``stamps``, read by one :meth:`_read_each` (side by side on S3)."""
        rels = {ts: self._record_rel(entry, ts) for ts in stamps if not names.backup_name_problem(ts)}
        read = dict(zip(rels, self._read_each(list(rels.values()))))
        return [self._record(entry, ts, read.get(ts, b"")) for ts in stamps]

    def _read_each(self, rels: list[str]) -> list[bytes | OSError | VmlfsError]:
        """Each file's bytes, or the error reading it gave, one after the other (a store whose every
        read is a round trip reads them side by side: S3Store)."""
        return [self._read_or_error(rel) for rel in rels]

    def _read_or_error(self, rel: str) -> bytes | OSError | VmlfsError:
        try:
            return self._read(rel)
        except (OSError, VmlfsError) as exc:
            return exc

    def _record(self, entry: str, ts: str, read: bytes | OSError | VmlfsError) -> BackupRecord:
        """Backup ``ts``'s record from what reading its file gave."""
        problem = names.backup_name_problem(ts)
        if problem:
            return BackupRecord(entry, ts, None, f"{self.description}/{entry_path(entry, 'backups')}/{ts}: {problem}")
        where = f"{self.description}/{self._record_rel(entry, ts)}"
        if isinstance(read, FileNotFoundError):
            return BackupRecord(entry, ts, None, f"{where}: metadata missing")
        if isinstance(read, OSError):
            return BackupRecord(entry, ts, None, f"{where}: {read.strerror}")
        if isinstance(read, VmlfsError):
            return BackupRecord(entry, ts, None, str(read))
        try:
            meta = BackupMeta.from_json(read, where)
        except VmlfsError as exc:
            return BackupRecord(entry, ts, None, str(exc))
        if meta.major != self.format or meta.timestamp != ts:
            return BackupRecord(entry, ts, None, f"{where}: a format-{meta.major} record of {meta.timestamp} here")
        return BackupRecord(entry, ts, meta)

    def meta(self, entry: str, ts: str) -> BackupMeta:
        record = self.backup_record(entry, ts)
        if record.meta is None:
            if names.TIMESTAMP.fullmatch(ts) is None or not self._exists(self._record_rel(entry, ts)):
                raise NotFound(f"entry {entry!r} has no backup {ts}")
            raise CorruptData(record.error or "unreadable backup")
        return record.meta

    def read_backup_file(self, entry: str, ts: str, name: str) -> bytes:
        """A small file of the backup (env.txt, history.txt, meta.json), checked against its record."""
        if name not in BACKUP_FILES:
            raise InvalidRequest(f"{name!r} is not a backup file")
        if self.format < 2:
            try:
                return self._read(backup_path(entry, ts, name))
            except FileNotFoundError:
                raise NotFound(f"{entry}@{ts} has no {name}") from None
        if name == META:
            self.meta(entry, ts)
            return self._read(record_path(entry, ts))
        record = self.meta(entry, ts).files.get(name)
        if record is None:
            raise NotFound(f"{entry}@{ts} has no {name}")
        try:
            data = self._read(self._object_rel("blobs", record["sha256"]))
        except FileNotFoundError:
            raise CorruptData(f"{entry}@{ts}: {name} is missing from the store") from None
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise CorruptData(f"{entry}@{ts}: {name} differs from the sha256 its record names (damaged)")
        return data

    # trees and layers -------------------------------------------------------------------

    def _object_rel(self, kind: str, digest: str) -> str:
        """Where an object is: in place, or moved aside by gc and not yet removed (a mount
        that still reads a forgotten backup finds it there)."""
        rel = object_path(kind, digest)
        return rel if self._exists(rel) else self._moved_aside(rel) or rel

    def _moved_aside(self, rel: str) -> str | None:
        for name in self._garbage_names():
            if name.endswith("." + rel.replace("/", "+")):
                return f"{GARBAGE}/{name}"
        return None

    def _open_object(self, kind: str, digest: str, open_at: Callable[[str], T]) -> T:
        """``open_at(rel)`` of the object where it is, as :meth:`_object_rel` finds it, but tried
        in place first: on a remote store, asking first would be one more round trip per open."""
        rel = object_path(kind, digest)
        try:
            return open_at(rel)
        except CorruptData:  # what a missing layer or tree is reported as (damaged ones too)
            moved = self._moved_aside(rel)
            if moved is None or self._exists(rel):
                raise
        return open_at(moved)

    def open_manifest(self, entry: str, ts: str) -> Manifest:
        """The backup's tree, every file of it checked against the sha256 its record names."""
        where = f"{entry}@{ts}"
        if self.format < 2:
            digest = self.meta(entry, ts).manifest["sha256"]
            return Manifest(self._tree_file(backup_path(entry, ts, MANIFEST), digest, where), where)
        return self.open_tree(self.meta(entry, ts).manifest, where)

    def open_tree(self, ref: dict, where: str) -> Manifest:
        """A tree from its reference in a record: {sha256, size, base: {sha256, size} | None}."""
        base = ref.get("base")
        path = self.tree_path(ref["sha256"], where)
        if base is None:
            return Manifest(path, where)
        return Manifest(path, where, base=self.tree_path(base["sha256"], where), base_digest=base["sha256"])

    def tree_path(self, digest: str, where: str = "gc") -> str:
        """A local, checked path of one tree object (gc rewrites trees from it); a tree a remote
        store cached is used without first asking the store where the object is (a round trip)."""
        return self._cached_tree(digest) or self._open_object("trees", digest,
                                                              lambda rel: self._tree_file(rel, digest, where))

    def open_cvmfs_tree(self, entry: str, ts: str) -> Manifest:
        """The listing of a backup's CernVM-FS cache part (NotFound if it has none), checked like any tree."""
        part = self.meta(entry, ts).cvmfs
        if part is None:
            raise NotFound(f"{entry}@{ts} has no CernVM-FS cache part", hint="take one with 'vmlfs backup --with-cvmfs-cache'")
        return self.open_tree({**part["tree"], "base": None}, f"{entry}@{ts} (cvmfs cache)")

    def open_layer(self, entry: str, name: str) -> SeekableReader:
        """A layer by the name a tree gives it: a backup's timestamp (format 1) or the object's sha256."""
        if self.format < 2:
            digest = self.meta(entry, name).layer["sha256"]
            return self._layer_reader(backup_path(entry, name, LAYER), digest, f"layer of {entry}@{name}")
        where = f"layer {name[:12]} of {entry}"
        return self._open_object("layers", name, lambda rel: self._layer_reader(rel, name, where))

    def object_digest(self, kind: str, digest: str) -> tuple[int, str]:
        """(size, sha256 hex) of an object as stored, for verify."""
        return self._digest(self._object_rel(kind, digest))

    def file_digest(self, entry: str, ts: str, name: str) -> tuple[int, str]:
        """(size, sha256 hex) of a file of a format-1 backup directory, for verify."""
        return self._digest(backup_path(entry, ts, name))

    # committing -------------------------------------------------------------------------

    def commit(self, entry: str, work: Path, ts: str) -> None:
        """Store the objects built in ``work``, then create the record: the one step that makes
        the backup visible, and fails if the name is taken. Objects written before a crash
        and named by no record are gc's to remove."""
        self.require_format(2, "a backup")
        meta = BackupMeta.from_json((work / META).read_bytes(), f"{work}/{META}")
        try:
            self._put(work / LAYER, object_path("layers", meta.layer["sha256"]))
            self._put(work / MANIFEST, object_path("trees", meta.manifest["sha256"]))
            for name, record in meta.files.items():
                self._put(work / name, object_path("blobs", record["sha256"]))
            if meta.cvmfs is not None:
                self._put(work / CVMFS_LAYER, object_path("layers", meta.cvmfs["layer"]["sha256"]))
                self._put(work / CVMFS_TREE, object_path("trees", meta.cvmfs["tree"]["sha256"]))
            faults.step("commit-record")
            self._create(record_path(entry, ts), meta.to_json())
        except FileExistsError:
            raise AlreadyExists(f"backup {entry}@{ts} already exists") from None
        except OSError as exc:
            raise write_failed(exc, f"cannot commit backup {entry}@{ts} to {self.description}") from exc

    def format1_file(self, entry: str, ts: str, name: str) -> Path:
        return self._local_path(backup_path(entry, ts, name))

    def format1_dirs(self, entry: str) -> list[str]:
        """Format-1 backup directories still in ``backups/`` (upgrade removes them once committed)."""
        return sorted(n for n in self._listdir(entry_path(entry, "backups")) if names.TIMESTAMP.fullmatch(n))

    def remove_format1_dir(self, entry: str, ts: str) -> None:
        self._rmtree(backup_path(entry, ts))

    def put_object(self, local: Path, kind: str, digest: str) -> None:
        self._put(local, object_path(kind, digest))

    def has_object(self, kind: str, digest: str) -> bool:
        return self._exists(object_path(kind, digest))

    def read_object(self, kind: str, digest: str) -> bytes:
        """A small object (a blob) whole."""
        return self._read(self._object_rel(kind, digest))

    def create_record(self, entry: str, ts: str, data: bytes) -> None:
        """An imported backup's record, by the conditional create that commits a backup (its objects
        are stored first): AlreadyExists if the entry has a backup of that name."""
        try:
            self._create(record_path(entry, names.timestamp(ts)), data)
        except FileExistsError:
            raise AlreadyExists(f"backup {entry}@{ts} already exists") from None
        except OSError as exc:
            raise write_failed(exc, f"cannot add backup {entry}@{ts} to {self.description}") from exc

    def replace_record(self, entry: str, meta: BackupMeta) -> None:
        """gc's re-pointing of a backup at rewritten trees: the record is replaced atomically."""
        self._write(record_path(entry, meta.timestamp), meta.to_json())

