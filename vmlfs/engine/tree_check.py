"""The checks a backup's tree must pass to be restored, in one place, so verify and restore agree.

Each row is validated as it is read (``vmlfs.archive.manifest``: names, types,
modes, owners, link targets, data locations). What a single row cannot show
is checked here: that every member of a hardlink group is the same file as
its first member, and (for verify) that every row is reachable from the
root. Restore skips a member that disagrees, as damaged; verify reports it.
"""

from __future__ import annotations

import os
from typing import Iterator

from vmlfs.archive.manifest import Manifest, Node
from vmlfs.errors import CorruptData


class LinkGroups:
    """The first member seen of each hardlink group, and whether later members agree with it."""

    def __init__(self) -> None:
        self._first: dict[int, tuple[bytes | None, int, int]] = {}

    def disagreement(self, node: Node) -> str | None:
        """None if ``node`` may share its group's inode; the first member of a group always may."""
        if node.link_group is None:
            return None
        key = (node.sha256, node.size, node.nlink)
        first = self._first.setdefault(node.link_group, key)
        if first != key:
            return f"hardlink group {node.link_group}: this member's content, size or link count differs from the first member's"
        return None


def tree_problems(manifest: Manifest) -> Iterator[str]:
    """Every reason restore would refuse or skip part of this tree, walking it without recursion."""
    groups = LinkGroups()
    reached = 0
    try:
        for path, node in manifest.walk():
            reached += 1
            problem = groups.disagreement(node)
            if problem:
                yield f"{os.fsdecode(b'/'.join(path))}: {problem}"
        total = manifest.count()
    except CorruptData as exc:
        yield str(exc)
        return
    if reached != total:
        yield f"{manifest.where}: {total - reached} manifest rows are not reachable from the root (damaged or forged)"
