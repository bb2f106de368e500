"""What one mount shares: the store, the inode table, the jobs, and caches of immutable things.

Committed backups never change (DESIGN.md, "commit"), so their metadata,
manifests and layer readers are cached for the life of the mount; the lists
of entries and backups are read again on every listing or lookup, which is how
a backup committed by another process appears without a remount while a
backup still in ``.tmp`` never does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from vmlfs.archive.seekable import SeekableReader
from vmlfs.engine.store import BackupRecord, StoreLayout
from vmlfs.fs import layout
from vmlfs.fs.archive import BackupData
from vmlfs.fs.control import Jobs
from vmlfs.fs.inodes import InodeTable
from vmlfs.fs.nodes import Attrs, RootDir

log = logging.getLogger(__name__)


class MountState:
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
        # Read-ahead decompression: fire-and-forget, off the trio loop and its thread limiter,
        # one worker per core so a sequential reader keeps both busy.
        self.prefetcher = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="readahead")
        self.root = RootDir(self)
        self.table.pin(self.root)
        # While mounted, gc keeps what it moves aside from a forgotten backup this mount may be reading.
        self._lease = store.take_lease()

    def now_ns(self) -> int:
        return time.time_ns()

    def attrs(self, ino: int, mode: int, size: int, mtime_ns: int, timeout: float) -> Attrs:
        """Attributes of a virtual node: owned by the mounting user."""
        return Attrs(ino, mode, 1, self.owner_uid, self.owner_gid, size, mtime_ns, mtime_ns, timeout)

    def entry_names(self) -> list[str]:
        self.store.check_alive()
        return self.store.entry_names()

    def timestamps(self, entry: str) -> list[str]:
        """Committed backups of ``entry``, oldest first (directory names only: no metadata read)."""
        self.store.check_alive()
        return sorted(self.store.timestamps(entry))

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
            return self._records.setdefault(key, record)

    def meta_time_ns(self, entry: str, ts: str) -> int:
        meta = self.record(entry, ts).meta
        return layout.backup_time_ns(meta) if meta else self.mounted_ns

    def backup(self, entry: str, ts: str) -> BackupData:
        with self._lock:
            data = self._backups.get((entry, ts))
            if data is None:
                data = self._backups[(entry, ts)] = BackupData(self, entry, ts)
            return data

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
        self.prefetcher.shutdown(wait=True, cancel_futures=True)
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
