"""A layer: one backup's changed files as a POSIX (pax) tar in seekable zstd.

The writer builds the tar headers itself (ustar blocks and pax records, see
:func:`_header`), not through :mod:`tarfile`, so it knows the exact offset of every member's data in the uncompressed stream; the
manifest records that offset and :class:`vmlfs.archive.seekable.SeekableReader`
turns it into frame reads. ``tar --zstd -xf`` extracts a layer like any other
archive: member names are paths relative to the guest home, with nanosecond
mtimes and non-UTF-8 names carried in pax records.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO, Protocol

from vmlfs.archive import xattrs
from vmlfs.archive.seekable import SeekableWriter

BLOCK = 512
_ZEROS = bytes(BLOCK)


class Member(Protocol):
    """What a tar header needs; paths are bytes as on the guest. A :class:`MemberInfo`, or a guest's
    scan entry (which has these fields) when the member is its own path as scanned: no copy per file."""

    path: bytes
    type: str  # 'f', 'd', 'l' or 'h' (hardlink to ``target`` in this same layer)
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    size: int  # for 'f' only: the others have no data
    mtime_ns: int
    target: bytes | None
    xattrs: bytes | None  # the canonical blob of vmlfs.archive.xattrs


@dataclass(slots=True)
class MemberInfo:
    """A :class:`Member` made for the layer: a hardlink, or a path the layer names otherwise than the scan."""

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
    xattrs: bytes | None = None  # the canonical blob of vmlfs.archive.xattrs


_TAR_TYPES = {"f": b"0", "d": b"5", "l": b"2", "h": b"1"}
_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12x")
_PAX_NAME = b"././@PaxHeader"
_CHECKSUM_BLANK = sum(b" " * 8)  # the checksum is taken with its own field as spaces
_NS = 1_000_000_000


def _ascii_fits(value: bytes, width: int) -> bool:
    return len(value) <= width and value.isascii()


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n = len(b"%d" % n) + len(body)
    return b"%d" % n + body


@lru_cache(maxsize=1024)
def _owner_fields(mode: int, uid: int, gid: int, uname: bytes, gname: bytes) -> tuple[bytes, bytes, int]:
    """The ustar fields a member shares with every member of its mode and owner: mode, uid and gid;
    magic to prefix; and what they add to the checksum (members of a tree have few owners and modes)."""
    ids = b"%07o\0%07o\0%07o\0" % (mode, uid, gid)
    rest = struct.pack("6s2s32s32s8s8s155s12x", b"ustar\0", b"00", uname, gname, b"0000000", b"0000000", b"")
    return ids, rest, sum(ids) + sum(rest) + _CHECKSUM_BLANK


def _pax_time(ns: int) -> bytes:
    """A time as pax writes it: the sign, then whole seconds and nanoseconds of its magnitude
    (-1.5 s is ``-1.500000000``; floor division would give ``-2.500000000``, half a second wrong)."""
    seconds, nanos = divmod(abs(ns), _NS)
    return b"%s%d.%09d" % (b"-" if ns < 0 else b"", seconds, nanos)


def _block(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
           linkname: bytes, uname: bytes, gname: bytes) -> bytes:
    """One ustar block; its checksum is the shared fields' sum, cached, plus the sum of the others."""
    ids, rest, shared = _owner_fields(mode, uid, gid, uname, gname)
    size_field, mtime_field = b"%011o" % size, b"%011o" % mtime
    checksum = shared + sum(name) + sum(size_field) + sum(mtime_field) + typeflag[0] + sum(linkname)
    return b"".join((name.ljust(100, b"\0"), ids, size_field, b"\0", mtime_field, b"\0%06o\0 " % checksum, typeflag,
                     linkname.ljust(100, b"\0"), rest))


@lru_cache(maxsize=256)
def _pax_block(records_size: int) -> bytes:
    """The ustar block announcing a pax header; it varies only with the records' size."""
    return _block(_PAX_NAME, 0o644, 0, 0, records_size, 0, b"x", b"", b"", b"")


@lru_cache(maxsize=256)
def _owner(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


_BINARY = _pax_record(b"hdrcharset", b"BINARY")


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _clip(value: bytes, width: int) -> bytes:
    return value if _ascii_fits(value, width) else value[:width].decode("ascii", "ignore").encode()


def _header(info: Member) -> bytes:
    """The ustar header of one member, preceded by a pax header when ustar cannot say it all.

    pax records carry: names and link targets over 100 bytes or not ASCII,
    nanosecond mtimes, ids or sizes too large for octal fields, long or
    non-ASCII owners, and extended attributes and ACLs as GNU tar writes them. When one of those strings is not UTF-8, POSIX's
    ``hdrcharset=BINARY`` says the member's strings are raw bytes: bsdtar
    otherwise fails converting them, and GNU tar, which reads them raw anyway,
    only warns that it does not know the keyword.
    Written by hand because :mod:`tarfile` costs ~100 µs a member; the common member (short ASCII
    names, small ids, only the mtime's nanoseconds in pax) takes the first branch, about 2 µs.
    """
    kind = info.type
    path = info.path + b"/" if kind == "d" else info.path
    target = info.target or b""
    uname, gname = _owner(info.uname), _owner(info.gname)
    size = info.size if kind == "f" else 0
    seconds, nanos = divmod(info.mtime_ns, _NS)
    if (len(path) <= 100 and len(target) <= 100 and len(uname) <= 32 and len(gname) <= 32
            and (path + target + uname + gname).isascii() and info.xattrs is None and info.uid < 8**7
            and info.gid < 8**7 and size < 8**11 and 0 <= seconds < 8**11):
        main = _block(path, info.mode & 0o7777, info.uid, info.gid, size, seconds, _TAR_TYPES[kind], target, uname, gname)
        if not nanos:
            return main
        pax = _pax_record(b"mtime", _pax_time(info.mtime_ns))
        return _pax_block(len(pax)) + pax + _ZEROS[: -len(pax) % BLOCK] + main
    records = []
    if not _ascii_fits(path, 100):
        records.append(_pax_record(b"path", path))
    if not _ascii_fits(target, 100):
        records.append(_pax_record(b"linkpath", target))
    if nanos or not 0 <= seconds < 8**11:
        records.append(_pax_record(b"mtime", _pax_time(info.mtime_ns)))
    if info.uid >= 8**7:
        records.append(_pax_record(b"uid", b"%d" % info.uid))
    if info.gid >= 8**7:
        records.append(_pax_record(b"gid", b"%d" % info.gid))
    if size >= 8**11:
        records.append(_pax_record(b"size", b"%d" % size))
    if not _ascii_fits(uname, 32):
        records.append(_pax_record(b"uname", uname))
    if not _ascii_fits(gname, 32):
        records.append(_pax_record(b"gname", gname))
    if info.xattrs is not None:
        records.extend(_pax_record(key, value) for key, value in xattrs.pax_items(info.xattrs))
    main = _block(
        _clip(path, 100), info.mode & 0o7777, min(info.uid, 8**7 - 1), min(info.gid, 8**7 - 1), min(size, 8**11 - 1),
        seconds if 0 <= seconds < 8**11 else 0, _TAR_TYPES[kind], _clip(target, 100), _clip(uname, 32),
        _clip(gname, 32),
    )
    if not records:
        return main
    if not (path + target + uname + gname).isascii() and not all(_utf8(v) for v in (path, target, uname, gname)):
        records.insert(0, _BINARY)
    pax = b"".join(records)
    return _pax_block(len(pax)) + pax + _ZEROS[: -len(pax) % BLOCK] + main


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

    @property
    def sha256(self) -> str:
        return self._out.sha256

    def add(self, info: Member) -> None:
        """A member without data: directory, symlink or hardlink."""
        self._out.write(_header(info))
        self.members += 1

    def add_file(self, info: Member, data: bytes) -> int:
        """A regular file whose content is in memory, in one write; returns the data offset."""
        self._out.write(b"".join((_header(info), data, _ZEROS[: -len(data) % BLOCK])))
        self.members += 1
        return self._out.position - len(data) - (-len(data) % BLOCK)

    def begin_file(self, info: Member) -> int:
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
