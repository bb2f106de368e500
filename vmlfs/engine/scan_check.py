"""Every record a guest sends is checked here before it enters a tree.

A scan is trusted for its content, not for its shape. The local scan and the
SSH agent both promise: the root first, then depth first, parents before
children, siblings in strictly increasing byte order, one record per path,
names the kernel could have produced. A guest that breaks the promise is
broken or hostile (a modified agent, a damaged file system, a fake sshd).

Such a record **refuses the whole backup** with one :class:`GuestError`
naming the path; nothing is committed and earlier backups are untouched. We
do not skip the record with a warning: no real file system yields ``..``, a
NUL, a duplicate or a child before its parent, so the rest of that stream
cannot be trusted either, and a backup that "succeeded" while silently
missing or misplacing paths is worse than one that failed loudly (docs/ssh.md).
"""

from __future__ import annotations

from typing import Iterable, Iterator

from vmlfs import names
from vmlfs.archive import xattrs
from vmlfs.archive.manifest import DIR, FILE, SYMLINK
from vmlfs.engine.guest import ScanEntry, UnreadXattrs
from vmlfs.errors import CorruptData, GuestError, UnsafePath

U32 = 1 << 32
I64 = 1 << 63
U64 = 1 << 64
MAX_OWNER_NAME = 255


class BadRecord(GuestError):
    """A guest sent a record that no honest scan can produce."""


def _int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def _plain(e: ScanEntry, owners: set[str]) -> bool:
    """The common record, recognised in one expression: a file or directory with plain int fields
    in range, owner names already found sound, no target and no attributes (or attributes left
    unread, checked when read: :func:`checked_late_xattrs`). True implies that
    :func:`_fields_problem` finds nothing; False only means the full check must run."""
    return (
        (e.type == FILE or (e.type == DIR and e.size == 0)) and e.target is None
        and (e.xattrs is None or type(e.xattrs) is UnreadXattrs)
        and type(e.mode) is int and 0 <= e.mode <= 0o7777
        and type(e.uid) is int and 0 <= e.uid < U32 - 1 and type(e.gid) is int and 0 <= e.gid < U32 - 1
        and type(e.size) is int and 0 <= e.size < I64
        and type(e.mtime_ns) is int and -I64 <= e.mtime_ns < I64 and type(e.ctime_ns) is int and -I64 <= e.ctime_ns < I64
        and type(e.nlink) is int and 1 <= e.nlink < U32 and type(e.dev) is int and 0 <= e.dev < U64
        and type(e.ino) is int and 0 <= e.ino < U64
        and type(e.uname) is str and e.uname in owners and type(e.gname) is str and e.gname in owners
    )


def _fields_problem(e: ScanEntry) -> str | None:
    """What is wrong with one record's fields, or None."""
    if e.type not in (FILE, DIR, SYMLINK):
        return f"unknown type {e.type!r}"
    if not _int(e.mode, 0, 0o7777 + 1):
        return f"mode {e.mode!r} is not a permission mode"
    if not (_int(e.uid, 0, U32 - 1) and _int(e.gid, 0, U32 - 1)):  # (uid_t)-1 is "no owner" to chown
        return f"owner {e.uid!r}:{e.gid!r} is out of range"
    if not _int(e.size, 0, I64) or (e.type != FILE and e.size):
        return f"size {e.size!r} is impossible for type {e.type!r}"
    if not (_int(e.mtime_ns, -I64, I64) and _int(e.ctime_ns, -I64, I64)):
        return "time out of range"
    if not (_int(e.nlink, 1, U32) and _int(e.dev, 0, U64) and _int(e.ino, 0, U64)):
        return "link count, device or inode out of range"
    for owner in (e.uname, e.gname):
        try:
            if not isinstance(owner, str) or "\0" in owner or len(owner.encode("utf-8")) > MAX_OWNER_NAME:
                return f"owner name {owner!r} is malformed"
        except UnicodeEncodeError:
            return f"owner name {owner!r} is not UTF-8"
    if e.type == SYMLINK:
        if not isinstance(e.target, bytes) or not e.target or b"\0" in e.target or len(e.target) >= names.MAX_PATH:
            return f"symlink target {e.target!r} is malformed"
    elif e.target is not None:
        return "only a symlink has a target"
    if e.xattrs is not None and type(e.xattrs) is not UnreadXattrs:
        try:
            xattrs.decode(e.xattrs if isinstance(e.xattrs, bytes) else b"\xff")
        except CorruptData as exc:
            return f"extended attributes are malformed: {exc}"
    return None


def _refusal(guest: str, path: object, why: str) -> BadRecord:
    shown = path.decode("utf-8", "backslashreplace") if isinstance(path, bytes) else repr(path)
    return BadRecord(f"{guest} sent an invalid record for {shown or '.'!r}: {why}; nothing was committed",
                     hint="the guest's agent or file system is damaged or not what it claims to be")


def checked_late_xattrs(blob: bytes | None, path: bytes, guest: str) -> bytes | None:
    """Attributes a scan left unread and the engine read later, checked as a record's are."""
    if blob is not None:
        try:
            xattrs.decode(blob)
        except CorruptData as exc:
            raise _refusal(guest, path, f"extended attributes are malformed: {exc}") from None
    return blob


def checked_scan(entries: Iterable[ScanEntry], guest: str) -> Iterator[ScanEntry]:
    """Yield the scan's records unchanged, raising :class:`BadRecord` at the first bad one.

    A record is checked in full (:func:`vmlfs.names.guest_path`, :func:`_fields_problem`) unless it
    is plainly sound: its parent is an open directory, whose path was checked when it was sent, and its
    own name is a sound component; its fields pass :func:`_plain`. Either way the verdict is the same
    (and so is the reason given): the shortcut only spares re-checking what an earlier record proved.
    """
    open_dirs: list[list] = []  # [path, last child name seen], the root first
    owners: set[str] = set()  # owner names _fields_problem found sound
    for entry in entries:
        path = entry.path
        if not isinstance(path, bytes):
            raise _refusal(guest, path, "path is not bytes")
        if not path:  # the root
            problem = "its attributes were left unread" if type(entry.xattrs) is UnreadXattrs else _fields_problem(entry)
            if problem:
                raise _refusal(guest, path, problem)
            if open_dirs or entry.type != DIR:
                raise _refusal(guest, path, "a second root" if open_dirs else "the root is not a directory")
            open_dirs.append([b"", None])
            yield entry
            continue
        slash = path.rfind(b"/")
        parent, name = (path[:slash], path[slash + 1:]) if slash >= 0 else (b"", path)
        had_open = bool(open_dirs)
        while open_dirs and open_dirs[-1][0] != parent:
            open_dirs.pop()  # depth first: a directory left is never entered again
        if not (open_dirs and slash and name and name != b"." and name != b".." and b"\0" not in name
                and len(name) <= names.MAX_COMPONENT and len(path) <= names.MAX_PATH):
            try:
                names.guest_path(path)
            except UnsafePath as exc:
                raise _refusal(guest, path, str(exc)) from None
        if not _plain(entry, owners):
            problem = _fields_problem(entry)
            if problem:
                raise _refusal(guest, path, problem)
            for owner in (entry.uname, entry.gname):
                if type(owner) is str:
                    owners.add(owner)
        if not open_dirs:
            raise _refusal(guest, path, "its parent directory was not sent before it (out of order, or not a directory)"
                         if had_open else "the scan did not start with the root")
        top = open_dirs[-1]
        last = top[1]
        if last is not None and name <= last:
            raise _refusal(guest, path, "a duplicate name" if name == last else "siblings out of byte order")
        top[1] = name
        if entry.type == DIR:
            open_dirs.append([path, None])
        yield entry
    if not open_dirs:
        raise BadRecord(f"{guest} sent no root directory; nothing was committed",
                        hint="the guest's agent or file system is damaged or not what it claims to be")
