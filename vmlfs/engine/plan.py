"""Pure decisions of a backup: which base, which timestamp, what changed.

What changed is decided here only, over base rows in the manifest's column
order (``Manifest.children_rows``, ``Node.as_row``), so the fast path over raw
rows and the slow path over nodes cannot disagree.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from vmlfs import names
from vmlfs.archive.manifest import CTIME, FILE, GID, GNAME, LINK_GROUP, MODE, MTIME, SIZE, TARGET, TYPE, UID, UNAME, XATTRS
from vmlfs.engine.guest import ScanEntry
from vmlfs.engine.model import KINDS, BackupMeta
from vmlfs.errors import InvalidRequest

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
    Names that cannot be real backups (impossible dates, the far future) are
    damaged and do not count: the next backup is still possible.
    """
    moment = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    believed = [ts for ts in existing if names.backup_name_problem(ts, moment) is None]
    if believed:
        newest = names.parse_timestamp(max(believed))
        if moment <= newest:
            moment = newest + timedelta(seconds=1)
    return names.format_timestamp(moment)


#: How far before the base backup's start a path's ctime must lie for the base row to be trusted for
#: what a scan does not compare itself (a file's bytes, the attributes left unread). A ctime is stamped
#: from the kernel's coarse clock (a tick of a few ms): a file rewritten at its size, or an attribute
#: set, in the tick in which the base read it keeps the ctime the base recorded ("racily clean", in
#: git's words). Two seconds also cover a small step of the clock, or of a guest's against the host's.
RACY_CTIME_NS = 2 * 10**9
NOTHING_SETTLED = -(1 << 63)


def settled_before(base_started: str) -> int:
    """The ctime (ns since the epoch) before which a base row still says a path's bytes and
    attributes when the path's ctime is the row's: :data:`RACY_CTIME_NS` before the base backup
    started. A start that cannot be read settles nothing: every file is read again."""
    try:
        started = datetime.fromisoformat(base_started)
    except (TypeError, ValueError):
        return NOTHING_SETTLED
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    return (started - EPOCH) // timedelta(microseconds=1) * 1000 - RACY_CTIME_NS


def xattrs_read_since(settled: int, base_records_xattrs: bool, checksum: bool) -> int | None:
    """The ``xattrs_since`` of a scan (``Guest.scan``): paths whose ctime is earlier may leave their
    attributes unread, to be taken from the base row of the same ctime (:func:`base_xattrs_hold`).
    None (read every path's) when nothing is settled (a full backup has no base), under
    ``--checksum`` or over a tree older than 2.1 (it records no attributes)."""
    if settled == NOTHING_SETTLED or not base_records_xattrs or checksum:
        return None
    return settled


def base_xattrs_hold(entry: ScanEntry, row: tuple) -> bool:
    """Whether the base row's attributes are still the path's: setting or removing an attribute
    (an ACL, a capability) changes the path's ctime, so a row of the same type and ctime has them."""
    return row[TYPE] == entry.type and row[CTIME] == entry.ctime_ns


def metadata_unchanged(entry: ScanEntry, row: tuple | None) -> bool:
    """Whether a base row (``Manifest`` column order) says everything a tar header says of ``entry``
    but its size and content: type, mode, owner ids and names, mtime, link target, extended attributes."""
    return row is not None and (
        row[TYPE], row[MODE], row[UID], row[GID], row[MTIME], row[UNAME], row[GNAME], row[TARGET], row[XATTRS]
    ) == (entry.type, entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.uname, entry.gname, entry.target,
          entry.xattrs)


def content_unchanged(entry: ScanEntry, row: tuple | None, settled: int) -> bool:
    """Whether a file's bytes can be taken from the base row without reading it.

    Like restic and rsync, trust size, mtime and ctime; a changed ctime
    (chmod, rename, rewrite with a forged mtime) means re-read, and the content
    hash then finds the bytes already stored. Unlike them, a ctime at or after
    ``settled`` (:func:`settled_before`) means re-read too: the base may have
    read the file in the tick of a rewrite that left all three as they were.
    """
    return row is not None and row[TYPE] == FILE and entry.ctime_ns < settled and (
        row[SIZE], row[MTIME], row[CTIME]) == (entry.size, entry.mtime_ns, entry.ctime_ns)


def untouched(entry: ScanEntry, row: tuple, checksum: bool, settled: int) -> bool:
    """Whether the base row can stay exactly as it is: the fast path of a backup where little changed,
    run once per path, so it is :func:`metadata_unchanged` and :func:`content_unchanged` written out.

    Hardlinked files never take it (their group is rebuilt), nor does any
    file under ``--checksum`` or changed since ``settled`` (:func:`content_unchanged`).
    """
    if (row[TYPE], row[MODE], row[UID], row[GID], row[MTIME], row[UNAME], row[GNAME], row[TARGET], row[XATTRS]) != (
            entry.type, entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.uname, entry.gname, entry.target,
            entry.xattrs):
        return False
    return entry.type != FILE or not (checksum or entry.nlink > 1 or row[LINK_GROUP] is not None
                                      or entry.ctime_ns >= settled or (row[SIZE], row[CTIME]) != (entry.size, entry.ctime_ns))
