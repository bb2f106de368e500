"""Archive nodes: the backed-up home below ``/entries/<entry>/<ts>/home``.

Every answer comes from indexed manifest queries (one row per lookup, one
page of rows per readdir batch); a manifest is opened on the first access to
its backup and never loaded whole. File bytes come from the layer named in
the row, decompressing only the frames that cover the requested range
(:class:`vmlfs.archive.seekable.SeekableReader`, with the mount's shared LRU
of decompressed frames). Each open gets its own handle, which tells the
mount's :class:`~vmlfs.archive.readahead.ReadAhead` about its reads, so a
sequential reader finds its next frames decompressed and a seeking one pays
only for what it reads. The backup's manifest, inode range and layers come
from an :class:`~vmlfs.fs.context.ArchiveSource`.

A damaged layer or manifest row fails only the nodes that need it: the read
raises :class:`CorruptData` (EIO) after logging which file of which backup.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable

from vmlfs.archive import xattrs
from vmlfs.archive.manifest import DIR, FILE, SYMLINK, Manifest, Node
from vmlfs.archive.readahead import Cursor
from vmlfs.archive.seekable import SeekableReader
from vmlfs.errors import CorruptData, NotFound, VmlfsError
from vmlfs.fs.context import ArchiveSource
from vmlfs.fs.protocol import FOREVER, Attrs, FsNode, Handle, Listing

log = logging.getLogger(__name__)

MAX_NODE_ID = 1 << 40  # a manifest claiming more nodes is damaged, not big
PAGE = 1024  # manifest rows fetched per readdir batch
AHEAD_ROWS = 2048  # rows of first pages fetched ahead of a walk (FirstPages)
_TYPE_BITS = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, SYMLINK: stat.S_IFLNK}


class BackupData:
    """One backup's manifest and inode range, opened lazily and shared by its nodes."""

    def __init__(self, source: ArchiveSource, entry: str, ts: str) -> None:
        self.source, self.entry, self.ts = source, entry, ts
        self.where = f"{entry}@{ts}"
        self._lock = threading.Lock()
        self._manifest: Manifest | None = None
        self._base = 0
        self._top = 0
        self.pages = FirstPages(lambda parent: self.manifest().children(parent, limit=PAGE))

    def manifest(self) -> Manifest:
        with self._lock:
            if self._manifest is None:
                manifest = self.source.open_manifest(self.entry, self.ts)
                top = manifest.max_id()
                if not 0 < top < MAX_NODE_ID:
                    manifest.close()
                    raise CorruptData(f"{self.where}: manifest claims node ids up to {top}")
                self._base = self.source.reserve_inodes(("archive", self.entry, self.ts), top + 1)
                self._top = top
                self._manifest = manifest
            return self._manifest

    def close(self) -> None:
        with self._lock:
            if self._manifest is not None:
                self._manifest.close()
                self._manifest = None

    def node(self, row: Node) -> "ArchiveNode":
        """Wrap a manifest row; hardlink members share their group's number (see vmlfs.fs.inodes)."""
        if self._manifest is None:  # once per backup (the lock is not taken per row of a listing)
            self.manifest()
        number = row.link_group or row.id
        if not 0 < number <= self._top:  # a forged id would take another backup's (or entry's) inode numbers
            log.error("damaged: %s: row %d names node %d, outside its ids 1..%d", self.where, row.id, number, self._top)
            raise CorruptData(f"{self.where}: a tree row names node {number}, outside the tree's ids 1..{self._top}")
        ino = self._base + number
        kind = row.type  # compared here, not through the row's properties: once per row of a listing
        if kind == DIR:
            return ArchiveDir(self, row, ino)
        if kind == SYMLINK:
            return ArchiveLink(self, row, ino)
        return ArchiveFile(self, row, ino)

    def root(self) -> "ArchiveNode":
        return self.node(self.manifest().root())

    def path(self, row: Node) -> str:
        try:
            return os.fsdecode(b"/".join((b"home",) + self.manifest().path_of(row)))
        except CorruptData:
            return f"node {row.id}"


class FirstPages:
    """The first pages of directories, fetched ahead of their opening in the order a walk opens them.

    ``find``, ``ls -R`` and ``cp -r`` open a directory's subdirectories one
    after another, depth first; each opening that needs a query costs a hop
    to a worker thread (about as much as the query). So whenever a directory's
    first page is fetched (in a worker thread), the pages of the directories
    below it and after it are fetched too, depth first in name order, until
    :data:`AHEAD_ROWS` rows are held; the walk then opens them from memory
    (:meth:`take`). The directories still to fetch are kept as a stack: the
    next opening that finds no page (the walk got there) carries on from it, so
    a whole walk pays one hop per :data:`AHEAD_ROWS` rows. An opening
    elsewhere (another walk, a seek in the tree) starts again from there. Any
    opening that finds no page drops the pages held: they all come before it
    in the walk's order, so the walk used or skipped them. A directory ahead
    that cannot be listed (a damaged row) stops the filling there: its own
    opening fails, not the one that was filling. Memory: at most
    :data:`AHEAD_ROWS` rows plus one page.
    """

    def __init__(self, fetch: Callable[[int], list[Node]]) -> None:
        self._fetch = fetch  # a directory's first page (a query)
        self._lock = threading.Lock()  # one filler at a time; take() waits for no query
        self._filling = threading.Lock()
        self._pages: dict[int, list[Node]] = {}
        self._rows = 0
        self._next: list[int] = []  # directories to fetch, the one a walk opens next on top

    def take(self, directory: int) -> list[Node] | None:
        """The first page of ``directory`` if it was fetched ahead (from memory; it is handed over once)."""
        with self._lock:
            page = self._pages.pop(directory, None)
            if page is not None:
                self._rows -= len(page)
            return page

    def fetch(self, directory: int) -> list[Node]:
        """The first page of ``directory`` (a query unless fetched ahead), and the pages ahead of it (blocks)."""
        with self._filling:
            page = self.take(directory)
            if page is None:
                page = self._fetch(directory)
                with self._lock:
                    # Every page held comes before this directory in the walk's order: used or skipped.
                    self._pages.clear()
                    self._rows = 0
                    if directory in self._next:  # the walk got here: carry on, without what it skipped
                        del self._next[self._next.index(directory):]
                    else:  # another walk: start again from here
                        self._next.clear()
            self._push(page)
            self._fill()
            return page

    def _push(self, page: list[Node]) -> None:
        with self._lock:
            self._next.extend(row.id for row in reversed(page) if row.is_dir)

    def _fill(self) -> None:
        while True:
            with self._lock:
                if not self._next or self._rows >= AHEAD_ROWS:
                    return
                directory = self._next.pop()
            try:
                page = self._fetch(directory)
            except (VmlfsError, OSError):  # a damaged directory ahead: its own opening fails, not this one
                with self._lock:
                    self._next.append(directory)
                return
            with self._lock:
                self._pages[directory] = page
                self._rows += len(page)
            self._push(page)


class ArchiveNode(FsNode):
    immutable = True

    def __init__(self, backup: BackupData, row: Node, ino: int) -> None:
        self.backup, self.row, self.ino = backup, row, ino

    def attrs(self) -> Attrs:
        """The row as the guest had it, but directories without write bits: a file manager offers
        Delete, Rename and Cut in a directory it may write, and asks "permanently delete?" before the
        mount refuses; without them it offers only what works. Files keep their modes (``cp -a`` of a
        file keeps mode, owner and times); ``vmlfs restore`` and info.json keep the exact modes."""
        r = self.row
        kind = r.type  # compared here, not through the row's properties: once per readdirplus entry
        size = len(r.target or b"") if kind == SYMLINK else r.size
        mode = r.mode & (0o7555 if kind == DIR else 0o7777)
        return Attrs(self.ino, _TYPE_BITS[kind] | mode, r.nlink if kind == FILE else 1, r.uid, r.gid,
                     size, r.mtime_ns, r.ctime_ns or r.mtime_ns, FOREVER)

    def xattrs(self) -> dict[bytes, bytes]:
        """The attributes the guest had (``user.*``, ACLs, capabilities): they came with the row, so
        ``cp -a`` and ``getfacl`` on the mount see them without another query."""
        return dict(xattrs.decode(self.row.xattrs))


class ArchiveDir(ArchiveNode):
    def lookup(self, name: bytes) -> FsNode:
        return self.backup.node(self.backup.manifest().child(self.row.id, name))

    def listing(self) -> Listing:
        return ArchiveListing(self.backup, self.row.id, self.backup.pages.fetch(self.row.id))

    def listing_cached(self) -> Listing | None:
        page = self.backup.pages.take(self.row.id)
        return None if page is None else ArchiveListing(self.backup, self.row.id, page)


class ArchiveListing:
    """Pages of a manifest directory, the first one fetched at open (or ahead of it: :class:`FirstPages`).

    The last page fetched is kept, and a page shorter than asked for ends the
    directory, so a directory of up to :data:`PAGE` children is listed from
    memory: its readdir calls, the last (empty) one included, need no query
    and no worker thread (:meth:`entries_cached`).
    """

    def __init__(self, backup: BackupData, parent: int, first_page: list[Node]) -> None:
        self.backup, self.parent = backup, parent
        self._start = 0
        self._page = first_page
        self._to_end = len(self._page) < PAGE  # the page runs to the directory's end

    def entries_cached(self, offset: int, limit: int) -> list[tuple[int, bytes, FsNode]] | None:
        if offset < self._start or (offset >= self._start + len(self._page) and not self._to_end):
            return None
        rows = self._page[offset - self._start:offset - self._start + limit]
        out = []
        for i, row in enumerate(rows):
            try:
                out.append((offset + i + 1, row.name, self.backup.node(row)))
            except CorruptData:  # a damaged row costs only itself (logged by node()): the rest is listed
                continue
        return out

    def entries(self, offset: int, limit: int) -> list[tuple[int, bytes, FsNode]]:
        cached = self.entries_cached(offset, limit)
        if cached is not None:
            return cached
        manifest, want = self.backup.manifest(), max(limit, PAGE)
        if offset == self._start + len(self._page) and self._page:
            page = manifest.children(self.parent, after=self._page[-1].name, limit=want)
            self._to_end = len(page) < want
        else:  # a rewind or a seek: page from the start up to the offset
            page = manifest.children(self.parent, limit=offset + want)
            self._to_end = len(page) < offset + want
            page = page[offset:]
        self._start, self._page = offset, page
        return self.entries_cached(offset, limit) or []


class ArchiveFile(ArchiveNode):
    def open_read(self) -> "ArchiveFileHandle":
        return ArchiveFileHandle(self.backup, self.row)

    open_read_cached = open_read  # the layer is opened by the first read that needs it


class ArchiveFileHandle(Handle):
    """One open backed-up file: reads decompress only the frames covering them, and a
    sequential reader gets the next frames decompressed ahead (:mod:`vmlfs.archive.readahead`)."""

    def __init__(self, backup: BackupData, row: Node) -> None:
        self.backup, self.row = backup, row
        self._reader: SeekableReader | None = None  # the layer, once a read opened it
        self._cursor: Cursor | None = None

    def _follow(self, reader: SeekableReader) -> None:
        if self._cursor is None and self.row.data_offset is not None:
            self._cursor = self.backup.source.readahead.cursor(reader, self.row.data_offset, self.row.size)
        self._reader = reader

    def read_cached(self, offset: int, size: int) -> bytes | memoryview | None:
        r = self.row
        size = max(0, min(size, r.size - offset))
        reader = self._reader
        if reader is None and r.layer:
            reader = self.backup.source.open_layer(self.backup.entry, r.layer)
            if reader is not None:
                self._follow(reader)
        if size == 0 or reader is None or r.data_offset is None:
            return None
        data = reader.read_cached(r.data_offset + offset, size)
        return data if data is not None and len(data) == size else None

    def readahead(self, start: int, end: int) -> None:
        if self._cursor is not None:
            self._cursor.after_read(start, end)

    def read(self, offset: int, size: int) -> bytes:
        r = self.row
        size = max(0, min(size, r.size - offset))
        if size == 0:
            return b""
        try:
            if r.layer is None or r.data_offset is None:
                raise CorruptData("file has no data location")
            reader = self._reader
            if reader is None:
                reader = self.backup.source.layer(self.backup.entry, r.layer)
                self._follow(reader)
            data = reader.read(r.data_offset + offset, size)
            if len(data) != size:
                raise CorruptData(f"layer {r.layer} ends {size - len(data)} bytes early")
        except CorruptData as exc:
            log.error("damaged: %s of backup %s (bytes in layer %s): %s", self.backup.path(r), self.backup.where, r.layer, exc)
            raise
        return data


class ArchiveLink(ArchiveNode):
    def readlink(self) -> bytes:
        if self.row.target is None:
            raise NotFound("symlink without target")
        return self.row.target

    def readlink_cached(self) -> bytes | None:
        return self.row.target  # the row is in memory; None makes readlink name the problem
