"""One mount: the entry point an adapter holds, and the context every node asks.

:class:`MountState` implements the two protocols of :mod:`vmlfs.fs.context`
over a store and the jobs, and owns what one mount shares: the inode table,
the read-ahead, and caches of immutable things. Committed backups never
change (DESIGN.md, "commit"), so their metadata, manifests and layer readers
are cached for the life of the mount; the lists of entries and backups are
read again on every listing, and on a lookup of a name the last listing (if
under a second old) lacks, which is how a backup committed by another process
appears without a remount while a backup still in ``.tmp`` never does.

An adapter uses ``root``, ``table`` (kernel references: ``get``,
``remember``, ``forget``), ``active_jobs()`` and ``close()``; nodes use the
context protocols only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Hashable, TypeVar

from vmlfs.app.changes import changes_text
from vmlfs.archive.manifest import Manifest
from vmlfs.archive.readahead import ReadAhead
from vmlfs.archive.seekable import SeekableReader
from vmlfs.engine.model import BackupMeta
from vmlfs.engine.store import BackupRecord, StoreLayout
from vmlfs.errors import CorruptData, VmlfsError
from vmlfs.fs import layout
from vmlfs.fs.archive import BackupData
from vmlfs.fs.control import Jobs
from vmlfs.fs.inodes import InodeTable
from vmlfs.fs.protocol import SHORT, FsNode
from vmlfs.fs.tree import RootDir

log = logging.getLogger(__name__)
T = TypeVar("T")


class MountState:
    """Implements :class:`~vmlfs.fs.context.MountContext` and :class:`~vmlfs.fs.context.ArchiveSource`."""

    def __init__(self, store: StoreLayout, jobs: Jobs, *, owner_uid: int | None = None, owner_gid: int | None = None) -> None:
        self.store = store
        self.jobs = jobs
        self.table = InodeTable()
        self.owner_uid = os.getuid() if owner_uid is None else owner_uid
        self.owner_gid = os.getgid() if owner_gid is None else owner_gid
        self.mounted_ns = time.time_ns()
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], BackupRecord] = {}
        self._backups: dict[tuple[str, str], BackupData] = {}
        self._layers: dict[tuple[str, str], SeekableReader] = {}
        self._newest: dict[str, int] = {}  # the time of each listed entry's newest backup
        # The store's last answers and when (monotonic): the entries ("names",), an entry's backups
        # ("stamps", e), whether it has a domain ("domain", e). Lookups within SHORT use them, and a
        # listing compares an entry's backups with the last ones to notice a change.
        self._recent: dict[tuple[str, ...], tuple[object, float]] = {}
        self._serves_xattrs: bool | None = None  # decided at the first attribute request (serves_xattrs)
        self.on_change: Callable[[str, list[str]], None] = lambda entry, gone: None
        """Told (entry, backups that vanished) when a listing finds an entry's backups changed: the
        FUSE adapter then has the kernel drop what it cached of that entry."""
        jobs.on_finished = self.refresh
        self.readahead = ReadAhead(*store.readahead) if store.readahead else ReadAhead()
        self.root = RootDir(self)
        self.table.pin(self.root)
        self.table.resolver = self._archive_node
        # While mounted, gc keeps what it moves aside from a forgotten backup this mount may be reading.
        self._lease = store.take_lease()

    def space(self) -> tuple[int, int]:
        """(total, available) bytes where the store lives: what ``df`` shows for the mount (blocks I/O)."""
        return self.store.space()

    def active_jobs(self) -> list[str]:
        """Entries (and provisioning) with a job running now: what an unmount abandons."""
        return self.jobs.active()

    # MountContext ---------------------------------------------------------------------

    def now_ns(self) -> int:
        return time.time_ns()

    def number(self, key: Hashable) -> int:
        return self.table.number(key)

    def entry_names(self) -> list[str]:
        self.store.check_alive()
        return self._answered(("names",), self.store.entry_names())

    def entry_names_recently(self) -> list[str] | None:
        """From memory: the entries as listed under SHORT seconds ago, else None."""
        return self._recently(("names",))

    def _answered(self, key: tuple[str, ...], value: T) -> T:
        with self._lock:
            self._recent[key] = (value, time.monotonic())
        return value

    def _recently(self, key: tuple[str, ...]) -> Any:
        """What the store answered for ``key`` under SHORT seconds ago, or None."""
        with self._lock:
            value, at = self._recent.get(key, (None, 0.0))
        return value if value is not None and time.monotonic() - at < SHORT else None

    def timestamps(self, entry: str) -> list[str]:
        """Committed backups of ``entry``, oldest first; a change since the last listing (a backup taken
        or forgotten, here or by another process) updates the entry's time and is told to ``on_change``."""
        self.store.check_alive()
        stamps = sorted(self.store.timestamps(entry))
        newest = self.backup_time_ns(entry, stamps[-1]) if stamps else self.mounted_ns
        with self._lock:
            before = self._recent.get(("stamps", entry), (None, 0.0))[0]
            self._recent[("stamps", entry)], self._newest[entry] = (stamps, time.monotonic()), newest
        if before is not None and before != stamps:
            self.on_change(entry, sorted(set(before) - set(stamps)))
        return stamps

    def listed_recently(self, entry: str) -> list[str] | None:
        """From memory: the entry's backups as listed under SHORT seconds ago, else None. The kernel
        reads ``latest`` at every path walk through it (it caches no symlink target), so ``ls -lR
        latest/home`` listed the store once per file. A job's refresh lists again at once."""
        return self._recently(("stamps", entry))

    def listed(self, entry: str) -> bool:
        with self._lock:
            return ("stamps", entry) in self._recent

    def newest_ns(self, entry: str | None = None) -> int:
        """From memory: the time of ``entry``'s newest backup as last listed (of any entry's, for None)."""
        with self._lock:
            times = [self._newest[entry]] if entry in self._newest else [] if entry else list(self._newest.values())
        return max(times, default=self.mounted_ns)

    def refresh(self, entry: str) -> None:
        """After a job through the control files (a backup, a prune): list the entry again, so its
        time and the kernel's caches follow at once (provisioning may have added an entry)."""
        try:
            if entry in self.store.entry_names():
                self.timestamps(entry)
        except VmlfsError as exc:
            log.warning("after a job of %s, listing it failed: %s", entry, exc)

    def has_domain(self, entry: str) -> bool:
        return self._answered(("domain", entry), bool(self.store.load_entry(entry).domain))

    def has_domain_recently(self, entry: str) -> bool | None:
        return self._recently(("domain", entry))

    def serves_xattrs(self) -> bool:
        """Whether this mount answers extended attributes at all; decided once, at the first request
        (blocks: it reads every backup's record, which the mount caches anyway).

        ``ls -l`` asks for two attributes of every file (``security.selinux``,
        ``system.posix_acl_access``), one FUSE round trip each, and the kernel caches
        no answer. A store whose records all say ``xattr_files: 0`` gets False: the
        adapter answers as a file system without attributes and the kernel stops
        asking, which makes ``ls -lR`` several times faster. A record that does not say
        (written by an older vmlfs) counts as having some. A backup with attributes
        committed later is logged (a remount shows them)."""
        with self._lock:
            decided = self._serves_xattrs
        if decided is None:
            listed = {entry: self.timestamps(entry) for entry in self.entry_names()}
            for entry, stamps in listed.items():
                self._read_records(entry, stamps)
            decided = any(_may_have_xattrs(self.record(entry, ts).meta) for entry, stamps in listed.items() for ts in stamps)
            with self._lock:
                if self._serves_xattrs is None:
                    self._serves_xattrs = decided
                decided = self._serves_xattrs
        return decided

    def record(self, entry: str, ts: str) -> BackupRecord:
        """A backup's metadata (cached once read successfully) or why it cannot be read."""
        key = (entry, ts)
        with self._lock:
            cached = self._records.get(key)
        if cached is not None:
            return cached
        record = self.store.backup_record(entry, ts)
        if record.meta is None:
            log.warning("backup %s@%s is damaged: %s", entry, ts, record.error)
            return record
        with self._lock:
            kept = self._records.setdefault(key, record)
            unseen_xattrs = self._serves_xattrs is False and kept is record and _may_have_xattrs(record.meta)
        if unseen_xattrs:
            log.warning("backup %s@%s kept extended attributes; this mount started on a store without any and "
                        "answers without them: mount again to see them", entry, ts)
        return kept

    def _read_records(self, entry: str, stamps: list[str]) -> None:
        """Cache the readable records of ``stamps`` not cached yet, read with one store call (on S3
        side by side: one GET each, which in turn made a store of 100 backups wait 100 round trips)."""
        with self._lock:
            missing = [ts for ts in stamps if (entry, ts) not in self._records]
        for record in self.store.backup_records(entry, missing) if missing else []:
            if record.meta is not None:
                with self._lock:
                    self._records.setdefault((entry, record.timestamp), record)

    def backup_meta(self, entry: str, ts: str) -> BackupMeta:
        record = self.record(entry, ts)
        if record.meta is None:
            raise CorruptData(record.error or f"backup {entry}@{ts} is unreadable")
        return record.meta

    def backup_time_ns(self, entry: str, ts: str) -> int:
        meta = self.record(entry, ts).meta
        return layout.backup_time_ns(meta) if meta else self.mounted_ns

    def read_backup_file(self, entry: str, ts: str, name: str) -> bytes:
        return self.store.read_backup_file(entry, ts, name)

    def changes_text(self, entry: str, ts: str) -> bytes:
        return changes_text(self.store, entry, ts)

    def home(self, entry: str, ts: str) -> FsNode:
        return self.backup(entry, ts).root()

    def backup(self, entry: str, ts: str) -> BackupData:
        with self._lock:
            data = self._backups.get((entry, ts))
            if data is None:
                data = self._backups[(entry, ts)] = BackupData(self, entry, ts)
            return data

    def _archive_node(self, key: Hashable, number: int) -> FsNode:
        """The archive node the inode table numbered ``number`` in range ``key`` (("archive", entry, ts)),
        built again from its tree row: the table does not hold the nodes the kernel looked up."""
        _, entry, ts = key  # type: ignore[misc]
        data = self.backup(entry, ts)
        return data.node(data.manifest().get(number))

    def warm(self) -> None:
        """Open what the first read from the default entry's newest backup would: its tree (checked
        against its sha256, which reads the whole file) and its own layer (seek table, placement proof).

        The adapter runs this once after mounting, in a worker thread, so a first
        ``cat`` there does not wait for it (25 ms for a 20,000-file backup, cache
        dropped). A constant amount of work, whatever the store holds: one tree
        and one layer (not the layers of an incremental backup's bases: at the
        end of a chain of 99 they took 50 ms, and slowed the first listing).
        What fails here is left for the access that needs it to report.
        """
        try:
            entry = self.store.default_entry()
            stamps = self.timestamps(entry) if entry is not None else []
            if entry is None or not stamps:
                return
            ts = stamps[-1]
            meta = self.backup_meta(entry, ts)
            self.backup(entry, ts).manifest()
            self.layer(entry, meta.layer["sha256"] if self.store.format >= 2 else ts)
        except (VmlfsError, OSError) as exc:
            log.debug("warm-up: %s", exc)

    # ArchiveSource ---------------------------------------------------------------------

    def open_manifest(self, entry: str, ts: str) -> Manifest:
        return self.store.open_manifest(entry, ts)

    def reserve_inodes(self, key: Hashable, count: int) -> int:
        return self.table.range(key, count)

    def open_layer(self, entry: str, ts: str) -> SeekableReader | None:
        """The layer's reader if it is already open (never blocks)."""
        with self._lock:
            return self._layers.get((entry, ts))

    def layer(self, entry: str, ts: str) -> SeekableReader:
        """The reader of one layer, opened once; incremental backups read their base's layers too."""
        key = (entry, ts)
        with self._lock:
            reader = self._layers.get(key)
        if reader is None:
            opened = self.store.open_layer(entry, ts)
            with self._lock:
                reader = self._layers.setdefault(key, opened)
            if reader is not opened:
                opened.close()
        return reader

    def close(self) -> None:
        self.readahead.close()
        with self._lock:
            backups, layers = list(self._backups.values()), list(self._layers.values())
            self._backups.clear()
            self._layers.clear()
        for data in backups:
            data.close()
        for reader in layers:
            reader.close()
        if self._lease is not None:
            self.store.drop_lease(self._lease)
        self.store.close()
        if self.jobs.vm is not None:
            self.jobs.vm.close()


def _may_have_xattrs(meta: BackupMeta | None) -> bool:
    """A readable backup whose record does not say it kept no extended attributes."""
    return meta is not None and meta.stats.get("xattr_files", 1) > 0
