"""Human units for sizes, durations and file modes in CLI output."""

from __future__ import annotations

import stat
from datetime import datetime, timezone

from vmlfs import names


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 match``, ``2 matches``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    return f"{minutes // 60} h {minutes % 60} min"


def mode(kind: str, bits: int) -> str:
    type_bits = {"d": stat.S_IFDIR, "l": stat.S_IFLNK}.get(kind, stat.S_IFREG)
    return stat.filemode(type_bits | bits)


def mtime(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def name(raw: bytes) -> str:
    """A guest name for the terminal (:func:`vmlfs.names.printable`)."""
    return names.printable(raw)
