"""``vmlfs export`` and ``vmlfs import``: share an entry's backups as one file (:mod:`vmlfs.engine.bundle`).

An export is written next to its destination under a temporary name and
renamed when complete, so an interrupted export leaves no half bundle under
the name; an import reads the whole bundle before it writes anything.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from vmlfs.app.refs import resolve_backup, split_ref
from vmlfs.app.session import Session
from vmlfs.engine import bundle
from vmlfs.errors import InvalidRequest, NotFound, write_failed


def export_backups(session: Session, refs: tuple[str, ...], destination: str) -> tuple[str, list[str], int]:
    """Write the backups ``refs`` (``NAME``: all of them; ``NAME@TS``: one) of one entry to ``destination``;
    returns (entry, timestamps, objects)."""
    store = session.store(create=False)
    entries = {split_ref(ref)[0] for ref in refs}
    if len(entries) != 1:
        raise InvalidRequest("a bundle holds backups of one entry: name backups of one entry")
    (entry,) = entries
    stamps: set[str] = set()
    for ref in refs:
        stamps |= {resolve_backup(store, ref)[1]} if "@" in ref else set(store.timestamps(entry))
    if not stamps:
        raise NotFound(f"entry {entry!r} has no backups to export")
    target = Path(destination)
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            count = bundle.export_bundle(store, entry, sorted(stamps), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise write_failed(exc, f"cannot write {destination}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return entry, sorted(stamps), count


def import_backups(session: Session, source: str, as_name: str | None,
                   say: Callable[[str], None] = lambda line: None) -> bundle.Imported:
    """Verify the bundle ``source`` whole, then add its entry (as ``as_name``) or its missing backups."""
    store = session.store()
    try:
        f = open(source, "rb")
    except OSError as exc:
        raise NotFound(f"cannot read {source}: {exc.strerror}") from None
    with f:
        return bundle.import_bundle(store, f, source, as_name, say)
