"""Find paths in a backup's tree by shell pattern, without reading a layer.

A pattern without ``/`` is matched against names (``*.root``, ``fit.C``); one
with ``/`` against the whole path relative to the home, component by
component, so ``*`` never crosses a ``/`` (``analysis/*/fit.C``), as in the
shell; a leading ``/`` is allowed. Patterns are ``fnmatch``'s: ``*``, ``?``,
``[abc]``, ``[!abc]``, case-sensitive.

The tree's SQLite scan narrows the rows first: the last component, when it
has no bracket expression (where SQLite's GLOB and fnmatch agree), is given
to SQLite as a GLOB, so only rows with a matching name reach Python; paths
are then built from the rows' parents, each directory once.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass

from vmlfs import names
from vmlfs.archive.manifest import ROOT_ID, Manifest, Node
from vmlfs.errors import CorruptData, InvalidRequest


@dataclass(frozen=True)
class Pattern:
    """A compiled pattern: the components a path must match (one, for a name pattern)."""

    parts: tuple[bytes, ...]
    whole_path: bool

    @property
    def prefilter(self) -> str | None:
        """The last component as an SQLite GLOB, where GLOB means what fnmatch means (no brackets, UTF-8)."""
        last = self.parts[-1]
        if b"[" in last or last == b"*":
            return None
        try:
            return last.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def matches(self, path: tuple[bytes, ...]) -> bool:
        if self.whole_path:
            return len(path) == len(self.parts) and all(map(fnmatch.fnmatchcase, path, self.parts))
        return bool(path) and fnmatch.fnmatchcase(path[-1], self.parts[0])


def compile_pattern(text: str) -> Pattern:
    """``text`` as a :class:`Pattern`; refused if it is empty or has an empty component."""
    raw = os.fsencode(text)
    whole = b"/" in raw
    parts = tuple(raw.lstrip(b"/").split(b"/")) if whole else (raw,)
    if not raw or any(not part for part in parts) or any(len(part) > names.MAX_COMPONENT for part in parts):
        raise InvalidRequest(f"{text!r} is not a pattern: give a name pattern ('*.root') or a path pattern ('analysis/*.C')")
    return Pattern(parts, whole)


def find_in_tree(tree: Manifest, pattern: Pattern) -> Iterator[tuple[tuple[bytes, ...], Node]]:
    """Every (path, node) of ``tree`` matching ``pattern``, in path order."""
    rows = tree.named(pattern.prefilter)
    known = {row.id: row for row in rows}
    paths: dict[int, tuple[bytes, ...]] = {ROOT_ID: ()}
    found = []
    for row in rows:
        path = _path(tree, row, known, paths)
        if pattern.matches(path):
            found.append((path, row))
    found.sort(key=lambda match: match[0])
    return iter(found)


def _path(tree: Manifest, row: Node, known: dict[int, Node], paths: dict[int, tuple[bytes, ...]]) -> tuple[bytes, ...]:
    """The path of ``row``, from its parents' paths (each computed once, iteratively: trees may be deep)."""
    chain = []
    node = row
    while node.id not in paths:
        chain.append(node)
        if len(chain) > names.MAX_PATH:
            raise CorruptData(f"{tree.where}: the tree has a parent cycle")
        node = known.get(node.parent) or tree.get(node.parent)
    path = paths[node.id]
    for node in reversed(chain):
        path = path + (node.name,)
        if node.is_dir:
            paths[node.id] = path
    return path
