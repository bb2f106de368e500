"""A directory of the tree as a tar stream (``GET dir/?tar``), produced while it is sent.

Windows' built-in WebDAV client copies large trees slowly and cannot hold
guest names or modes, so a whole directory can be fetched as one pax tar
instead, which keeps what the guest had: the raw names (bytes, not the
Windows mapping), modes, owners, mtimes and symlinks. Headers come from the
nodes' attributes; file bytes are read through each file's handle in 1 MiB
pieces, so the stream needs no temporary file and little memory.

Once the first bytes are sent the status cannot change: an error later (a
damaged layer) ends the stream without the end-of-archive blocks, which every
tar reader reports as a truncated archive, and the reason goes to the log.
"""

from __future__ import annotations

import os
import stat
import tarfile
from typing import Iterator

from vmlfs.fs.protocol import FsNode

CHUNK = 1 << 20
_TYPES = {stat.S_IFDIR: tarfile.DIRTYPE, stat.S_IFLNK: tarfile.SYMTYPE, stat.S_IFREG: tarfile.REGTYPE}


def _header(path: bytes, node: FsNode, size: int, link: bytes = b"") -> bytes:
    a = node.attrs()
    info = tarfile.TarInfo(os.fsdecode(path))
    info.type = _TYPES[stat.S_IFMT(a.mode)]
    info.mode, info.uid, info.gid = a.mode & 0o7777, a.uid, a.gid
    info.mtime = a.mtime_ns / 1e9
    info.size = size
    info.linkname = os.fsdecode(link)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _file(path: bytes, node: FsNode) -> Iterator[bytes]:
    handle = node.open_read()
    if not node.immutable:  # a changing file (status): its bytes now, and their length in the header
        content = bytes(handle.read(0, 1 << 24))
        yield _header(path, node, len(content))
        yield content
        size = len(content)
    else:
        size = node.attrs().size
        yield _header(path, node, size)
        for offset in range(0, size, CHUNK):
            data = handle.read(offset, min(CHUNK, size - offset))
            handle.readahead(offset, offset + len(data))
            yield bytes(data)
    if size % tarfile.BLOCKSIZE:
        yield tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)


def _entries(path: bytes, node: FsNode) -> Iterator[bytes]:
    mode = node.attrs().mode
    if stat.S_ISLNK(mode):
        yield _header(path, node, 0, node.readlink())
    elif stat.S_ISREG(mode):
        yield from _file(path, node)
    elif stat.S_ISDIR(mode):
        yield _header(path + b"/", node, 0)
        listing = node.listing()
        offset = 0
        while batch := listing.entries(offset, 1024):
            for offset, name, child in batch:
                yield from _entries(path + b"/" + name, child)


def tar_stream(node: FsNode, name: bytes) -> Iterator[bytes]:
    """The pax tar of ``node`` (a directory), its members under ``name/``."""
    yield from _entries(name, node)
    yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)
