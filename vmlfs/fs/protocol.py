"""What an adapter sees of the tree model: nodes, their attributes, listings and open handles.

An adapter (the pyfuse3 one in :mod:`vmlfs.fs.fuse_adapter`, the WebDAV server
in :mod:`vmlfs.webdav`, the WinFsp bridge in ``winfsp_bridge``) imports this
module and the mount's entry point, :class:`vmlfs.fs.state.MountState`, and
of :mod:`vmlfs.fs` otherwise only the helpers for clients without Unix names
or symlinks (:mod:`vmlfs.fs.winnames`, :mod:`vmlfs.fs.links`):

* :class:`FsNode`: ``attrs()`` answers from memory and never does I/O, so an
  adapter may call it on its event loop; every other method may touch the
  store or the hypervisor and belongs in a worker thread.
* :class:`Listing`: what ``listing()`` returns, served in pages; ``entries_cached``
  answers from memory (or says it cannot), so an adapter may call it inline.
* :class:`Handle`: what every ``open_read()`` and ``open_write()`` returns.
  Its defaults describe a read-only handle, so one code path serves every
  kind of open file and no adapter needs to know which kind it holds.
* :data:`Work`: background work a control file asks for (a backup, a VM
  snapshot, provisioning), handed to the adapter as a zero-argument callable
  to run in a worker thread of its own (it blocks for minutes and records its
  outcome in ``status``, never raising).

Anything that would change the tree raises :class:`ReadOnly` (EROFS).
"""

from __future__ import annotations

import stat
from abc import ABC, abstractmethod
from typing import Callable, NamedTuple, Protocol

from vmlfs.errors import InvalidRequest, NotFound, ReadOnly

FOREVER = 86400.0  # entry/attr timeout of immutable backup nodes: they never change
SHORT = 1.0  # entries, entry directories, control directories: new backups appear within a second
NEVER = 0.0  # latest, status, snapshot: always asked again

Work = Callable[[], None]
"""A started job's blocking part: run it once, in a worker thread; it never raises."""


class Attrs(NamedTuple):
    """What ``stat`` shows; ``timeout`` is how long the kernel may cache it (and the name lookup).

    A named tuple, not a frozen dataclass: one is built per readdirplus entry, and a tuple
    builds in a third of the time."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    timeout: float

    @property
    def blocks(self) -> int:
        """512-byte blocks of the data as backed up (so ``du`` shows the guest's sizes, not the store's)."""
        return (self.size + 511) // 512 if stat.S_ISREG(self.mode) else 0


class Listing(Protocol):
    """The children of a directory, in pages; offsets are entry positions (0 is the start)."""

    def entries(self, offset: int, limit: int) -> list[tuple[int, bytes, "FsNode"]]:
        """Up to ``limit`` children from ``offset``, each with the offset of the next one (may block)."""
        ...

    def entries_cached(self, offset: int, limit: int) -> list[tuple[int, bytes, "FsNode"]] | None:
        """What :meth:`entries` would answer, if it is in memory (never blocks); else None."""
        ...


class Children:
    """A directory's children, computed whole (virtual directories have a handful; a versions
    directory, the names below one path in any backup)."""

    def __init__(self, children: list[tuple[bytes, FsNode]]) -> None:
        self._children = children

    def entries(self, offset: int, limit: int) -> list[tuple[int, bytes, FsNode]]:
        return [(i + 1, name, node) for i, (name, node) in enumerate(self._children[offset:offset + limit], offset)]

    entries_cached = entries


class Handle(Protocol):
    """An open file. Implementations subclass this to inherit the read-only defaults.

    ``read_cached`` answers without blocking or returns None (then ``read``
    runs in a worker thread); ``readahead`` is told about every read served so
    a sequential reader's next bytes can be prepared (it must not block);
    ``write`` answers from memory; ``flush`` runs at each close of a handle
    opened for writing, in a worker thread, and may return :data:`Work`.
    """

    def read(self, offset: int, size: int) -> bytes | memoryview:
        """Up to ``size`` bytes from ``offset`` (short only at the end); may block."""
        ...

    def read_cached(self, offset: int, size: int) -> bytes | memoryview | None:
        return None

    def readahead(self, start: int, end: int) -> None:
        """After a read of ``[start, end)`` was answered."""
        return None

    def write(self, data: bytes) -> int:
        raise ReadOnly("opened read-only")

    def flush(self) -> Work | None:
        return None


class ContentHandle(Handle):
    """A read handle on bytes fixed at open, so one ``cat`` of a control file never reads a torn report."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    def read(self, offset: int, size: int) -> bytes:
        return self.content[offset:offset + size]

    def read_cached(self, offset: int, size: int) -> bytes:
        return self.content[offset:offset + size]


class FsNode(ABC):
    """Base of every node kind; the defaults describe a read-only node without children."""

    ino: int
    immutable = False
    """True for nodes of committed backups: the adapter may let the kernel cache their pages."""

    @abstractmethod
    def attrs(self) -> Attrs:
        """The node's attributes (inode number, mode, owner, size, times, cache timeout), from memory."""

    def xattrs(self) -> dict[bytes, bytes]:
        """The node's extended attributes (name -> value), from memory; virtual nodes have none."""
        return {}

    def lookup(self, name: bytes) -> "FsNode":
        raise NotFound(f"{name!r}: not a directory")

    def listing(self) -> Listing:
        raise InvalidRequest("not a directory")

    def listing_cached(self) -> Listing | None:
        """What :meth:`listing` would return, if that needs no I/O (never blocks); else None."""
        return None

    def open_read(self) -> Handle:
        raise InvalidRequest("not a regular file")

    def open_read_cached(self) -> Handle | None:
        """What :meth:`open_read` would return, if that needs no I/O (never blocks); else None."""
        return None

    def readlink(self) -> bytes:
        raise InvalidRequest("not a symlink")

    def readlink_cached(self) -> bytes | None:
        """The target if known from memory (answered on the event loop), else None: ask ``readlink``."""
        return None

    def open_write(self, uid: int) -> Handle:
        raise ReadOnly("backups are read-only; only the control files accept writes")

    def setattr(self, uid: int, *, times: bool, truncate: bool, other: bool) -> Work | None:
        """chmod, chown, truncate, utimes: refused everywhere but on the writable control files."""
        raise ReadOnly("backups are read-only")
