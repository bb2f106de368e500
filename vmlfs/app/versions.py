"""``vmlfs versions NAME PATH``: the distinct versions of one path over an entry's backups.

Each backup's tree is opened and closed in turn (one indexed lookup per
tree; no layer is read). A backup whose record or tree is damaged is left
out and named, so the others still answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vmlfs import names
from vmlfs.app.session import Session
from vmlfs.engine.versions import Version, distinct_versions
from vmlfs.errors import CorruptData, NotFound


@dataclass
class Versions:
    entry: str
    path: str
    versions: list[Version]
    damaged: list[str] = field(default_factory=list)
    """Backups that could not be read (``TS: reason``)."""


def file_versions(session: Session, entry: str, path: str) -> Versions:
    """The versions of ``path`` (relative to the home) in ``entry``'s backups, oldest first."""
    store = session.store(create=False)
    parts = names.relative_path(os.fsencode(path))
    found, damaged = [], []
    for record in store.backups(entry):
        if record.meta is None:
            damaged.append(f"{record.timestamp}: {record.error}")
            continue
        try:
            tree = store.open_manifest(entry, record.timestamp)
        except CorruptData as exc:
            damaged.append(f"{record.timestamp}: {exc.message}")
            continue
        try:
            found.append((record.timestamp, tree.lookup(parts)))
        except NotFound:
            pass
        except CorruptData as exc:
            damaged.append(f"{record.timestamp}: {exc.message}")
        finally:
            tree.close()
    if not found and not damaged:
        raise NotFound(f"{path}: in no backup of {entry}", hint=f"see 'vmlfs ls {entry}'")
    return Versions(entry, path, distinct_versions(found), damaged)
