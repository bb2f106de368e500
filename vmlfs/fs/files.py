"""The virtual files: a backup's small files, ``latest``, and the control files.

Every virtual node is owned by the mounting user and numbered by a key
(:class:`VirtualNode`). Control files are the front end of
:class:`vmlfs.fs.control.Jobs`: a write is checked at every ``write`` and
reserves its job at ``flush`` (``touch``: at the time update), and the job's
blocking part goes back to the adapter as :data:`~vmlfs.fs.protocol.Work`.
The hypervisor's control files (``vm-snapshot``, ``provision``) are in
:mod:`vmlfs.fs.vm`; directories in :mod:`vmlfs.fs.tree`.
"""

from __future__ import annotations

import stat
from abc import abstractmethod
from functools import partial
from typing import Callable, Hashable

from vmlfs.engine.model import BackupMeta
from vmlfs.errors import NotFound, PermissionDenied, ReadOnly, VmlfsError
from vmlfs.fs import layout
from vmlfs.fs.context import MountContext
from vmlfs.fs.control import Job, check_partial, parse_request
from vmlfs.fs.protocol import FOREVER, NEVER, SHORT, Attrs, ContentHandle, FsNode, Handle, Work


class VirtualNode(FsNode):
    """A node of the virtual tree: numbered by ``key`` for the life of the mount, owned by the mounting user."""

    def __init__(self, ctx: MountContext, key: Hashable) -> None:
        self.ctx = ctx
        self.ino = ctx.number(key)

    def owned_attrs(self, mode: int, size: int, mtime_ns: int, timeout: float) -> Attrs:
        ctx = self.ctx
        return Attrs(self.ino, mode, 1, ctx.owner_uid, ctx.owner_gid, size, mtime_ns, mtime_ns, timeout)


class BackupFile(VirtualNode):
    """``env.txt`` or ``history.txt`` of a backup, read from the backup directory at the first open."""

    immutable = True

    def __init__(self, ctx: MountContext, entry: str, ts: str, name: str, size: int, mtime_ns: int) -> None:
        super().__init__(ctx, ("backup-file", entry, ts, name))
        self.entry, self.ts, self.name = entry, ts, name
        self.size, self.mtime_ns = size, mtime_ns
        self._content: bytes | None = None

    def attrs(self) -> Attrs:
        return self.owned_attrs(stat.S_IFREG | 0o444, self.size, self.mtime_ns, FOREVER)

    def open_read(self) -> ContentHandle:
        if self._content is None:
            self._content = self.ctx.read_backup_file(self.entry, self.ts, self.name)
        return ContentHandle(self._content)


class InfoFile(VirtualNode):
    """``info.json`` (what a user wants to know about one backup) or ``cvmfs-cache.txt`` (the summary
    of its CernVM-FS cache part), generated from its metadata by ``render``."""

    immutable = True

    def __init__(self, ctx: MountContext, entry: str, ts: str, meta: BackupMeta, mtime_ns: int,
                 name: str = layout.INFO, render: Callable[[BackupMeta], bytes] = layout.info_json) -> None:
        super().__init__(ctx, ("backup-file", entry, ts, name))
        self.content, self.mtime_ns = render(meta), mtime_ns

    def attrs(self) -> Attrs:
        return self.owned_attrs(stat.S_IFREG | 0o444, len(self.content), self.mtime_ns, FOREVER)

    def open_read(self) -> ContentHandle:
        return ContentHandle(self.content)


class ChangesFile(VirtualNode):
    """``changes.txt``: what changed since the backup before this one, made from the two trees at each
    open (a worker thread; forgetting the previous backup changes what this one is compared with). Its
    size is that of the text last made, 0 before: it is served with direct I/O, so a reader always
    gets the whole text."""

    def __init__(self, ctx: MountContext, entry: str, ts: str, mtime_ns: int) -> None:
        super().__init__(ctx, ("backup-file", entry, ts, layout.CHANGES))
        self.entry, self.ts, self.mtime_ns = entry, ts, mtime_ns
        self.shown = b""

    def attrs(self) -> Attrs:
        return self.owned_attrs(stat.S_IFREG | 0o444, len(self.shown), self.mtime_ns, NEVER)

    def open_read(self) -> ContentHandle:
        self.shown = self.ctx.changes_text(self.entry, self.ts)
        return ContentHandle(self.shown)


class LatestLink(VirtualNode):
    """``latest``: a symlink to the newest backup, as listed at most a second ago (SHORT)."""

    def __init__(self, ctx: MountContext, entry: str, target: str) -> None:
        super().__init__(ctx, ("latest", entry))
        self.entry = entry
        self._point_at(target)

    def _point_at(self, target: str) -> None:
        """Remember the target and its time now (in a worker thread) so ``attrs`` needs no metadata read."""
        self.mtime_ns = self.ctx.backup_time_ns(self.entry, target) if target else self.ctx.mounted_ns
        self.target = target

    def attrs(self) -> Attrs:
        """Cached by the kernel for a second, as the entry directory is: every path walk through
        ``latest/...`` would otherwise look it up again (a store listing each time; ``ls -lR`` of
        ``latest/home`` made 20,000). The target comes from a listing at most a second old at every
        readlink, and every target (a timestamp) has the same length, so the size is never stale."""
        return self.owned_attrs(stat.S_IFLNK | 0o777, len(self.target), self.mtime_ns, SHORT)

    def readlink_cached(self) -> bytes | None:
        """The target from memory while the entry's listing is under a second old and names it newest."""
        stamps = self.ctx.listed_recently(self.entry)
        return self.target.encode() if stamps and self.target and layout.latest(stamps) == self.target else None

    def readlink(self) -> bytes:
        newest = layout.latest(self.ctx.listed_recently(self.entry) or self.ctx.timestamps(self.entry))
        if newest is None:
            raise NotFound(f"entry {self.entry!r} has no backups")
        self._point_at(newest)
        return newest.encode()


class StatusFile(VirtualNode):
    """``control/status``: the jobs' report, frozen at open.

    Its size is the length of the report now, computed from memory: the
    mount-wide report's one store-derived line, the default entry, is read
    at lookup (a worker thread) and kept by the jobs for ``attrs``. The file
    is served with direct I/O, so readers get the whole report even if it grew
    since the last ``stat``.
    """

    def __init__(self, ctx: MountContext, entry: str | None) -> None:
        super().__init__(ctx, ("status", entry))
        self.entry = entry
        if entry is None:
            ctx.jobs.status(None)  # reads the default entry now, so the size below is current

    def attrs(self) -> Attrs:
        return self.owned_attrs(stat.S_IFREG | 0o444, self.ctx.jobs.status_size(self.entry), self.ctx.now_ns(), NEVER)

    def open_read(self) -> ContentHandle:
        return ContentHandle(self.ctx.jobs.status(self.entry))


class ControlFile(VirtualNode):
    """A writable control file: the mounting user or root only; requests start jobs (vmlfs.fs.control).

    Subclasses say what a request is: ``check`` (every write, on the text so
    far) and ``start`` (at flush with the whole text, or at ``touch`` with None).
    """

    name: str
    """The file's name, also its inode key."""
    help: bytes
    """What reading the file shows."""

    def __init__(self, ctx: MountContext, entry: str | None) -> None:
        super().__init__(ctx, (self.name, entry))
        self.entry = entry

    def attrs(self) -> Attrs:
        return self.owned_attrs(stat.S_IFREG | 0o644, len(self.help), self.ctx.mounted_ns, NEVER)

    def open_read(self) -> ContentHandle:
        return ContentHandle(self.help)

    def key(self) -> str:
        """The job key this file acts on: its entry (for /control, the default entry)."""
        return self.ctx.jobs.resolve(self.entry)

    def allowed(self, uid: int) -> str:
        """The job key, if ``uid`` may write control files (the mounting user or root); the refusal is recorded."""
        owner = self.ctx.owner_uid
        if uid not in (0, owner):
            exc = PermissionDenied(f"uid {uid} may not write control files (only uid {owner} or root)")
            self.ctx.jobs.record_error(self.entry, exc)
            raise exc
        return self.key()

    @abstractmethod
    def check(self, data: bytes) -> None:
        """Raise InvalidRequest unless ``data`` (written so far) can still become a valid request."""

    @abstractmethod
    def start(self, key: str, data: bytes | None) -> Job:
        """Reserve the job a complete request asks for (``data`` None: a touch)."""

    def run_later(self, key: str, data: bytes | None) -> Work:
        """Reserve the job now (refusals raise here, where the caller sees them); its blocking part for later."""
        return partial(self.ctx.jobs.run, self.start(key, data))

    def open_write(self, uid: int) -> Handle:
        """Who may write, and EBUSY already at open while a job for the same key runs in this mount
        (a VM snapshot or provisioning may start while another process backs up: only the snapshot
        file probes the entry's lock too)."""
        key = self.allowed(uid)
        self.ctx.jobs.check_not_running(key)
        return ControlHandle(self, key)

    def setattr(self, uid: int, *, times: bool, truncate: bool, other: bool) -> Work | None:
        """``touch`` (new times) starts the default request; O_TRUNC before a write is a no-op."""
        if other:
            raise ReadOnly("control files cannot change owner or mode")
        key = self.allowed(uid)
        return self.run_later(key, None) if times else None


class SnapshotFile(ControlFile):
    """``control/snapshot``: starts backups, one word for the kind."""

    name = layout.SNAPSHOT
    help = b"touch this file to take a backup, or write one word into it: full, incremental or differential\n"

    def check(self, data: bytes) -> None:
        check_partial(data)

    def start(self, key: str, data: bytes | None) -> Job:
        return self.ctx.jobs.start(key, parse_request(data) if data is not None else None)

    def open_write(self, uid: int) -> Handle:
        """EBUSY already at open while the entry backs up (here or in another process holding its lock)."""
        key = self.allowed(uid)
        self.ctx.jobs.check_idle(key)
        return ControlHandle(self, key)


class ControlHandle(Handle):
    """An open control file: the request is checked at each write and started at flush (close)."""

    def __init__(self, file: ControlFile, key: str) -> None:
        self.file, self.jobs, self.key = file, file.ctx.jobs, key
        self.buffer = b""
        self.done = False

    def read(self, offset: int, size: int) -> bytes:
        """Opened for reading and writing: reads see what a read-only open sees, the help text."""
        return self.file.help[offset:offset + size]

    def write(self, data: bytes) -> int:
        try:
            self.file.check(self.buffer + data)
        except VmlfsError as exc:
            self.jobs.record_error(self.key, exc)
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
            return self.file.run_later(self.key, self.buffer)
        except VmlfsError as exc:
            self.jobs.record_error(self.key, exc)
            raise
