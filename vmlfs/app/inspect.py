"""Looking at a store without changing it: backups of an entry, a directory of a backup, verification.

The CLI shows these as text (and later as JSON); the mount and the web page
reach the same data through their own tree model, but a command that answers
"what is in there" or "is it sound" asks here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from vmlfs.app.refs import resolve_backup, split_ref
from vmlfs.app.session import Session
from vmlfs.archive.manifest import Node
from vmlfs.engine.store import BackupRecord
from vmlfs.engine.verify import VerifyReport, verify_store
from vmlfs.errors import VmlfsError


def backups_of(session: Session, name: str) -> list[BackupRecord]:
    """Every backup of entry ``name``, oldest first; unreadable ones carry their error."""
    return session.store().backups(name)


def directory_of(session: Session, ref: str, path: str) -> tuple[str, str, list[Node]]:
    """``path`` of backup ``NAME[@TS]``: its children if a directory, else itself; with the resolved name and ts."""
    store = session.store()
    name, ts = resolve_backup(store, ref)
    manifest = store.open_manifest(name, ts)
    try:
        node = manifest.lookup(os.fsencode(path))
        return name, ts, list(manifest.children(node.id)) if node.is_dir else [node]
    finally:
        manifest.close()


def verify_backups(session: Session, ref: str | None,
                   on_bytes: Callable[[int], None] = lambda n: None) -> tuple[VerifyReport, list[str]]:
    """Check one backup (``NAME@TS``), every backup of an entry (``NAME``), or the whole store (None).

    Also returns the damaged entries of a whole-store check (a configuration that does not load,
    backups that cannot be listed): each costs only itself, the rest is still verified.
    """
    store = session.store(create=False)
    unlisted: list[str] = []
    if ref is None:
        targets = []
        for e in store.entry_names():
            try:
                store.load_entry(e)
                targets += [(e, r.timestamp) for r in store.backups(e)]
            except VmlfsError as exc:
                unlisted.append(f"entry {e}: {exc}")
                try:
                    targets += [(e, ts) for ts in store.timestamps(e)]  # its backups may still be sound
                except VmlfsError:
                    pass  # nothing more to verify of it; its damage is reported above
    elif "@" in ref:
        targets = [resolve_backup(store, ref)]
    else:
        name, _ = split_ref(ref)
        targets = [(name, r.timestamp) for r in store.backups(name)]
    return verify_store(store, targets, on_bytes=on_bytes), unlisted
