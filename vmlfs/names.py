"""The one validator for every name that becomes a path component or a remote argument.

Entry names and backup timestamps are chosen by users or read from a store
that may have been tampered with; member names come from the guest. All of
them pass through here before they touch a file system or a command line.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from vmlfs.errors import InvalidRequest, UnsafePath

ENTRY_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+@-]{0,127}")
TIMESTAMP = re.compile(r"[0-9]{8}T[0-9]{6}Z")
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_COMPONENT = 255
MAX_PATH = 4096


def entry_name(name: str) -> str:
    """Return ``name`` if it is a safe entry name, else raise InvalidRequest."""
    if not isinstance(name, str) or not ENTRY_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidRequest(
            f"invalid entry name {name!r}",
            hint="use 1-64 characters from A-Z a-z 0-9 . _ - (not '.' or '..')",
        )
    return name


#: Names Windows reserves for devices, with any extension ("aux.txt" too), in any case.
WINDOWS_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[1-9¹²³]|LPT[1-9¹²³])(\..*)?", re.IGNORECASE)


def new_entry_name(name: str) -> str:
    """:func:`entry_name`, and also one a Windows file system can hold: not a reserved device name
    (``CON``, ``aux.txt``, ``COM1``...), not ending in a dot. Checked when an entry is created; a store
    read from elsewhere may hold older names, which stay readable."""
    entry_name(name)
    if WINDOWS_RESERVED.fullmatch(name) or name.endswith((".", " ")):
        raise InvalidRequest(f"entry name {name!r} cannot be held by a Windows file system",
                             hint="avoid CON, PRN, AUX, NUL, COM1-9, LPT1-9 (with any extension) and a trailing dot")
    return name


def domain_name(name: str) -> str:
    """Return ``name`` if vmlfs may give a new libvirt domain this name.

    The same alphabet as entry names, so a domain can be named after its entry
    and the name is safe in file names and on a command line.
    """
    if not isinstance(name, str) or not DOMAIN_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid domain name {name!r}",
            hint="use 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit",
        )
    return name


def snapshot_name(name: str) -> str:
    """Return ``name`` if vmlfs may create (or be asked for) a libvirt snapshot called that.

    libvirt forbids '/', internal qcow2 snapshots have their own limits, and
    names end up on command lines (``virsh``) and in control-file requests; a
    conservative alphabet avoids all three.
    """
    if not isinstance(name, str) or not SNAPSHOT_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid snapshot name {name!r}",
            hint="use 1-128 characters from A-Z a-z 0-9 . _ : + @ -, starting with a letter or digit",
        )
    return name


def timestamp(ts: str) -> str:
    """Return ``ts`` if it is a well-formed backup timestamp ``YYYYMMDDTHHMMSSZ``."""
    if not isinstance(ts, str) or not TIMESTAMP.fullmatch(ts):
        raise InvalidRequest(f"invalid backup timestamp {ts!r}", hint="expected YYYYMMDDTHHMMSSZ")
    try:
        _parsed(ts)
    except ValueError as exc:
        raise InvalidRequest(f"invalid backup timestamp {ts!r}: {exc}") from None
    return ts


@lru_cache(maxsize=1 << 16)
def _parsed(ts: str) -> datetime:
    """A well-formed name's moment (``ts`` matched :data:`TIMESTAMP`), parsed once per process: a
    command meets each backup's name about ten times (1,315 parses listing 132 backups). Built from
    its digits, not by strptime, which costs some 10 µs a call and 3 ms of imports (``_strptime``,
    ``calendar``); an impossible date or time raises ValueError either way."""
    return datetime(int(ts[0:4]), int(ts[4:6]), int(ts[6:8]), int(ts[9:11]), int(ts[11:13]), int(ts[13:15]),
                    tzinfo=timezone.utc)


def digest(name: str) -> str:
    """Return ``name`` if it is a store object's name: a sha256 in lowercase hex (format 2)."""
    if not isinstance(name, str) or not DIGEST.fullmatch(name):
        raise InvalidRequest(f"invalid object name {name!r}", hint="expected a sha256 in lowercase hex")
    return name


FUTURE_SLACK = timedelta(days=1)
"""How far after now a backup's name may lie and still be believed (clocks of hosts disagree a little)."""


def backup_name_problem(ts: str, now: datetime | None = None) -> str | None:
    """Why a name found in a store's ``backups/`` cannot be a backup taken so far, or None.

    A malformed or impossible date (``20261399T999999Z``), or a moment far in
    the future (``99991231T235959Z``: a wrong clock or a forged name, after
    which no later name exists). Such a backup is reported as damaged and
    never taken as a base or as the newest.
    """
    try:
        moment = parse_timestamp(ts)
    except InvalidRequest as exc:
        return exc.message
    if moment > (now or datetime.now(timezone.utc)) + FUTURE_SLACK:
        return f"backup timestamp {ts} lies in the future (a wrong clock or a forged name)"
    return None


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(ts: str) -> datetime:
    return _parsed(timestamp(ts))


def printable(raw: bytes) -> str:
    """A guest name for people (a terminal, a text file of the mount): invalid UTF-8 and control
    characters escaped, like ``ls -b``, so one name is one line whatever bytes it holds."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def component(name: bytes) -> bytes:
    """Return ``name`` if it is one safe path component (guest names, as bytes)."""
    if not name or name in (b".", b".."):
        raise UnsafePath(f"invalid name component {name!r}")
    if b"/" in name or b"\0" in name:
        raise UnsafePath(f"name component contains '/' or NUL: {name!r}")
    if len(name) > MAX_COMPONENT:
        raise UnsafePath(f"name component longer than {MAX_COMPONENT} bytes: {name[:40]!r}...")
    return name


def xattr_name(name: bytes) -> bytes:
    """An extended attribute's name from the guest: 1-255 bytes without NUL, as Linux allows
    (XATTR_NAME_MAX), so a hostile guest cannot make one the host's kernel would refuse."""
    if not isinstance(name, bytes) or not 0 < len(name) <= MAX_COMPONENT or b"\0" in name:
        raise InvalidRequest(f"invalid extended attribute name {name[:40]!r}")
    return name


def relative_path(path: bytes) -> tuple[bytes, ...]:
    """Split a relative guest path into validated components.

    Refuses absolute paths (``/x``, ``//x``, ``C:\\x``, ``\\x``), climbing
    (``..`` anywhere, including ``a\\..\\x``), empty components and over-long
    paths. ``.`` components are dropped. The empty path means the root.
    """
    if b"\0" in path:
        raise UnsafePath(f"path contains NUL: {path!r}")
    if len(path) > MAX_PATH:
        raise UnsafePath(f"path longer than {MAX_PATH} bytes: {path[:40]!r}...")
    if path.startswith((b"/", b"\\")) or re.match(rb"^[A-Za-z]:[\\/]", path):
        raise UnsafePath(f"absolute path refused: {path!r}")
    if b".." in re.split(rb"[\\/]", path):
        raise UnsafePath(f"path climbs out with '..': {path!r}")
    parts = tuple(p for p in path.split(b"/") if p not in (b"", b"."))
    for part in parts:
        component(part)
    return parts


def guest_path(path: bytes) -> tuple[bytes, ...]:
    """Split a path as a guest's scan reports it: b'' is the root, and unlike :func:`relative_path`
    nothing is normalised away (an empty or ``.`` component is refused, not dropped)."""
    if len(path) > MAX_PATH:
        raise UnsafePath(f"path longer than {MAX_PATH} bytes: {path[:40]!r}...")
    return tuple(component(part) for part in path.split(b"/")) if path else ()
