"""Which store objects one backup needs: the one answer gc's mark, export and import share.

A record names its tree (and the checkpoint a delta tree is stored against),
its own layer and its small files (blobs); the tree points into older layers
too, for every file an incremental kept. Those are read from the tree.
"""

from __future__ import annotations

from collections.abc import Callable

from vmlfs.archive.manifest import Manifest
from vmlfs.engine.model import BackupMeta


def record_objects(meta: BackupMeta) -> set[tuple[str, str]]:
    """The objects the record names itself (not those its tree points into)."""
    ref = meta.manifest
    needed = {("trees", ref["sha256"]), ("layers", meta.layer["sha256"])}
    if ref.get("base"):
        needed.add(("trees", ref["base"]["sha256"]))
    needed |= {("blobs", r["sha256"]) for r in meta.files.values()}
    return needed


def backup_objects(open_tree: Callable[[dict], Manifest], meta: BackupMeta) -> set[tuple[str, str]]:
    """Everything the backup needs: what its record names and every layer its tree points into;
    ``open_tree`` opens a tree from its reference (a store's, or one staged by an import)."""
    tree = open_tree(meta.manifest)
    try:
        layers = tree.layers()
    finally:
        tree.close()
    return record_objects(meta) | {("layers", name) for name in layers}
