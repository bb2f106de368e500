"""The pyfuse3 adapter: translates FUSE requests to the tree model, nothing more.

* One decorator, :func:`fuse_boundary`, maps errors: a :class:`VmlfsError`
  becomes ``FUSEError(exc.errno)``; an ``OSError`` from the store (it vanished,
  a disk error) becomes EIO with one log line; anything else is logged with its
  traceback and becomes EIO, because pyfuse3 ends the whole mount on any
  exception that is not a ``FUSEError``.
* The trio loop never blocks: model calls that may touch the disk (manifest
  queries, frame decompression, store listings) run through
  ``trio.to_thread.run_sync`` with one :class:`trio.CapacityLimiter`; only
  what the model promises to answer from memory runs inline: ``attrs``, ``xattrs``, ``readlink_cached``,
  ``listing_cached``, ``open_read_cached``, ``Listing.entries_cached``,
  ``Handle.read_cached``, ``Handle.readahead`` and ``Handle.write``.
* Every open file is a :class:`~vmlfs.fs.protocol.Handle` and every open
  directory a :class:`~vmlfs.fs.protocol.Listing`: the adapter never asks
  which kind of node it serves.
* One nursery owns the FUSE loop, the signal watcher, the kernel-cache
  :class:`Invalidator` and the work started through control files (opaque
  :data:`~vmlfs.fs.protocol.Work`).
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import signal
from typing import Any, Awaitable, Callable

import pyfuse3
import trio

from vmlfs.errors import NoAttribute, NoAttributesHere, ReadOnly, VmlfsError
from vmlfs.fs.protocol import FsNode, Handle, Listing, Work
from vmlfs.fs.state import MountState

log = logging.getLogger(__name__)

WORKERS = 8
READDIR_BATCH = 256


def fuse_boundary(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any) -> Any:
        try:
            return await fn(*args)
        except pyfuse3.FUSEError:
            raise
        except VmlfsError as exc:
            log.debug("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            log.warning("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s; answering EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class FuseOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, state: MountState) -> None:
        super().__init__()
        self.state = state
        self.table = state.table
        self.limiter: trio.CapacityLimiter | None = None
        self.nursery: trio.Nursery | None = None
        self._handles: dict[int, Handle] = {}
        self._writers: set[int] = set()  # handles opened for writing: only their close may start work
        self._listings: dict[int, Listing] = {}
        self._next_fh = 1
        self._serves_xattrs: bool | None = None  # the state's answer, asked once

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def _node(self, inode: int) -> Any:
        """The node of ``inode``: from memory if held or recent, else built again in a worker thread
        (an archive node the table let go of: vmlfs.fs.inodes)."""
        node = self.table.cached(inode)
        return node if node is not None else await self._run(self.table.get, inode)

    def _new_fh(self) -> int:
        fh, self._next_fh = self._next_fh, self._next_fh + 1
        return fh

    def _entry(self, node: FsNode) -> pyfuse3.EntryAttributes:
        a = node.attrs()
        e = pyfuse3.EntryAttributes()
        e.st_ino, e.generation = a.ino, 0
        e.entry_timeout = e.attr_timeout = a.timeout
        e.st_mode, e.st_nlink, e.st_uid, e.st_gid = a.mode, a.nlink, a.uid, a.gid
        e.st_size, e.st_blocks, e.st_blksize = a.size, a.blocks, 4096
        e.st_atime_ns = e.st_mtime_ns = a.mtime_ns
        e.st_ctime_ns = a.ctime_ns
        return e

    def _start(self, work: Work | None) -> None:
        if work is not None:
            assert self.nursery is not None
            self.nursery.start_soon(self._background, work)

    async def _background(self, work: Work) -> None:
        # Not under the limiter: a long backup must not take a slot from readers.
        await trio.to_thread.run_sync(work, abandon_on_cancel=True)

    # lookups and attributes --------------------------------------------------

    @fuse_boundary
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = await self._node(parent_inode)
        node = await self._run(parent.lookup, bytes(name))
        return self._entry(self.table.remember(node))

    @fuse_boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(await self._node(inode))

    @fuse_boundary
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = await self._node(inode)
        work = await self._run(functools.partial(
            node.setattr, ctx.uid, times=fields.update_atime or fields.update_mtime,
            truncate=fields.update_size and attr.st_size == 0,
            other=fields.update_mode or fields.update_uid or fields.update_gid or (fields.update_size and attr.st_size != 0),
        ))
        self._start(work)
        return self._entry(node)

    @fuse_boundary
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = await self._node(inode)
        target = node.readlink_cached()
        return target if target is not None else await self._run(node.readlink)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for inode, count in inode_list:  # must not raise: no request to answer
            self.table.forget(inode, count)

    @fuse_boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        """The store's file system: ``df`` shows how big it is and how much room is left for backups."""
        total, available = await self._run(self.state.space)
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = total // 4096
        s.f_bfree = s.f_bavail = available // 4096
        s.f_namemax = 255
        return s

    # directories ---------------------------------------------------------------

    @fuse_boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = await self._node(inode)
        listing = node.listing_cached()  # a directory fetched ahead of a walk: no thread hop
        if listing is None:
            listing = await self._run(node.listing)
        fh = self._new_fh()
        self._listings[fh] = listing
        return fh

    @fuse_boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._listings[fh]
        while True:
            batch = listing.entries_cached(start_id, READDIR_BATCH)  # a page already fetched: no thread hop
            if batch is None:
                batch = await self._run(listing.entries, start_id, READDIR_BATCH)
            if not batch:
                return
            accepted = []
            for next_id, name, node in batch:
                if not pyfuse3.readdir_reply(token, name, self._entry(node), next_id):
                    break
                accepted.append(node)
            self.table.remember_all(accepted)
            if len(accepted) < len(batch):
                return
            start_id = batch[-1][0]

    @fuse_boundary
    async def releasedir(self, fh: int) -> None:
        self._listings.pop(fh, None)

    # files -----------------------------------------------------------------------

    @fuse_boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = await self._node(inode)
        fh = self._new_fh()
        if flags & os.O_ACCMODE != os.O_RDONLY:
            self._handles[fh] = await self._run(node.open_write, ctx.uid)
            self._writers.add(fh)
            return pyfuse3.FileInfo(fh=fh, direct_io=True)
        handle = node.open_read_cached()  # a backed-up file: no thread hop
        self._handles[fh] = handle if handle is not None else await self._run(node.open_read)
        # Backup files never change: let the kernel page cache keep their pages across opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=node.immutable, direct_io=not node.immutable)

    @fuse_boundary
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        handle = self._handles[fh]
        data = handle.read_cached(off, size)  # a frame already decompressed: no thread hop
        if data is None:
            data = await self._run(handle.read, off, size)
        if data:
            handle.readahead(off, off + len(data))
        return data

    @fuse_boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return self._handles[fh].write(bytes(buf))

    @fuse_boundary
    async def flush(self, fh: int) -> None:
        if fh in self._writers:  # a read-only handle has nothing to flush: no thread hop per close
            self._start(await self._run(self._handles[fh].flush))

    @fuse_boundary
    async def release(self, fh: int) -> None:
        self._handles.pop(fh, None)
        self._writers.discard(fh)

    # everything that would change the tree -----------------------------------

    @fuse_boundary
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext) -> Any:
        raise ReadOnly("cannot create files in a vmlfs mount")

    @fuse_boundary
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> Any:
        raise ReadOnly("cannot create directories in a vmlfs mount")

    @fuse_boundary
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext) -> Any:
        raise ReadOnly("cannot create nodes in a vmlfs mount")

    @fuse_boundary
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext) -> Any:
        raise ReadOnly("cannot create symlinks in a vmlfs mount")

    @fuse_boundary
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext) -> Any:
        raise ReadOnly("cannot create hardlinks in a vmlfs mount")

    @fuse_boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise ReadOnly("cannot remove files from a vmlfs mount")

    @fuse_boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise ReadOnly("cannot remove directories from a vmlfs mount")

    @fuse_boundary
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        raise ReadOnly("cannot rename in a vmlfs mount")

    async def _check_xattrs_served(self) -> None:
        """Raise NoAttributesHere on a mount whose store kept no attributes (MountState.serves_xattrs)."""
        if self._serves_xattrs is None:
            self._serves_xattrs = await self._run(self.state.serves_xattrs)
        if not self._serves_xattrs:
            raise NoAttributesHere("no backup in this store kept extended attributes")

    @fuse_boundary
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        await self._check_xattrs_served()
        value = (await self._node(inode)).xattrs().get(bytes(name))
        if value is None:
            raise NoAttribute(f"no extended attribute {bytes(name)!r}")
        return value

    @fuse_boundary
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        await self._check_xattrs_served()
        return list((await self._node(inode)).xattrs())

    @fuse_boundary
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise ReadOnly("cannot set extended attributes in a vmlfs mount")

    @fuse_boundary
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise ReadOnly("cannot remove extended attributes in a vmlfs mount")


class Invalidator:
    """Has the kernel drop what it cached of an entry whose backups changed: the entry directory's
    attributes and listing, ``latest``, the backups that vanished, ``/entries``' time.

    :attr:`MountState.on_change` may fire inside a request (a listing that
    noticed a new backup), whose locks the kernel's invalidation waits for:
    the notice only queues the entry (any thread, through the trio token), and
    a task of its own sends the invalidations, from a worker thread.
    """

    def __init__(self, state: MountState) -> None:
        self.table = state.table
        self._send, self._receive = trio.open_memory_channel[tuple[str, list[str]]](math.inf)
        self._token = trio.lowlevel.current_trio_token()
        state.on_change = self.notice

    def notice(self, entry: str, gone: list[str]) -> None:
        self._token.run_sync_soon(self._send.send_nowait, (entry, gone))

    async def run(self) -> None:
        async for entry, gone in self._receive:
            await trio.to_thread.run_sync(self._invalidate, entry, gone)

    def _invalidate(self, entry: str, gone: list[str]) -> None:
        directory = self.table.number(("entry", entry))
        for call, args in [(pyfuse3.invalidate_inode, (directory, False)),
                           (pyfuse3.invalidate_entry, (directory, b"latest")),
                           *[(pyfuse3.invalidate_entry, (directory, ts.encode(), self.table.number(("backup", entry, ts))))
                             for ts in gone],
                           (pyfuse3.invalidate_inode, (self.table.number(("entries",)), True))]:
            try:
                call(*args)
            except OSError as exc:  # ENOENT: the kernel holds nothing of it; nothing to drop
                log.debug("invalidate %s%s: %s", call.__name__, args, exc)
        log.info("entry %s changed (%s vanished): the kernel's cached entries dropped", entry, len(gone))


def mount_options(allow_other: bool) -> set[str]:
    """``default_permissions`` always (the kernel checks mode bits), ``allow_other`` only on request."""
    options = set(pyfuse3.default_options) | {"default_permissions", "fsname=vmlfs", "subtype=vmlfs"}
    if allow_other:
        options.add("allow_other")
    return options


async def _watch_signals() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            pyfuse3.terminate()
            return


READ_AHEAD_KB = 1024


def _raise_read_ahead(mountpoint: str) -> None:
    """Let the kernel ask for 1 MiB per read instead of 128 KiB (the bdi default FUSE cannot exceed).

    Fewer, larger requests roughly double cold sequential reads; decompression
    works in 1 MiB frames anyway. Only root may write the mount's bdi setting
    in sysfs; for others this is skipped and reads stay correct, just slower.
    """
    dev = os.stat(mountpoint).st_dev
    try:
        with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb", "w") as f:
            f.write(str(READ_AHEAD_KB))
    except OSError as exc:
        log.debug("read-ahead left at the kernel default: %s", exc)


async def _announce(ops: FuseOperations, mountpoint: str, on_ready: Callable[[], None] | None) -> None:
    """Once the mount answers a stat through our own loop: tune it, tell the caller it is live, then
    open each entry's newest backup (:meth:`MountState.warm`) before a first read needs it."""
    await trio.to_thread.run_sync(_raise_read_ahead, mountpoint)
    if on_ready is not None:
        on_ready()
    # Abandoned at unmount: a remote store's tree may still be downloading, and nothing waits for it.
    await trio.to_thread.run_sync(ops.state.warm, limiter=ops.limiter, abandon_on_cancel=True)


async def _main(ops: FuseOperations, mountpoint: str, on_ready: Callable[[], None] | None) -> None:
    ops.limiter = trio.CapacityLimiter(WORKERS)
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        nursery.start_soon(_watch_signals)
        nursery.start_soon(Invalidator(ops.state).run)
        nursery.start_soon(_announce, ops, mountpoint, on_ready)
        await pyfuse3.main()
        for job_entry in ops.state.active_jobs():
            log.warning("unmounted while backing up %s: that backup is abandoned (the next one cleans up)", job_entry)
        nursery.cancel_scope.cancel()


def serve(state: MountState, mountpoint: str, *, allow_other: bool = False,
          on_ready: Callable[[], None] | None = None) -> None:
    """Mount, serve until unmounted or signalled, then unmount and release the store."""
    ops = FuseOperations(state)
    pyfuse3.init(ops, mountpoint, mount_options(allow_other))
    try:
        trio.run(_main, ops, mountpoint, on_ready)
    finally:
        pyfuse3.close(unmount=True)
        state.close()
