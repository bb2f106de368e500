"""A layer: one backup's changed files as a POSIX (pax) tar in seekable zstd.

The writer emits tar headers itself (via :class:`tarfile.TarInfo`) so it knows
the exact offset of every member's data in the uncompressed stream; the
manifest records that offset and :class:`vmlfs.archive.seekable.SeekableReader`
turns it into frame reads. ``tar --zstd -xf`` extracts a layer like any other
archive: member names are paths relative to the guest home, with nanosecond
mtimes and non-UTF-8 names carried in pax records.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import BinaryIO

from vmlfs.archive.seekable import SeekableWriter

BLOCK = 512
_ZEROS = bytes(BLOCK)


@dataclass(slots=True)
class MemberInfo:
    """What a tar header needs; paths are bytes as on the guest."""

    path: bytes
    type: str  # 'f', 'd', 'l' or 'h' (hardlink to ``target`` in this same layer)
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    size: int
    mtime_ns: int
    target: bytes | None = None


_TAR_TYPES = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}


def _header(info: MemberInfo) -> bytes:
    t = tarfile.TarInfo(info.path.decode("utf-8", "surrogateescape") + ("/" if info.type == "d" else ""))
    t.type = _TAR_TYPES[info.type]
    t.mode = info.mode & 0o7777
    t.uid, t.gid = info.uid, info.gid
    t.uname, t.gname = info.uname, info.gname
    t.size = info.size if info.type == "f" else 0
    seconds, nanos = divmod(info.mtime_ns, 1_000_000_000)
    t.mtime = seconds
    if nanos:
        t.pax_headers = {"mtime": f"{seconds}.{nanos:09d}"}
    if info.target is not None:
        t.linkname = info.target.decode("utf-8", "surrogateescape")
    return t.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class LayerWriter:
    """Append members to a layer; ``begin_file`` returns the data offset."""

    def __init__(self, f: BinaryIO, *, level: int = 3, threads: int = 2) -> None:
        self._out = SeekableWriter(f, level=level, threads=threads)
        self._open_file: int | None = None
        self.members = 0

    @property
    def uncompressed_bytes(self) -> int:
        return self._out.position

    @property
    def compressed_bytes(self) -> int:
        return self._out.compressed_bytes

    def add(self, info: MemberInfo) -> None:
        """A member without data: directory, symlink or hardlink."""
        self._out.write(_header(info))
        self.members += 1

    def begin_file(self, info: MemberInfo) -> int:
        """Write a regular file's header; the caller then writes exactly ``info.size`` bytes."""
        self._out.write(_header(info))
        self.members += 1
        self._open_file = info.size
        return self._out.position

    def write(self, data: bytes | memoryview) -> None:
        self._out.write(data)

    def end_file(self) -> None:
        size = self._open_file or 0
        self._open_file = None
        if size % BLOCK:
            self._out.write(_ZEROS[: BLOCK - size % BLOCK])

    def close(self) -> None:
        self._out.write(_ZEROS * 2)
        self._out.close()

    def abort(self) -> None:
        self._out.abort()
