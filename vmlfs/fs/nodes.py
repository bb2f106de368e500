"""The node kinds of the mounted tree, one small class each, sharing one protocol.

Protocol (:class:`FsNode`): ``attrs()`` (never blocks: answers from memory),
``lookup(name)``, ``listing()``, ``open_read()`` then ``read``, ``readlink()``,
and for control files ``open_write(uid)`` / ``touch(uid)``. Anything that
would change the tree raises :class:`ReadOnly` (EROFS). Methods other than
``attrs`` may do I/O and are called from worker threads.

Virtual directories take their children from :mod:`vmlfs.fs.layout`; the
archive nodes below ``<ts>/home`` live in :mod:`vmlfs.fs.archive`.
"""

from __future__ import annotations

import stat
from abc import abstractmethod
from functools import partial
from typing import TYPE_CHECKING

from vmlfs.errors import (
    CorruptData,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ReadOnly,
    VmlfsError,
)
from vmlfs.fs import layout
from vmlfs.fs.control import Job, check_partial, parse_request
from vmlfs.fs.layout import Slot
from vmlfs.fs.protocol import (
    FOREVER,
    NEVER,
    SHORT,
    Attrs,
    ContentHandle,
    FsNode,
    Handle,
    Listing,
    Work,
)

if TYPE_CHECKING:
    from vmlfs.engine.model import BackupMeta
    from vmlfs.fs.state import MountState

class Children:
    """A directory's children, computed whole (virtual directories have a handful)."""

    def __init__(self, children: list[tuple[bytes, FsNode]]) -> None:
        self._children = children

    def entries(self, offset: int, limit: int) -> list[tuple[int, bytes, FsNode]]:
        return [(i + 1, name, node) for i, (name, node) in enumerate(self._children[offset:offset + limit], offset)]


class VirtualDir(FsNode):
    """A directory whose children are computed from :mod:`vmlfs.fs.layout` slots."""

    mode = 0o555
    timeout = SHORT

    def __init__(self, state: "MountState", key: tuple, mtime_ns: int) -> None:
        self.state = state
        self.ino = state.table.number(key)
        self.mtime_ns = mtime_ns

    @abstractmethod
    def slots(self) -> list[Slot]:
        """The directory's layout (from :mod:`vmlfs.fs.layout`)."""

    @abstractmethod
    def child(self, slot: Slot) -> FsNode:
        """The node one slot stands for."""

    def attrs(self) -> Attrs:
        return self.state.attrs(self.ino, stat.S_IFDIR | self.mode, 0, self.mtime_ns, self.timeout)

    def lookup(self, name: bytes) -> FsNode:
        for slot in self.slots():
            if slot.name.encode() == name:
                return self.child(slot)
        raise NotFound(f"no {name.decode(errors='replace')!r} here")

    def listing(self) -> Listing:
        return Children([(slot.name.encode(), self.child(slot)) for slot in self.slots()])


class RootDir(VirtualDir):
    def __init__(self, state: "MountState") -> None:
        super().__init__(state, ("root",), state.mounted_ns)

    def slots(self) -> list[Slot]:
        return layout.root_layout()

    def child(self, slot: Slot) -> FsNode:
        if slot.kind == "control":
            return ControlDir(self.state, None)
        return EntriesDir(self.state)


class EntriesDir(VirtualDir):
    def __init__(self, state: "MountState") -> None:
        super().__init__(state, ("entries",), state.mounted_ns)

    def slots(self) -> list[Slot]:
        return layout.entries_layout(self.state.entry_names())

    def child(self, slot: Slot) -> FsNode:
        return EntryDir(self.state, slot.name)


class EntryDir(VirtualDir):
    """``/entries/<entry>``: its backups appear here as soon as they are committed."""

    def __init__(self, state: "MountState", entry: str) -> None:
        stamps = state.timestamps(entry)
        newest = state.meta_time_ns(entry, stamps[-1]) if stamps else state.mounted_ns
        super().__init__(state, ("entry", entry), newest)
        self.entry = entry

    def slots(self) -> list[Slot]:
        stamps = self.state.timestamps(self.entry)
        return layout.entry_layout(stamps, has_domain=bool(self.state.store.load_entry(self.entry).domain))

    def child(self, slot: Slot) -> FsNode:
        if slot.kind == "backup":
            return BackupDir(self.state, self.entry, slot.name)
        if slot.kind == "latest":
            return LatestLink(self.state, self.entry, slot.arg or "")
        if slot.kind == "vm":
            from vmlfs.fs.vm import VmDir

            return VmDir(self.state, self.entry)
        return ControlDir(self.state, self.entry)


class BackupDir(VirtualDir):
    """``/entries/<entry>/<ts>``: immutable once committed."""

    immutable = True
    timeout = FOREVER

    def __init__(self, state: "MountState", entry: str, ts: str) -> None:
        self.entry, self.ts = entry, ts
        record = state.record(entry, ts)
        self.error = record.error
        self.meta: BackupMeta | None = record.meta
        super().__init__(state, ("backup", entry, ts), layout.backup_time_ns(self.meta) if self.meta else state.mounted_ns)

    def slots(self) -> list[Slot]:
        if self.meta is None:
            raise CorruptData(f"backup {self.entry}@{self.ts} is damaged: {self.error}")
        return layout.backup_layout(self.meta)

    def child(self, slot: Slot) -> FsNode:
        if slot.kind == "home":
            return self.state.backup(self.entry, self.ts).root()
        if slot.kind == "info":
            assert self.meta is not None
            return BackupFile(self.state, self.entry, self.ts, layout.INFO, layout.info_json(self.meta), self.mtime_ns)
        assert self.meta is not None  # slots() refused a damaged backup
        size = int(self.meta.files[slot.name].get("size", 0))
        return BackupFile(self.state, self.entry, self.ts, slot.name, size, self.mtime_ns)


class BackupFile(FsNode):
    """env.txt, history.txt (read from the backup directory on first read) and info.json (generated)."""

    immutable = True

    def __init__(self, state: "MountState", entry: str, ts: str, name: str, content: bytes | int, mtime_ns: int) -> None:
        self.state, self.entry, self.ts, self.name = state, entry, ts, name
        self.ino = state.table.number(("backup-file", entry, ts, name))
        self._content = content if isinstance(content, bytes) else None
        self.size = len(content) if isinstance(content, bytes) else content
        self.mtime_ns = mtime_ns

    def attrs(self) -> Attrs:
        return self.state.attrs(self.ino, stat.S_IFREG | 0o444, self.size, self.mtime_ns, FOREVER)

    def open_read(self) -> ContentHandle:
        if self._content is None:
            self._content = self.state.store.read_backup_file(self.entry, self.ts, self.name)
        return ContentHandle(self._content)


class LatestLink(FsNode):
    def __init__(self, state: "MountState", entry: str, target: str) -> None:
        self.state, self.entry, self.target = state, entry, target
        self.ino = state.table.number(("latest", entry))

    def attrs(self) -> Attrs:
        mtime = self.state.meta_time_ns(self.entry, self.target) if self.target else self.state.mounted_ns
        return self.state.attrs(self.ino, stat.S_IFLNK | 0o777, len(self.target), mtime, NEVER)

    def readlink(self) -> bytes:
        newest = layout.latest(self.state.timestamps(self.entry))
        if newest is None:
            raise NotFound(f"entry {self.entry!r} has no backups")
        self.target = newest
        return newest.encode()


class ControlDir(VirtualDir):
    """``/control`` (entry None: the default entry) or ``/entries/<entry>/control``."""

    def __init__(self, state: "MountState", entry: str | None) -> None:
        super().__init__(state, ("control", entry), state.mounted_ns)
        self.entry = entry

    def slots(self) -> list[Slot]:
        return layout.control_layout(per_entry=self.entry is not None)

    def child(self, slot: Slot) -> FsNode:
        from vmlfs.fs.vm import ProvisionFile, VmSnapshotFile

        if slot.kind == "snapshot":
            return SnapshotFile(self.state, self.entry)
        if slot.kind == "vm-snapshot":
            return VmSnapshotFile(self.state, self.entry)
        if slot.kind == "provision":
            return ProvisionFile(self.state, None)
        return StatusFile(self.state, self.entry)


class StatusFile(FsNode):
    def __init__(self, state: "MountState", entry: str | None) -> None:
        self.state, self.entry = state, entry
        self.ino = state.table.number(("status", entry))

    def attrs(self) -> Attrs:
        return self.state.attrs(self.ino, stat.S_IFREG | 0o444, len(self.state.jobs.status(self.entry)),
                                self.state.now_ns(), NEVER)

    def open_read(self) -> ContentHandle:
        return ContentHandle(self.state.jobs.status(self.entry))


SNAPSHOT_HELP = b"touch this file to take a backup, or write one word into it: full, incremental or differential\n"


class ControlFile(FsNode):
    """A writable control file: the mounting user or root only; requests start jobs (vmlfs.fs.control).

    Subclasses say what a request is: ``check`` (every write, on the text so
    far) and ``start`` (at flush with the whole text, or at ``touch`` with None).
    """

    help = SNAPSHOT_HELP
    kind = "snapshot"

    def __init__(self, state: "MountState", entry: str | None) -> None:
        self.state, self.entry = state, entry
        self.ino = state.table.number((self.kind, entry))

    def attrs(self) -> Attrs:
        return self.state.attrs(self.ino, stat.S_IFREG | 0o644, len(self.help), self.state.mounted_ns, NEVER)

    def open_read(self) -> ContentHandle:
        return ContentHandle(self.help)

    def key(self) -> str:
        """The job key this file acts on: its entry (for /control, the default entry)."""
        return self.state.jobs.resolve(self.entry)

    def _allowed(self, uid: int) -> str:
        if uid not in (0, self.state.owner_uid):
            exc = PermissionDenied(f"uid {uid} may not write control files (only uid {self.state.owner_uid} or root)")
            self.state.jobs.record_error(self.entry, exc)
            raise exc
        return self.key()

    def check(self, data: bytes) -> None:
        check_partial(data)

    def start(self, key: str, data: bytes | None) -> Job:
        return self.state.jobs.start(key, parse_request(data) if data is not None else None)

    def run_later(self, key: str, data: bytes | None) -> Work:
        """Reserve the job now (refusals raise here, where the caller sees them); its blocking part for later."""
        return partial(self.state.jobs.run, self.start(key, data))

    def open_write(self, uid: int) -> "ControlHandle":
        key = self._allowed(uid)
        self.state.jobs.check_idle(key)
        return ControlHandle(self, key)

    def setattr(self, uid: int, *, times: bool, truncate: bool, other: bool) -> Work | None:
        """``touch`` (new times) starts the default request; O_TRUNC before a write is a no-op."""
        if other:
            raise ReadOnly("control files cannot change owner or mode")
        key = self._allowed(uid)
        return self.run_later(key, None) if times else None


class SnapshotFile(ControlFile):
    """``control/snapshot``: starts backups."""


class ControlHandle(Handle):
    """An open control file: the request is checked at each write and started at flush (close)."""

    def __init__(self, file: ControlFile, key: str) -> None:
        self.file, self.state, self.entry = file, file.state, key
        self.buffer = b""
        self.done = False

    def read(self, offset: int, size: int) -> bytes:
        """Opened for reading and writing: reads see what a read-only open sees, the help text."""
        return self.file.help[offset:offset + size]

    def write(self, data: bytes) -> int:
        try:
            self.file.check(self.buffer + data)
        except VmlfsError as exc:
            self.state.jobs.record_error(self.entry, exc)
            self.done = True
            raise
        self.buffer += data
        return len(data)

    def flush(self) -> Work | None:
        """Start the requested job once, at the first flush after a write."""
        if self.done or not self.buffer:
            return None
        self.done = True
        try:
            return self.file.run_later(self.entry, self.buffer)
        except VmlfsError as exc:
            self.state.jobs.record_error(self.entry, exc)
            raise
