"""Pure decisions of a backup: which base, which timestamp, what changed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from vmlfs import names
from vmlfs.archive.manifest import Node
from vmlfs.engine.guest import ScanEntry
from vmlfs.engine.model import KINDS, BackupMeta
from vmlfs.errors import InvalidRequest


def choose_base(history: list[BackupMeta], kind: str | None) -> tuple[str, str | None, list[str]]:
    """Return (kind, base timestamp or None, notes) for a new backup.

    ``history`` holds the readable backups, oldest first. With no kind asked
    for, the first backup is full and later ones incremental. Incremental is
    based on the newest backup of any kind, differential on the newest full.
    """
    if kind is not None and kind not in KINDS:
        raise InvalidRequest(f"unknown backup kind {kind!r}", hint="use full, incremental or differential")
    notes: list[str] = []
    if kind is None:
        kind = "incremental" if history else "full"
    if kind == "full":
        return kind, None, notes
    fulls = [m for m in history if m.kind == "full"]
    if not fulls:
        notes.append(f"no full backup yet: taking a full backup instead of {kind}")
        return "full", None, notes
    if kind == "differential":
        return kind, fulls[-1].timestamp, notes
    return kind, history[-1].timestamp, notes


def next_timestamp(existing: list[str], now: datetime | None = None) -> str:
    """A timestamp for a new backup, strictly after every existing one.

    Names are second-resolution; when two backups fall in one second the new
    one is named a second after the newest (its real times are in meta.json).
    """
    moment = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    if existing:
        newest = names.parse_timestamp(max(existing))
        if moment <= newest:
            moment = newest + timedelta(seconds=1)
    return names.format_timestamp(moment)


def content_unchanged(entry: ScanEntry, base: Node | None) -> bool:
    """Whether a file's bytes can be taken from the base without reading it.

    Like restic and rsync, trust size, mtime and ctime; a changed ctime
    (chmod, rename, rewrite with a forged mtime) means re-read, and the content
    hash then finds the bytes already stored.
    """
    return (
        base is not None
        and base.is_file
        and base.size == entry.size
        and base.mtime_ns == entry.mtime_ns
        and base.ctime_ns == entry.ctime_ns
    )


def metadata_unchanged(entry: ScanEntry, base: Node | None) -> bool:
    """Whether a directory or symlink needs no new member in the layer."""
    return (
        base is not None
        and base.type == entry.type
        and base.mode == entry.mode
        and base.uid == entry.uid
        and base.gid == entry.gid
        and base.mtime_ns == entry.mtime_ns
        and base.target == entry.target
    )
