"""``--json``: the documents commands print for scripts, built in one place.

Guest names are bytes; JSON strings are Unicode. A name is written as its
UTF-8 text, and bytes that are not UTF-8 as lone surrogates U+DC80..U+DCFF
(Python's ``surrogateescape``; JSON escapes them as ``\\udcXX``), so
``os.fsencode`` of a string read back gives the exact bytes. Output is ASCII.
"""

from __future__ import annotations

import json
from typing import Any

import click

from vmlfs.archive import xattrs
from vmlfs.archive.manifest import Node
from vmlfs.engine.store import BackupRecord

TYPES = {"f": "file", "d": "dir", "l": "symlink"}


def option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead (docs/guide.md, 'JSON').")(f)


def emit(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=1))


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def path(parts: tuple[bytes, ...]) -> str:
    return "/".join(text(part) for part in parts)


def node(row: Node, **extra: Any) -> dict[str, Any]:
    """One tree row: type, mode (octal text, as ls and stat show it), owner, size, mtime, and what its type has."""
    doc: dict[str, Any] = {**extra, "type": TYPES[row.type], "mode": f"{row.mode & 0o7777:04o}", "uid": row.uid,
                           "gid": row.gid, "user": row.uname, "group": row.gname, "size": row.size,
                           "mtime_ns": row.mtime_ns}
    if row.xattrs is not None:  # names as text; values, which are binary (ACLs, capabilities), as hex
        doc["xattrs"] = {text(name): value.hex() for name, value in xattrs.decode(row.xattrs)}
    if row.is_symlink:
        doc["target"] = text(row.target or b"")
    if row.is_file:
        doc["sha256"] = row.sha256.hex() if row.sha256 else None
        doc["nlink"] = row.nlink
    return doc


def record(rec: BackupRecord) -> dict[str, Any]:
    """One backup as ``vmlfs list`` shows it: the summary info.json has, or why it cannot be read."""
    base = {"entry": rec.entry, "timestamp": rec.timestamp, "protected": rec.protected}
    if rec.meta is None:
        return {**base, "error": rec.error}
    return {**base, **rec.meta.summary(), "anomaly": rec.anomaly()}
