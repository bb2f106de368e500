"""Extended attributes kept with a path: which ones, how a tree stores them, how a layer says them.

Kept are the attributes that belong to the user's data and mean the same on
any Linux machine: ``user.*``, POSIX ACLs (``system.posix_acl_access``,
``system.posix_acl_default``) and file capabilities (``security.capability``).
Not kept: ``trusted.*`` (root-only bookkeeping of overlay and other file
systems) and other ``security.*`` names (SELinux labels, IMA hashes), which
describe the guest's security policy and would be wrong or refused on the
host that restores them (docs/FORMAT.md, "Extended attributes").

A path's attributes travel as one canonical blob (sorted by name), so two
scans of the same attributes give the same bytes and the tree's row
comparison also compares them.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import Callable

from vmlfs import names
from vmlfs.errors import CorruptData, InvalidRequest

ACL_ACCESS, ACL_DEFAULT = b"system.posix_acl_access", b"system.posix_acl_default"
CAPABILITY = b"security.capability"
MAX_VALUE = 65536  # Linux's XATTR_SIZE_MAX: no file system holds a larger value
MAX_NAMES = 128
_PAIR = struct.Struct("<BI")  # name length, value length, then name and value
_ACL_ENTRY = struct.Struct("<HHI")  # tag, permissions, id (after a 4-byte version header, 2)
_ACL_TAGS = {0x01: b"user", 0x02: b"user", 0x04: b"group", 0x08: b"group", 0x10: b"mask", 0x20: b"other"}
_QUALIFIED = (0x02, 0x08)  # named user, named group: the entry's id is printed
#: Absent or not supported: nothing to keep, nothing to say.
_NONE = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)


def kept(name: bytes) -> bool:
    return name.startswith(b"user.") or name in (ACL_ACCESS, ACL_DEFAULT, CAPABILITY)


def kind(name: bytes) -> str:
    """How a restore names what a target refused, once per kind."""
    if name in (ACL_ACCESS, ACL_DEFAULT):
        return "POSIX ACLs"
    if name == CAPABILITY:
        return "file capabilities"
    return "extended attributes (user.*)"


def encode(pairs: dict[bytes, bytes]) -> bytes | None:
    """The canonical blob of a path's attributes; None for none, so most rows stay NULL."""
    if not pairs:
        return None
    return b"".join(_PAIR.pack(len(n), len(v)) + n + v for n, v in sorted(pairs.items()))


def decode(blob: bytes | None) -> list[tuple[bytes, bytes]]:
    """(name, value) pairs of a blob from a tree or a guest, checked: every name valid and
    kept, in order, each value at most :data:`MAX_VALUE`, at most :data:`MAX_NAMES`."""
    pairs: list[tuple[bytes, bytes]] = []
    pos = 0
    while blob and pos < len(blob):
        if pos + _PAIR.size > len(blob) or len(pairs) >= MAX_NAMES:
            raise CorruptData("extended attributes truncated or too many")
        n, v = _PAIR.unpack_from(blob, pos)
        name, value = blob[pos + _PAIR.size:pos + _PAIR.size + n], blob[pos + _PAIR.size + n:pos + _PAIR.size + n + v]
        pos += _PAIR.size + n + v
        if len(value) != v or v > MAX_VALUE or pos > len(blob) or (pairs and name <= pairs[-1][0]):
            raise CorruptData("extended attributes truncated, too large or out of order")
        try:
            names.xattr_name(name)
        except InvalidRequest as exc:
            raise CorruptData(str(exc)) from None
        if not kept(name):
            raise CorruptData(f"extended attribute {name[:40]!r} is not one vmlfs keeps")
        pairs.append((name, value))
    return pairs


def read_local(path: bytes, warn: Callable[[str], None]) -> bytes | None:
    """The kept attributes of a path on this machine, never following a symlink."""
    try:
        listed = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NONE:
            warn(f"cannot list the extended attributes of {os.fsdecode(path)}: {exc.strerror}")
        return None
    pairs = {}
    for name in listed:
        raw = os.fsencode(name)
        if not kept(raw):
            continue
        try:
            pairs[raw] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _NONE:  # ENODATA: removed since it was listed
                warn(f"cannot read extended attribute {name} of {os.fsdecode(path)}: {exc.strerror}")
    return encode(pairs)


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


def apply(fd: int, blob: bytes | None, refused: Callable[[str, OSError], None]) -> None:
    """Set the attributes on an open file or directory; what the target refuses goes to ``refused``
    (by kind), so a restore never stops for it."""
    for name, value in decode(blob):
        try:
            os.setxattr(fd, os.fsdecode(name), value)
        except OSError as exc:
            refused(kind(name), exc)
