"""What changed between two backups, from their trees alone (no layer is read).

Both trees are walked depth-first with each directory's children in name
order, so their paths come in the same (lexicographic) order and one merge
pass finds every difference, holding two walk stacks, never a tree. The kinds
are restic diff's: ``+`` added, ``-`` removed, ``T`` type changed, ``M``
content changed (a file's size or sha256, a symlink's target), ``U`` only
metadata (mode, owner, mtime, extended attributes and ACLs). A removed or added directory lists what was in
it too, as restic does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from vmlfs.archive.manifest import Manifest, Node
from vmlfs.errors import NotFound
from vmlfs.names import printable

ADDED, REMOVED, TYPE, MODIFIED, METADATA = "+", "-", "T", "M", "U"
KINDS = (ADDED, REMOVED, TYPE, MODIFIED, METADATA)


@dataclass(frozen=True, slots=True)
class Change:
    """One path that differs: its kind (:data:`KINDS`), path (relative to the home) and both nodes."""

    kind: str
    path: tuple[bytes, ...]
    old: Node | None
    new: Node | None


def _content_differs(a: Node, b: Node) -> bool:
    if a.is_file:
        return (a.size, a.sha256) != (b.size, b.sha256)
    return a.is_symlink and a.target != b.target


def _metadata_differs(a: Node, b: Node) -> bool:
    """Mode, owner, mtime or extended attributes (ACLs, capabilities: one canonical blob per path)."""
    return (a.mode, a.uid, a.gid, a.uname, a.gname, a.mtime_ns, a.xattrs) != \
        (b.mode, b.uid, b.gid, b.uname, b.gname, b.mtime_ns, b.xattrs)


def compare(a: Node, b: Node) -> str | None:
    """The kind of change from ``a`` to ``b`` at one path, or None if they are the same."""
    if a.type != b.type:
        return TYPE
    if _content_differs(a, b):
        return MODIFIED
    return METADATA if _metadata_differs(a, b) else None


def _find(tree: Manifest, path: tuple[bytes, ...]) -> Node | None:
    try:
        return tree.lookup(path)
    except NotFound:
        return None


def _walk(tree: Manifest, start: Node | None) -> Iterator[tuple[tuple[bytes, ...], Node]]:
    if start is not None:
        yield from tree.walk(start.id)


def diff_trees(old: Manifest, new: Manifest, path: tuple[bytes, ...] = ()) -> Iterator[Change]:
    """Every change from ``old`` to ``new`` below ``path`` (the whole home by default), in path order.

    The root itself (the home, or ``path``) is compared too, except when it is
    missing on both sides. Paths are relative to the home.
    """
    left, right = _walk(old, _find(old, path)), _walk(new, _find(new, path))
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            yield Change(REMOVED, path + a[0], a[1], None)
            a = next(left, None)
        elif a is None or b[0] < a[0]:
            yield Change(ADDED, path + b[0], None, b[1])
            b = next(right, None)
        else:  # the same path (a directory that became a file: the walk then lists its old contents as removed)
            kind = compare(a[1], b[1])
            if kind is not None:
                yield Change(kind, path + a[0], a[1], b[1])
            a, b = next(left, None), next(right, None)


def change_line(change: Change) -> str:
    """One change as restic diff prints it: the kind, four spaces, the path (a directory ends in ``/``)."""
    node = change.new or change.old
    shown = "/".join(printable(part) for part in change.path) or "."
    return f"{change.kind}    {shown}{'/' if node is not None and node.is_dir and change.path else ''}"


def summary(counts: dict[str, int]) -> str:
    """The last line: how many paths of each kind."""
    return (f"{counts.get(ADDED, 0)} added, {counts.get(REMOVED, 0)} removed, {counts.get(MODIFIED, 0)} modified,"
            f" {counts.get(TYPE, 0)} changed type, {counts.get(METADATA, 0)} metadata only")
