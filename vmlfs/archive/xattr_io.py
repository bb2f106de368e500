"""Extended attributes on a live file system: which are kept, read as one blob, set back.

The local guest, the local restore and the SSH agent share this code. The
agent gets this file's text in front of its own (``AGENT_SOURCE`` in
vmlfs/backends/ssh_guest.py), so like the agent it stays stdlib-only and runs
on python3.6: no ``from __future__`` import, annotations only as strings.
What is kept and why, and the blob's layout: :mod:`vmlfs.archive.xattrs`.
"""

import errno
import os
import struct
from collections.abc import Callable

ACL_ACCESS, ACL_DEFAULT = b"system.posix_acl_access", b"system.posix_acl_default"
CAPABILITY = b"security.capability"
PAIR = struct.Struct("<BI")  # name length, value length, then name and value
#: Absent or not supported: nothing to keep, nothing to say.
NO_XATTRS = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)


def xattr_kept(name: "bytes") -> "bool":
    return name.startswith(b"user.") or name in (ACL_ACCESS, ACL_DEFAULT, CAPABILITY)


def xattr_kind(name: "bytes") -> "str":
    """How a restore names what a target refused, once per kind."""
    if name in (ACL_ACCESS, ACL_DEFAULT):
        return "POSIX ACLs"
    if name == CAPABILITY:
        return "file capabilities"
    return "extended attributes (user.*)"


def encode_xattrs(pairs: "dict[bytes, bytes]") -> "bytes | None":
    """The canonical blob of a path's attributes; None for none, so most rows stay NULL."""
    if not pairs:
        return None
    return b"".join(PAIR.pack(len(n), len(v)) + n + v for n, v in sorted(pairs.items()))


def split_xattrs(blob: "bytes") -> "list[tuple[bytes, bytes]]":
    """The (name, value) pairs of a blob, in its order; ValueError if it is truncated. The host
    checks the pairs further (:func:`vmlfs.archive.xattrs.decode`) before it trusts them."""
    pairs, pos = [], 0
    while pos < len(blob):
        if pos + PAIR.size > len(blob):
            raise ValueError("extended attributes truncated")
        n, v = PAIR.unpack_from(blob, pos)
        start = pos + PAIR.size
        pos = start + n + v
        if pos > len(blob):
            raise ValueError("extended attributes truncated")
        pairs.append((blob[start:start + n], blob[start + n:pos]))
    return pairs


def read_xattrs(path: "bytes", warn: "Callable[[str], None]") -> "bytes | None":
    """The kept attributes of a path, never following a symlink."""
    try:
        listed = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in NO_XATTRS:
            warn("cannot list the extended attributes of %s: %s" % (os.fsdecode(path), exc.strerror))
        return None
    if not listed:  # the common case, spared the rest
        return None
    pairs = {}
    for name in listed:
        raw = os.fsencode(name)
        if not xattr_kept(raw):
            continue
        try:
            pairs[raw] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in NO_XATTRS:  # ENODATA: removed since it was listed
                warn("cannot read extended attribute %s of %s: %s" % (name, os.fsdecode(path), exc.strerror))
    return encode_xattrs(pairs)


def apply_xattrs(fd: "int", blob: "bytes", refused: "Callable[[str, OSError], None]") -> "None":
    """Set a checked blob's attributes on an open file or directory; what the target refuses goes
    to ``refused`` (by kind), so a restore never stops for it."""
    for name, value in split_xattrs(blob):
        try:
            os.setxattr(fd, os.fsdecode(name), value)
        except OSError as exc:
            refused(xattr_kind(name), exc)
