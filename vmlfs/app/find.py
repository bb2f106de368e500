"""``vmlfs find NAME PATTERN``: paths matching a shell pattern, in all (or some) of an entry's backups.

Each chosen backup's tree is searched in turn (:mod:`vmlfs.engine.find`:
one SQLite scan per tree, no layer read) and closed; a backup whose record
or tree is damaged is named and skipped, and the others still answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vmlfs.app.refs import resolve_backup
from vmlfs.app.session import Session
from vmlfs.archive.manifest import Node
from vmlfs.engine.find import compile_pattern, find_in_tree
from vmlfs.errors import CorruptData


@dataclass(frozen=True)
class Match:
    ts: str
    path: tuple[bytes, ...]
    node: Node


def chosen_backups(session: Session, entry: str, which: tuple[str, ...]) -> list[str]:
    """The timestamps ``--backups`` names: ``all`` (the default), ``latest``, or timestamps (unique prefixes)."""
    store = session.store(create=False)
    if not which or which == ("all",):
        return store.timestamps(entry)
    return sorted({resolve_backup(store, f"{entry}@{ts}")[1] for ts in which})


def find_paths(session: Session, entry: str, pattern: str, which: tuple[str, ...] = (),
               on_damaged: Callable[[str], None] = lambda problem: None) -> Iterator[Match]:
    """Every match, backup by backup (oldest first), each backup's in path order."""
    compiled = compile_pattern(pattern)
    store = session.store(create=False)
    for ts in chosen_backups(session, entry, which):
        try:
            tree = store.open_manifest(entry, ts)
        except CorruptData as exc:
            on_damaged(f"{entry}@{ts}: {exc.message}")
            continue
        try:
            matches = list(find_in_tree(tree, compiled))
        except CorruptData as exc:
            on_damaged(f"{entry}@{ts}: {exc.message}")
            matches = []
        finally:
            tree.close()
        for path, node in matches:
            yield Match(ts, path, node)
