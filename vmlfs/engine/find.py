"""Find paths in a backup's tree by shell pattern, without reading a layer.

A pattern without ``/`` is matched against names (``*.root``, ``fit.C``); one
with ``/`` against the whole path relative to the home, component by
component, so ``*`` never crosses a ``/`` (``analysis/*/fit.C``), as in the
shell; a leading ``/`` is allowed. Patterns are ``fnmatch``'s: ``*``, ``?``,
``[abc]``, ``[!abc]``, case-sensitive.

A name pattern is one SQLite scan of the tree: the pattern, when it has no
bracket expression (where SQLite's GLOB and fnmatch agree), is given to
SQLite as a GLOB, so only rows with a matching name reach Python; paths are
then built from the rows' parents, each directory once. A path pattern is
followed from the root instead, one component at a time: a literal component
is one indexed lookup per candidate directory, a wildcard one lists the
candidates' children, so the cost is that of the directories the pattern
reaches, not of the tree.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass

from vmlfs import names
from vmlfs.archive.manifest import ROOT_ID, Manifest, Node
from vmlfs.errors import CorruptData, InvalidRequest, NotFound


@dataclass(frozen=True)
class Pattern:
    """A compiled pattern: the components a path must match (one, for a name pattern)."""

    parts: tuple[bytes, ...]
    whole_path: bool

    @property
    def prefilter(self) -> str | None:
        """A name pattern as an SQLite GLOB, where GLOB means what fnmatch means (no brackets, UTF-8)."""
        name = self.parts[0]
        if b"[" in name or name == b"*":
            return None
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            return None


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
    found = _follow(tree, pattern.parts) if pattern.whole_path else _named(tree, pattern.parts[0], pattern.prefilter)
    found.sort(key=lambda match: match[0])
    return iter(found)


def _named(tree: Manifest, name: bytes, prefilter: str | None) -> list[tuple[tuple[bytes, ...], Node]]:
    rows = tree.named(prefilter)
    known = {row.id: row for row in rows}
    paths: dict[int, tuple[bytes, ...]] = {ROOT_ID: ()}
    return [(_path(tree, row, known, paths), row) for row in rows if fnmatch.fnmatchcase(row.name, name)]


def _follow(tree: Manifest, parts: tuple[bytes, ...]) -> list[tuple[tuple[bytes, ...], Node]]:
    level = [((), tree.root())]
    for part in parts:
        literal = not any(c in part for c in b"*?[")
        reached = []
        for path, node in level:
            if not node.is_dir:
                continue
            if literal:
                try:
                    reached.append((path + (part,), tree.child(node.id, part)))
                except NotFound:
                    pass
            else:
                reached += [(path + (kid.name,), kid) for kid in tree.children(node.id)
                            if fnmatch.fnmatchcase(kid.name, part)]
        level = reached
    return level


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
