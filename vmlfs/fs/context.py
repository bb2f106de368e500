"""What a node may ask of the mount it belongs to: two narrow protocols.

Nodes never see the mount's state object, the store or the inode table, only
these questions, so the tree model can be built over any implementation of
them (the mount's :class:`vmlfs.fs.state.MountState`, or a test's fake) and
reused unchanged by every adapter.

Members marked *memory* answer without I/O and may be used by ``attrs()``;
the others may touch the store and run only in worker threads (lookups,
listings, opens, reads).
"""

from __future__ import annotations

from typing import Hashable, Protocol

from vmlfs.archive.manifest import Manifest
from vmlfs.archive.readahead import ReadAhead
from vmlfs.archive.seekable import SeekableReader
from vmlfs.engine.model import BackupMeta
from vmlfs.fs.control import Jobs
from vmlfs.fs.protocol import FsNode


class MountContext(Protocol):
    """What the virtual nodes (everything but the backed-up homes) need."""

    owner_uid: int
    """memory: the mounting user, who owns every virtual node and may write the control files."""
    owner_gid: int
    mounted_ns: int
    """memory: the time shown on ``/``, ``/entries`` and ``control/``."""
    jobs: Jobs
    """The jobs the control files start and report on (its ``status(entry)`` for an entry and
    ``status_size`` are *memory*; ``status(None)`` reads the store's default entry)."""

    def now_ns(self) -> int:
        """memory: the current time (the mtime of files that change all the time)."""
        ...

    def number(self, key: Hashable) -> int:
        """memory: the inode number of the virtual node ``key``, stable for the mount."""
        ...

    def entry_names(self) -> list[str]:
        ...

    def entry_names_recently(self) -> list[str] | None:
        """From memory: ``entry_names`` as listed under ``SHORT`` seconds ago, or None."""
        ...

    def listed(self, entry: str) -> bool:
        """Whether the mount has listed the entry's backups already (from memory)."""
        ...

    def newest_ns(self, entry: str | None = None) -> int:
        """The time of the entry's newest backup (of any entry's, for None) as last listed, from memory."""
        ...

    def timestamps(self, entry: str) -> list[str]:
        """Committed backups of ``entry``, oldest first."""
        ...

    def listed_recently(self, entry: str) -> list[str] | None:
        """From memory: ``timestamps`` as listed under ``SHORT`` seconds ago, or None."""
        ...

    def has_domain(self, entry: str) -> bool:
        """Whether ``entry`` names a libvirt domain (then it has ``vm/``)."""
        ...

    def has_domain_recently(self, entry: str) -> bool | None:
        """From memory: ``has_domain`` as read under ``SHORT`` seconds ago, or None."""
        ...

    def backup_meta(self, entry: str, ts: str) -> BackupMeta:
        """A backup's metadata; CorruptData (with the reason) if it cannot be read."""
        ...

    def backup_time_ns(self, entry: str, ts: str) -> int:
        """When a backup completed (the mount time if its metadata is damaged)."""
        ...

    def read_backup_file(self, entry: str, ts: str, name: str) -> bytes:
        """``env.txt`` or ``history.txt`` of a backup."""
        ...

    def changes_text(self, entry: str, ts: str) -> bytes:
        """``changes.txt`` of a backup: what changed since the backup before it, from the two trees."""
        ...

    def home(self, entry: str, ts: str) -> FsNode:
        """The root of a backup's archive nodes (its ``home`` directory)."""
        ...


class ArchiveSource(Protocol):
    """What the archive nodes of one backup need: its manifest, inode numbers and layers."""

    readahead: ReadAhead

    def open_manifest(self, entry: str, ts: str) -> Manifest:
        ...

    def reserve_inodes(self, key: Hashable, count: int) -> int:
        """The first of ``count`` inode numbers reserved once for ``key`` (a backup's nodes)."""
        ...

    def layer(self, entry: str, ts: str) -> SeekableReader:
        """The reader of one layer, opened on first use (incremental backups read their bases')."""
        ...

    def open_layer(self, entry: str, ts: str) -> SeekableReader | None:
        """memory: the reader of a layer if it is already open, else None."""
        ...
