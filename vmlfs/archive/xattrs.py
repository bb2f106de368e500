"""Extended attributes kept with a path: which ones, how a tree stores them, how a layer says them.

Kept are the attributes that belong to the user's data and mean the same on
any Linux machine: ``user.*``, POSIX ACLs (``system.posix_acl_access``,
``system.posix_acl_default``) and file capabilities (``security.capability``).
Not kept: ``trusted.*`` (root-only bookkeeping of overlay and other file
systems) and other ``security.*`` names (SELinux labels, IMA hashes), which
describe the guest's security policy and would be wrong or refused on the
host that restores them (docs/FORMAT.md, "Extended attributes"). Reading and
setting them on a file system is :mod:`vmlfs.archive.xattr_io` (shared with the SSH agent);
here is what the host checks and how a layer says them.

A path's attributes travel as one canonical blob (sorted by name), so two
scans of the same attributes give the same bytes and the tree's row
comparison also compares them.
"""

from __future__ import annotations

import struct

from vmlfs import names
from vmlfs.archive.xattr_io import ACL_ACCESS, ACL_DEFAULT, split_xattrs, xattr_kept
from vmlfs.errors import CorruptData, InvalidRequest

MAX_VALUE = 65536  # Linux's XATTR_SIZE_MAX: no file system holds a larger value
MAX_NAMES = 128
_ACL_ENTRY = struct.Struct("<HHI")  # tag, permissions, id (after a 4-byte version header, 2)
_ACL_TAGS = {0x01: b"user", 0x02: b"user", 0x04: b"group", 0x08: b"group", 0x10: b"mask", 0x20: b"other"}
_QUALIFIED = (0x02, 0x08)  # named user, named group: the entry's id is printed


def decode(blob: bytes | None) -> list[tuple[bytes, bytes]]:
    """(name, value) pairs of a blob from a tree or a guest, checked: every name valid and
    kept, in order, each value at most :data:`MAX_VALUE`, at most :data:`MAX_NAMES`."""
    try:
        pairs = split_xattrs(blob or b"")
    except ValueError as exc:
        raise CorruptData(str(exc)) from None
    if len(pairs) > MAX_NAMES:
        raise CorruptData(f"{len(pairs)} extended attributes on one path (at most {MAX_NAMES})")
    for i, (name, value) in enumerate(pairs):
        if len(value) > MAX_VALUE or (i and name <= pairs[i - 1][0]):
            raise CorruptData("extended attributes too large or out of order")
        try:
            names.xattr_name(name)
        except InvalidRequest as exc:
            raise CorruptData(str(exc)) from None
        if not xattr_kept(name):
            raise CorruptData(f"extended attribute {name[:40]!r} is not one vmlfs keeps")
    return pairs


def acl_text(value: bytes) -> bytes | None:
    """A Linux ACL attribute as the text GNU tar's ``--acls`` stores and reads (``acl_to_text``
    with numeric ids, which ``acl_from_text`` takes back); None if the value is not an ACL."""
    if len(value) < 4 or (len(value) - 4) % _ACL_ENTRY.size or value[:4] != b"\x02\x00\x00\x00":
        return None
    lines = []
    for tag, perm, ident in _ACL_ENTRY.iter_unpack(value[4:]):
        if tag not in _ACL_TAGS:
            return None
        qualifier = b"%d" % ident if tag in _QUALIFIED else b""
        rwx = bytes(c if perm & bit else 0x2D for c, bit in ((0x72, 4), (0x77, 2), (0x78, 1)))
        lines.append(_ACL_TAGS[tag] + b":" + qualifier + b":" + rwx + b"\n")
    return b"".join(lines)


def _keyword(name: bytes) -> bytes:
    """GNU tar's escaping of an attribute name in a pax keyword: '%' and '=' would end or garble it."""
    return name.replace(b"%", b"%25").replace(b"=", b"%3D")


def pax_items(blob: bytes | None) -> list[tuple[bytes, bytes]]:
    """The pax (keyword, value) pairs GNU tar writes for these attributes with ``--xattrs --acls``:
    ``SCHILY.xattr.NAME`` for each, and for ACLs also their text as ``SCHILY.acl.access``/``.default``."""
    items = []
    for name, value in decode(blob):
        text = acl_text(value) if name in (ACL_ACCESS, ACL_DEFAULT) else None
        if text is not None:
            items.append((b"SCHILY.acl.access" if name == ACL_ACCESS else b"SCHILY.acl.default", text))
        items.append((b"SCHILY.xattr." + _keyword(name), value))
    return items
