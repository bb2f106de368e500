"""The distinct versions of one path across an entry's backups, and the names the mount gives them.

A version is what a path held in the first backup where that content
appeared: a file's sha256 and size, a symlink's target, or "a directory".
Backups that kept the same content add nothing (most backups keep most
files), and content that comes back after a change is the version already
listed, as borg's versions view shows it. Pure: the caller finds the path in
each backup's tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from vmlfs.archive.manifest import Node

NAME_MAX = 255
STAMP = len("@20261122T101500Z")


@dataclass(frozen=True, slots=True)
class Version:
    """One distinct content of a path: the backup it first appeared in, and its tree row there."""

    ts: str
    node: Node


def content_key(node: Node) -> tuple:
    """What makes two rows the same version: type and content, not times or modes."""
    if node.is_file:
        return ("f", node.size, node.sha256)
    if node.is_symlink:
        return ("l", node.target)
    return ("d",)


def distinct_versions(found: Iterable[tuple[str, Node]]) -> list[Version]:
    """From (timestamp, row) pairs oldest first, the first appearance of each distinct content."""
    seen: set[tuple] = set()
    versions = []
    for ts, node in found:
        key = content_key(node)
        if key not in seen:
            seen.add(key)
            versions.append(Version(ts, node))
    return versions


def version_name(name: bytes, ts: str) -> bytes:
    """``fit.C`` of backup TS as ``fit@TS.C``: the versions of one file sort by time and keep their
    extension (so a file manager opens them with the right program); a stem too long for
    ``NAME_MAX`` with the stamp is cut, never the stamp."""
    stem, ext = os.path.splitext(name)  # a dotfile (".bashrc") has no extension
    room = NAME_MAX - STAMP - len(ext)
    if room < 1:  # an extension that long is part of the name
        stem, ext, room = name, b"", NAME_MAX - STAMP
    return stem[:room] + b"@" + ts.encode() + ext
