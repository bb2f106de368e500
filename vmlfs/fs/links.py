"""Symlinks for clients that have none (WebDAV, Windows): which ones to serve, as what.

Neither a WebDAV client nor a Windows file system can be handed a guest
symlink as such, and following one blindly could lead a client out of the
tree or round a loop. One rule for every such adapter: a symlink whose
target is a single name in the same directory (``latest`` is one) is served
as that sibling, at most :data:`MAX_HOPS` deep; every other symlink
(absolute, climbing, into a subdirectory, dangling) is left out. Pure: it
asks only the nodes.
"""

from __future__ import annotations

import stat

from vmlfs.errors import NotFound
from vmlfs.fs.protocol import FsNode

MAX_HOPS = 8


def follow(parent: FsNode, node: FsNode) -> FsNode:
    """``node``, or what it points to if it is a symlink to a sibling; NotFound for any other symlink."""
    for _ in range(MAX_HOPS):
        if not stat.S_ISLNK(node.attrs().mode):
            return node
        target = node.readlink()
        if not target or b"/" in target or target in (b".", b".."):
            raise NotFound("symlinks that leave their directory are not served")
        node = parent.lookup(target)
    raise NotFound(f"more than {MAX_HOPS} symlinks in a row")
