"""Hand-built tar headers, read back by Python's tarfile: every field, and a valid checksum, on each path through them."""

from __future__ import annotations

import io
import itertools
import tarfile

import zstandard

from vmlfs.archive.layer import LayerWriter, MemberInfo
from vmlfs.archive.xattr_io import encode_xattrs

NAMES = [b"a", b"d014/s0141/f003941.txt", b"x" * 100, b"y" * 101, "d\u00e9j\u00e0/vu".encode(), b"p/" * 120 + b"q"]
MTIMES = [0, 1_764_586_740_123_456_789, 1_764_586_740_000_000_000, -15 * 10**9, -1_500_000_000, -1, 8**11 * 10**9 + 7]
OWNERS = [(0, 0, "root", "root"), (1000, 100, "u" * 32, "g"), (8**7, 2**32 - 2, "u" * 33, "\u00e9l\u00e8ve"), (5, 6, "", "")]


def _members() -> list[MemberInfo]:
    out = []
    for i, (name, mtime, (uid, gid, uname, gname)) in enumerate(itertools.product(NAMES, MTIMES, OWNERS)):
        kind = "fdlh"[i % 4]
        size = [0, 1, 511, 8**11 + 3][i // 4 % 4] if kind == "f" else 0
        target = NAMES[(i + 1) % len(NAMES)] if kind in "lh" else None
        blob = encode_xattrs({b"user.k": b"v"}) if i % 7 == 0 else None
        out.append(MemberInfo(name + b"%d" % i, kind, [0o644, 0o755, 0o4750][i % 3], uid, gid, uname, gname, size, mtime,
                              target, blob))
    return out


def test_every_member_reads_back_as_it_was_written() -> None:
    members = [m for m in _members() if m.size < 1 << 20]  # the 8 GiB ones get their pax size record checked alone
    out = io.BytesIO()
    layer = LayerWriter(out, threads=1)
    for m in members:
        if m.type == "f":
            layer.add_file(m, b"z" * m.size)
        else:
            layer.add(m)
    layer.close()
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out.getvalue()), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(raw), encoding="utf-8", errors="surrogateescape") as tar:
        got = tar.getmembers()  # a bad checksum or a malformed pax record raises here
    assert len(got) == len(members)
    for m, t in zip(members, got):
        assert t.name.encode("utf-8", "surrogateescape") == m.path
        assert t.type == {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}[m.type]
        assert (t.mode, t.uid, t.gid, t.uname, t.gname, t.size) == (m.mode, m.uid, m.gid, m.uname, m.gname, m.size)
        assert round(t.mtime * 10**9) // 1000 == m.mtime_ns // 1000  # tarfile's float keeps microseconds
        assert t.linkname.encode("utf-8", "surrogateescape") == (m.target or b"")
        assert (t.pax_headers.get("SCHILY.xattr.user.k") == "v") == (m.xattrs is not None)


def test_a_size_past_the_octal_field_is_a_pax_record() -> None:
    big = next(m for m in _members() if m.size >= 8**11)
    out = io.BytesIO()
    layer = LayerWriter(out, threads=1)
    layer.begin_file(big)
    layer.close()  # not a whole member: only its headers are read
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out.getvalue()), read_across_frames=True).read()
    info = tarfile.TarInfo.frombuf(raw[-3 * 512:-2 * 512], "utf-8", "surrogateescape")
    assert info.chksum == tarfile.calc_chksums(raw[-3 * 512:-2 * 512])[0]
    assert b"size=%d\n" % big.size in raw[:-3 * 512]
