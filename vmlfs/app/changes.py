"""What changed between two backups: ``vmlfs diff`` and the mount's ``changes.txt``, one use case.

Both read only the two trees (:mod:`vmlfs.engine.tree_diff`); neither opens a
layer, so a diff of two backups of a large home costs a walk of two SQLite
files. ``changes.txt`` compares a backup with the one before it (of any kind:
what a physicist asks is "what did I change since the last backup").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vmlfs import names
from vmlfs.app.refs import resolve_backup
from vmlfs.app.session import Session
from vmlfs.archive.manifest import Manifest
from vmlfs.engine import tree_diff
from vmlfs.engine.store import StoreLayout


@dataclass(frozen=True)
class Compared:
    """The two backups a diff compares, resolved."""

    old: tuple[str, str]
    new: tuple[str, str]


@contextmanager
def diff_backups(session: Session, old_ref: str, new_ref: str, path: str = "") -> Iterator[tuple[Compared, Iterator[tree_diff.Change]]]:
    """The changes from backup ``old_ref`` to ``new_ref`` (``NAME[@TS]`` each) below ``path``, streamed
    while the trees are open."""
    store = session.store(create=False)
    old, new = resolve_backup(store, old_ref), resolve_backup(store, new_ref)
    parts = names.relative_path(os.fsencode(path)) if path else ()
    with _opened(store, old, new) as (a, b):
        yield Compared(old, new), tree_diff.diff_trees(a, b, parts)


@contextmanager
def _opened(store: StoreLayout, old: tuple[str, str], new: tuple[str, str]) -> Iterator[tuple[Manifest, Manifest]]:
    a = store.open_manifest(*old)
    try:
        b = store.open_manifest(*new)
        try:
            yield a, b
        finally:
            b.close()
    finally:
        a.close()


def previous_backup(store: StoreLayout, entry: str, ts: str) -> str | None:
    """The backup of ``entry`` just before ``ts`` (None for the first)."""
    earlier = [s for s in store.timestamps(entry) if s < ts]
    return earlier[-1] if earlier else None


def changes_text(store: StoreLayout, entry: str, ts: str) -> bytes:
    """``changes.txt``: the changes since the previous backup, one per line, then a count of each kind."""
    before = previous_backup(store, entry, ts)
    if before is None:
        return f"{entry}@{ts} is the first backup of {entry}: everything in it is new.\n".encode()
    counts: dict[str, int] = {}
    lines = [f"changes from {entry}@{before} to {entry}@{ts} (+ added, - removed, M modified, T type changed,"
             " U metadata only)"]
    with _opened(store, (entry, before), (entry, ts)) as (a, b):
        for change in tree_diff.diff_trees(a, b):
            counts[change.kind] = counts.get(change.kind, 0) + 1
            lines.append(tree_diff.change_line(change))
    lines.append(tree_diff.summary(counts))
    return ("\n".join(lines) + "\n").encode()
