"""The attribute blob's rules (what a hostile guest or a damaged tree cannot slip through) and the
pax records a layer gets for it, which Python's tarfile (like GNU tar) reads back."""

from __future__ import annotations

import io
import struct
import tarfile

import pytest

from vmlfs.archive import xattr_io, xattrs
from vmlfs.archive.layer import MemberInfo, _header
from vmlfs.errors import CorruptData

# user::rw-, user:1234:r--, group::r--, mask::r--, other::r-- as the kernel stores it
ACL = b"\x02\x00\x00\x00" + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in [
    (1, 6, 0xFFFFFFFF), (2, 4, 1234), (4, 4, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)])


def test_the_blob_is_canonical_and_round_trips() -> None:
    pairs = {b"user.b": b"2", b"user.a": b"\x00\xff", xattrs.ACL_ACCESS: ACL}
    blob = xattr_io.encode_xattrs(pairs)
    assert blob == xattr_io.encode_xattrs(dict(reversed(list(pairs.items()))))
    assert xattrs.decode(blob) == sorted(pairs.items())
    assert xattr_io.encode_xattrs({}) is None and xattrs.decode(None) == []


@pytest.mark.parametrize("blob", [
    xattr_io.encode_xattrs({b"user.a": b"1"})[:-1],                                  # truncated
    struct.pack("<BI", 6, 65537) + b"user.a" + b"x" * 65537,                # value over Linux's limit
    struct.pack("<BI", 6, 0) + b"user.b" + struct.pack("<BI", 6, 0) + b"user.a",  # out of order
    struct.pack("<BI", 6, 0) + b"user.a" + struct.pack("<BI", 6, 0) + b"user.a",  # duplicate
    struct.pack("<BI", 9, 0) + b"user.a\x00b",                              # NUL in a name
    struct.pack("<BI", 15, 0) + b"trusted.overlay",                         # a name vmlfs does not keep
    struct.pack("<BI", 0, 0),                                               # empty name
    b"".join(struct.pack("<BI", 8, 0) + b"user.%03d" % i for i in range(129)),  # too many
])
def test_a_malformed_blob_is_damage(blob: bytes) -> None:
    with pytest.raises(CorruptData):
        xattrs.decode(blob)


def test_acl_text_is_what_gnu_tar_writes() -> None:
    assert xattrs.acl_text(ACL) == b"user::rw-\nuser:1234:r--\ngroup::r--\nmask::r--\nother::r--\n"
    assert xattrs.acl_text(b"\x01\x00\x00\x00") is None and xattrs.acl_text(ACL[:-1]) is None


def test_a_member_carries_them_as_schily_records() -> None:
    blob = xattr_io.encode_xattrs({b"user.k=v%": b"\xff\x00", xattrs.ACL_ACCESS: ACL, xattr_io.CAPABILITY: b"\x01\x02"})
    header = _header(MemberInfo(b"f", "f", 0o644, 0, 0, "root", "root", 0, 0, xattrs=blob))
    member = tarfile.open(fileobj=io.BytesIO(header + bytes(1024))).next()
    assert member is not None
    pax = {k: v.encode("utf-8", "surrogateescape") for k, v in member.pax_headers.items()}
    assert pax == {
        "SCHILY.acl.access": xattrs.acl_text(ACL),
        "SCHILY.xattr.system.posix_acl_access": ACL,
        "SCHILY.xattr.security.capability": b"\x01\x02",
        "SCHILY.xattr.user.k%3Dv%25": b"\xff\x00",
    }
