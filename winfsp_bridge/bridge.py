"""The WinFsp operations over the tree model, as pure functions of a :class:`MountState`.

Each public method is one WinFsp callback as winfspy names it, with plain
Python values in and out (SDDL strings, dicts of file information), so the
whole translation runs and is tested on Linux; :mod:`winfsp_bridge.adapter`
only hands these to winfspy. What it translates:

* paths ``\\entries\\e1\\<ts>\\home\\...``: each component is looked up
  without case in its directory's Windows names (:mod:`winfsp_bridge.names`);
  symlinks follow :func:`vmlfs.fs.links.follow` (a sibling is served as
  itself, any other symlink is absent);
* attributes: ``DIRECTORY`` or ``READONLY`` (files; the volume is read-only),
  ``HIDDEN`` for names starting with a dot (as Samba's "hide dot files"), and
  ``NOT_CONTENT_INDEXED`` everywhere, to keep Windows Search from reading
  every backup;
* times: FILETIME, 100 ns since 1601-01-01 UTC, from the node's mtime
  (creation, last access, last write) and ctime (change); backups hold no
  birth time;
* security: :func:`winfsp_bridge.security.sddl` from mode and owner;
* listings: sorted without case, ``.`` and ``..`` first below the root, and
  resumed after a ``marker`` (the last name WinFsp received), optionally
  filtered by a pattern of ``*`` and ``?``;
* every change (create, write, overwrite, delete, rename, set info, set
  security, set label) and every open asking for write access answers
  STATUS_MEDIA_WRITE_PROTECTED.

Errors are raised as :class:`~winfsp_bridge.ntstatus.NtStatus`, mapped once
by :func:`nt_boundary`.
"""

from __future__ import annotations

import bisect
import functools
import logging
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from vmlfs.errors import NotFound, VmlfsError
from vmlfs.fs.links import follow
from vmlfs.fs.protocol import Attrs, FsNode, Handle
from vmlfs.fs.state import MountState
from winfsp_bridge import ntstatus as nt
from winfsp_bridge.names import fold, windows_names
from winfsp_bridge.security import BRIDGE_USER, sddl

log = logging.getLogger(__name__)

FILE_ATTRIBUTE_READONLY = 0x1
FILE_ATTRIBUTE_HIDDEN = 0x2
FILE_ATTRIBUTE_DIRECTORY = 0x10
FILE_ATTRIBUTE_NOT_CONTENT_INDEXED = 0x2000
FILE_DIRECTORY_FILE = 0x1
FILE_NON_DIRECTORY_FILE = 0x40
FILE_DELETE_ON_CLOSE = 0x1000
WRITE_ACCESS = (0x2 | 0x4 | 0x10 | 0x40 | 0x100 | 0x10000 | 0x40000 | 0x80000  # data, append, EA, child, attrs,
                | 0x40000000 | 0x10000000)  # delete, DAC, owner; GENERIC_WRITE, GENERIC_ALL
FSP_CLEANUP_DELETE = 0x1
EPOCH_AS_FILETIME = 116444736000000000  # 1970-01-01 in 100 ns units since 1601-01-01
ALLOCATION_UNIT = 4096
DIRECTORY_CACHE = 64

T = TypeVar("T")


def filetime(ns: int) -> int:
    return EPOCH_AS_FILETIME + ns // 100


def nt_boundary(fn: Callable[..., T]) -> Callable[..., T]:
    """Map every failure of an operation to one NtStatus: vmlfs errors by class, the rest logged."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except nt.NtStatus:
            raise
        except VmlfsError as exc:
            raise nt.NtStatus(nt.status_of(exc), exc.message) from None
        except OSError as exc:
            log.warning("%s: %s", fn.__name__, exc)
            raise nt.NtStatus(nt.STATUS_UNEXPECTED_IO_ERROR, str(exc)) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise nt.NtStatus(nt.STATUS_UNEXPECTED_IO_ERROR) from None
    return wrapper


def read_all(handle: Handle) -> bytes:
    out = bytearray()
    while chunk := handle.read(len(out), 1 << 20):
        out += chunk
    return bytes(out)


def refused(*_: Any, **__: Any) -> None:
    raise nt.NtStatus(nt.STATUS_MEDIA_WRITE_PROTECTED, "vmlfs serves backups read-only")


def pattern_matcher(pattern: str | None) -> Callable[[str], bool]:
    """Windows wildcards ``*`` and ``?``, compared without case; None or ``*`` match everything."""
    if pattern in (None, "", "*"):
        return lambda name: True
    regex = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
                       re.IGNORECASE | re.DOTALL)
    return lambda name: regex.fullmatch(name) is not None


@dataclass
class Directory:
    """One directory's children under their Windows names, sorted without case."""

    names: list[str]
    nodes: list[FsNode]
    keys: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.keys = [fold(n) for n in self.names]

    def position(self, name: str) -> int:
        """Where ``name`` (compared without case) is; NotFound if it is not there."""
        i = bisect.bisect_left(self.keys, fold(name))
        if i < len(self.keys) and self.keys[i] == fold(name):
            return i
        raise NotFound(f"no {name!r} here")

    def find(self, name: str) -> FsNode:
        return self.nodes[self.position(name)]

    def after(self, marker: str | None) -> range:
        """Positions after ``marker`` (all when None)."""
        start = 0 if marker is None else bisect.bisect_right(self.keys, fold(marker))
        return range(start, len(self.names))


@dataclass
class Opened:
    """An open file or directory: WinFsp's file context."""

    path: str
    node: FsNode
    attrs: Attrs
    parent: FsNode | None
    handle: Handle | None = None
    content: bytes | None = None
    """A changing file's bytes (status, control files), fixed at open so size and data agree."""


class Bridge:
    def __init__(self, state: MountState, *, reader: str = BRIDGE_USER, label: str = "vmlfs") -> None:
        self.root, self.reader, self.label = state.root, reader, label
        self._lock = threading.Lock()
        self._dirs: OrderedDict[int, Directory] = OrderedDict()

    # the tree under Windows names --------------------------------------------------

    def directory(self, node: FsNode) -> Directory:
        """The children of ``node`` by Windows name; kept for directories of backups, which never change."""
        ino = node.attrs().ino
        with self._lock:
            cached = self._dirs.get(ino)
            if cached is not None:
                self._dirs.move_to_end(ino)
                return cached
        children: dict[bytes, FsNode] = {}
        listing, offset = node.listing(), 0
        while batch := listing.entries(offset, 1024):
            for offset, name, child in batch:
                try:
                    children[name] = follow(node, child)
                except NotFound:
                    pass
        shown = windows_names(list(children))
        order = sorted(children, key=lambda raw: (fold(shown[raw]), shown[raw]))
        found = Directory([shown[raw] for raw in order], [children[raw] for raw in order])
        if node.immutable:
            with self._lock:
                self._dirs[ino] = found
                while len(self._dirs) > DIRECTORY_CACHE:
                    self._dirs.popitem(last=False)
        return found

    def resolve(self, path: str) -> tuple[FsNode, FsNode | None]:
        """The node at a Windows path and its parent (None for the root)."""
        node, parent = self.root, None
        for part in (p for p in path.split("\\") if p):
            if not stat.S_ISDIR(node.attrs().mode):
                raise nt.NtStatus(nt.STATUS_OBJECT_PATH_NOT_FOUND, path)
            parent, node = node, self.directory(node).find(part)
        return node, parent

    def attributes(self, attrs: Attrs, name: str) -> int:
        bits = FILE_ATTRIBUTE_NOT_CONTENT_INDEXED
        bits |= FILE_ATTRIBUTE_DIRECTORY if stat.S_ISDIR(attrs.mode) else FILE_ATTRIBUTE_READONLY
        if name.startswith(".") and name not in (".", ".."):
            bits |= FILE_ATTRIBUTE_HIDDEN
        return bits

    def info(self, attrs: Attrs, name: str, size: int | None = None) -> dict[str, int]:
        size = (0 if stat.S_ISDIR(attrs.mode) else attrs.size) if size is None else size
        return {
            "file_attributes": self.attributes(attrs, name),
            "allocation_size": -(-size // ALLOCATION_UNIT) * ALLOCATION_UNIT,
            "file_size": size,
            "creation_time": filetime(attrs.mtime_ns),
            "last_access_time": filetime(attrs.mtime_ns),
            "last_write_time": filetime(attrs.mtime_ns),
            "change_time": filetime(attrs.ctime_ns),
            "index_number": attrs.ino,
        }

    # the operations ------------------------------------------------------------------

    @nt_boundary
    def get_volume_info(self) -> dict[str, Any]:
        return {"total_size": 0, "free_size": 0, "volume_label": self.label}

    @nt_boundary
    def get_security_by_name(self, file_name: str) -> tuple[int, str]:
        node, _ = self.resolve(file_name)
        a = node.attrs()
        return self.attributes(a, file_name.rsplit("\\", 1)[-1]), sddl(a.mode, a.uid, a.gid, self.reader)

    @nt_boundary
    def open(self, file_name: str, create_options: int, granted_access: int) -> Opened:
        if granted_access & WRITE_ACCESS or create_options & FILE_DELETE_ON_CLOSE:
            refused()
        node, parent = self.resolve(file_name)
        attrs = node.attrs()
        directory = stat.S_ISDIR(attrs.mode)
        if create_options & FILE_DIRECTORY_FILE and not directory:
            raise nt.NtStatus(nt.STATUS_NOT_A_DIRECTORY, file_name)
        if create_options & FILE_NON_DIRECTORY_FILE and directory:
            raise nt.NtStatus(nt.STATUS_FILE_IS_A_DIRECTORY, file_name)
        opened = Opened(file_name, node, attrs, parent)
        if not directory:
            opened.handle = node.open_read()
            if not node.immutable:
                opened.content = read_all(opened.handle)
        return opened

    @nt_boundary
    def get_file_info(self, ctx: Opened) -> dict[str, int]:
        size = len(ctx.content) if ctx.content is not None else None
        return self.info(ctx.attrs, ctx.path.rsplit("\\", 1)[-1], size)

    @nt_boundary
    def get_security(self, ctx: Opened) -> str:
        return sddl(ctx.attrs.mode, ctx.attrs.uid, ctx.attrs.gid, self.reader)

    @nt_boundary
    def read_directory(self, ctx: Opened, marker: str | None, pattern: str | None = None) -> list[dict[str, Any]]:
        if not stat.S_ISDIR(ctx.attrs.mode):
            raise nt.NtStatus(nt.STATUS_NOT_A_DIRECTORY, ctx.path)
        matches = pattern_matcher(pattern)
        out: list[dict[str, Any]] = []
        # The dot entries come first (the root has none): a marker naming one resumes after it, any other is past both.
        dots = [(".", ctx.node), ("..", ctx.parent)] if ctx.parent is not None else []
        skip = {None: 0, ".": 1, "..": 2}.get(marker, len(dots))
        for name, node in dots[skip:]:
            if matches(name):
                out.append({"file_name": name, **self.info(node.attrs(), name)})
        directory = self.directory(ctx.node)
        for i in directory.after(None if marker in (".", "..") else marker):
            name = directory.names[i]
            if matches(name):
                out.append({"file_name": name, **self.info(directory.nodes[i].attrs(), name)})
        return out

    @nt_boundary
    def get_dir_info_by_name(self, ctx: Opened, file_name: str) -> dict[str, Any]:
        directory = self.directory(ctx.node)
        i = directory.position(file_name)
        return {"file_name": directory.names[i], **self.info(directory.nodes[i].attrs(), directory.names[i])}

    @nt_boundary
    def read(self, ctx: Opened, offset: int, length: int) -> bytes:
        if ctx.handle is None:
            raise nt.NtStatus(nt.STATUS_FILE_IS_A_DIRECTORY, ctx.path)
        if ctx.content is not None:
            if offset >= len(ctx.content):
                raise nt.NtStatus(nt.STATUS_END_OF_FILE)
            return ctx.content[offset:offset + length]
        size = ctx.attrs.size
        if offset >= size:
            raise nt.NtStatus(nt.STATUS_END_OF_FILE)
        length = min(length, size - offset)
        data = ctx.handle.read_cached(offset, length)
        if data is None:
            data = ctx.handle.read(offset, length)
        ctx.handle.readahead(offset, offset + len(data))
        return bytes(data)

    @nt_boundary
    def cleanup(self, ctx: Opened, file_name: str | None, flags: int) -> None:
        if flags & FSP_CLEANUP_DELETE:
            refused()

    def close(self, ctx: Opened) -> None:
        ctx.handle = None

    # everything that would change the volume
    create = overwrite = write = set_basic_info = set_file_size = can_delete = rename = staticmethod(refused)
    set_security = set_delete = set_volume_label = staticmethod(refused)
