"""What the engine needs from a guest: a stat-only scan and bulk file reads.

A Guest is implemented by ``vmlfs/backends/`` (a local directory, or SSH).
The engine never touches the guest's file system directly, so the same diff
and pack code serves every transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

from vmlfs.engine.rules import Rules
from vmlfs.errors import GuestError


class UnreadXattrs:
    """What a scan puts in ``ScanEntry.xattrs`` for a path whose attributes it left unread
    (``Guest.scan``'s ``xattrs_since``): ``read(path)`` reads them when the engine needs them.
    One object serves a whole scan, so leaving them costs nothing per path."""

    __slots__ = ("read",)

    def __init__(self, read: Callable[[bytes], bytes | None]) -> None:
        self.read = read


@dataclass(slots=True)
class ScanEntry:
    """One path found by a scan; ``path`` is relative to the guest home (b'' = home).

    ``type`` is 'f', 'd' or 'l'; other kinds are reported as warnings by the
    scan and never yielded. ``dev``/``ino`` identify hardlinks.
    """

    path: bytes
    type: str
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    size: int
    mtime_ns: int
    ctime_ns: int
    nlink: int = 1
    dev: int = 0
    ino: int = 0
    target: bytes | None = None
    xattrs: bytes | UnreadXattrs | None = None  # kept extended attributes, ACLs, capabilities (vmlfs.archive.xattrs)


class FileChanged(GuestError):
    """A file changed, grew, shrank or vanished while it was read."""


Warn = Callable[[str], None]


@dataclass
class ScanReport:
    """Counts and warnings a scan collects alongside the entries it yields."""

    warnings: list[str] = field(default_factory=list)
    skipped_special: int = 0
    unreadable: int = 0

    def warn(self, message: str) -> None:
        self.warnings.append(message)


class Guest(Protocol):
    """The source of a backup."""

    description: str

    def scan(self, rules: Rules, report: ScanReport, xattrs_since: int | None = None) -> Iterator[ScanEntry]:
        """Every included path, parents before children, siblings in byte order.

        With ``xattrs_since`` (ns since the epoch), a guest may leave the attributes of a path
        (not the root) whose ctime is earlier unread (:class:`UnreadXattrs`): the listxattr call
        per path is a good part of a no-change backup, and the engine takes them from the base row
        instead when the path's ctime is the row's (:func:`vmlfs.engine.plan.settled_before`).
        """
        ...

    def read_many(self, entries: Iterable[ScanEntry]) -> Iterator[tuple[ScanEntry, Iterator[bytes]]]:
        """Content of each regular file, in the order given, as chunks.

        Each chunk iterator must be consumed before the next pair is taken.
        It raises :class:`FileChanged` (after its last chunk at the latest)
        if the file no longer matches the entry's size and mtime.
        """
        ...

    def digest(self, entry: ScanEntry) -> bytes:
        """sha256 of a file's current content, for deduplicating large files before packing them."""
        ...

    def environment(self) -> bytes:
        """The environment variables as ``NAME=value`` lines."""
        ...

    def history(self) -> bytes | None:
        """The shell history, if the guest has one."""
        ...

    def release(self) -> str | None:
        """The guest's CernVM release (or OS release as a fallback), if known."""
        ...

    def close(self) -> None:
        ...
