"""``/entries/<e>/versions/<path>/``: every distinct version of a path, one file per version.

``versions/`` mirrors the paths of all the entry's backups: ``versions/P/``
is a directory for every path P any backup holds; it lists the names below P
in any backup, and, where P was a file or a symlink, one node per distinct
version (:mod:`vmlfs.engine.versions`): ``fit@20261122T101500Z.C`` is
``<ts>/home/analysis/fit.C`` of the backup where that content first
appeared, the same node (inode, attributes, bytes), so ``cp`` from here is a
``cp`` from that backup. Nothing is opened at mount time: a directory asks
each backup's tree when it is looked up or listed, and backups that cannot be
read are left out (logged), as ``vmlfs versions`` does.
"""

from __future__ import annotations

import logging
import stat

from vmlfs.engine.versions import distinct_versions, version_name
from vmlfs.errors import CorruptData, NotFound
from vmlfs.fs import layout
from vmlfs.fs.archive import ArchiveNode
from vmlfs.fs.context import MountContext
from vmlfs.fs.files import VirtualNode
from vmlfs.fs.protocol import SHORT, Attrs, Children, FsNode, Listing

log = logging.getLogger(__name__)
PAGE = 1024


class VersionsDir(VirtualNode):
    """``versions/`` (``path`` empty) or ``versions/P/``: names below P in any backup, and P's versions."""

    def __init__(self, ctx: MountContext, entry: str, path: tuple[bytes, ...] = ()) -> None:
        super().__init__(ctx, ("versions", entry, path))
        self.entry, self.path = entry, path
        stamps = ctx.timestamps(entry)
        self.mtime_ns = ctx.backup_time_ns(entry, stamps[-1]) if stamps else ctx.mounted_ns

    def attrs(self) -> Attrs:
        return self.owned_attrs(stat.S_IFDIR | 0o555, 0, self.mtime_ns, SHORT)

    def _found(self, path: tuple[bytes, ...]) -> list[tuple[str, ArchiveNode]]:
        """``path`` in each readable backup that holds it, oldest first."""
        found = []
        for ts in self.ctx.timestamps(self.entry):
            try:
                node = self.ctx.home(self.entry, ts)
                for part in path:
                    node = node.lookup(part)
            except NotFound:
                continue
            except CorruptData as exc:
                log.warning("versions of %s: backup %s@%s left out: %s", self.entry, self.entry, ts, exc.message)
                continue
            if isinstance(node, ArchiveNode):
                found.append((ts, node))
        return found

    def _versions(self, found: list[tuple[str, ArchiveNode]]) -> list[tuple[bytes, FsNode]]:
        by_ts = dict(found)
        kept = distinct_versions((ts, node.row) for ts, node in found if not node.row.is_dir)
        return [(version_name(self.path[-1], v.ts), by_ts[v.ts]) for v in kept]

    def lookup(self, name: bytes) -> FsNode:
        if layout.is_probe(name):
            raise NotFound(f"no {name.decode(errors='replace')!r} here")
        if self.path and b"@" in name:
            for shown, node in self._versions(self._found(self.path)):
                if shown == name:
                    return node
        if self._found(self.path + (name,)):
            return VersionsDir(self.ctx, self.entry, self.path + (name,))
        raise NotFound(f"no {name.decode(errors='replace')!r} in any backup here")

    def listing(self) -> Listing:
        found = self._found(self.path)
        if not found:
            raise NotFound("in no backup any more")
        below: set[bytes] = set()
        for _, node in found:
            if node.row.is_dir:
                below.update(_names(node))
        children: list[tuple[bytes, FsNode]] = [(n, VersionsDir(self.ctx, self.entry, self.path + (n,))) for n in below]
        if self.path:
            children += self._versions(found)
        return Children(sorted(children, key=lambda child: child[0]))


def _names(directory: FsNode) -> list[bytes]:
    """Every child name of an archive directory, read page by page."""
    listing, out, offset = directory.listing(), [], 0
    while page := listing.entries(offset, PAGE):
        out += [name for _, name, _ in page]
        offset = page[-1][0]
    return out
