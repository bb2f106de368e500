"""Which store objects one backup needs: the one answer gc's mark, export and import share.

A record names its tree (and the checkpoint a delta tree is stored against),
its own layer and its small files (blobs), and, with a CernVM-FS cache part,
that part's listing (a tree) and layer; each tree points into older layers
too, for every file (or cache object) an earlier backup stored. Those are
read from the trees.
"""

from __future__ import annotations

from collections.abc import Callable

from vmlfs.archive.manifest import Manifest
from vmlfs.engine.model import BackupMeta


def trees_of(meta: BackupMeta) -> list[dict]:
    """The tree references of a backup: its home's, and its cache part's listing (never a delta)."""
    return [meta.manifest] + ([{**meta.cvmfs["tree"], "base": None}] if meta.cvmfs is not None else [])


def record_objects(meta: BackupMeta) -> set[tuple[str, str]]:
    """The objects the record names itself (not those its trees point into)."""
    needed = {("layers", meta.layer["sha256"])} | {("blobs", r["sha256"]) for r in meta.files.values()}
    for ref in trees_of(meta):
        needed.add(("trees", ref["sha256"]))
        if ref.get("base"):
            needed.add(("trees", ref["base"]["sha256"]))
    if meta.cvmfs is not None:
        needed.add(("layers", meta.cvmfs["layer"]["sha256"]))
    return needed


def tree_key(ref: dict) -> tuple[str, str | None]:
    """What identifies the view a tree reference opens (a tree and its checkpoint), for caching its layers."""
    return ref["sha256"], (ref.get("base") or {}).get("sha256")


def backup_objects(open_tree: Callable[[dict], Manifest], meta: BackupMeta,
                   views: dict[tuple[str, str | None], set[str]] | None = None) -> set[tuple[str, str]]:
    """Everything the backup needs: what its record names and every layer its trees point into;
    ``open_tree`` opens a tree from its reference (a store's, or one staged by an import), and
    ``views`` remembers the layers of each tree already opened (gc opens each shared tree once)."""
    views = {} if views is None else views
    needed = record_objects(meta)
    for ref in trees_of(meta):
        key = tree_key(ref)
        if key not in views:
            tree = open_tree(ref)
            try:
                views[key] = tree.layers()
            finally:
                tree.close()
        needed |= {("layers", name) for name in views[key]}
    return needed
