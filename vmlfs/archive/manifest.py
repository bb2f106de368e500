"""The manifest: the complete tree of one backup, as an indexed SQLite file.

A manifest answers "what is at this path", "what is in this directory" and
"where are this file's bytes" with indexed queries, so a mount or a restore
never loads a whole manifest into memory. Readers open it read-only and
immutable (no locks, no journal), lazily. Every row read is validated (types,
name rules), so a tampered or damaged manifest surfaces as :class:`CorruptData`
naming the backup, never as a wrong path. The schema is in docs/FORMAT.md;
a manifest is written by :mod:`vmlfs.archive.manifest_writer`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

from vmlfs import names
from vmlfs.archive import xattrs
from vmlfs.errors import CorruptData, NotFound, UnsupportedVersion

FORMAT_MAJOR = 2
FORMAT_MINOR = 1
READ_MAJORS = (1, 2)
ROOT_ID = 1
FILE, DIR, SYMLINK = "f", "d", "l"
_TYPES = frozenset((FILE, DIR, SYMLINK))

SCHEMA = """
CREATE TABLE format (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE nodes (
    id          INTEGER PRIMARY KEY,
    parent      INTEGER NOT NULL,
    name        BLOB    NOT NULL,
    type        TEXT    NOT NULL CHECK (type IN ('f', 'd', 'l')),
    mode        INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    gid         INTEGER NOT NULL,
    uname       TEXT    NOT NULL,
    gname       TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    ctime_ns    INTEGER NOT NULL,
    target      BLOB,
    link_group  INTEGER,
    nlink       INTEGER NOT NULL,
    sha256      BLOB,
    layer       TEXT,
    data_offset INTEGER,
    xattrs      BLOB
) STRICT;
"""
INDEXES = """
CREATE UNIQUE INDEX nodes_by_parent ON nodes (parent, name);
CREATE INDEX nodes_by_hash ON nodes (sha256) WHERE type = 'f';
CREATE INDEX nodes_by_size ON nodes (size) WHERE type = 'f';
"""
GONE = "CREATE TABLE gone (id INTEGER PRIMARY KEY) STRICT"
# A checkpoint row a delta leaves visible: neither replaced by a delta row nor removed.
_VISIBLE = "id NOT IN (SELECT id FROM main.nodes) AND id NOT IN (SELECT id FROM main.gone)"
GROUP_INDEX = "CREATE INDEX nodes_by_group ON nodes (link_group) WHERE link_group IS NOT NULL"
COLUMNS = "id, parent, name, type, mode, uid, gid, uname, gname, size, mtime_ns, ctime_ns, target, link_group, nlink, sha256, layer, data_offset, xattrs"


# Positions in a row (``COLUMNS`` order), for code that compares raw rows.
(ID, PARENT, NAME, TYPE, MODE, UID, GID, UNAME, GNAME, SIZE, MTIME, CTIME, TARGET, LINK_GROUP, NLINK, SHA256, LAYER,
 DATA_OFFSET, XATTRS) = range(19)
#: What a tree older than 2.1, without the xattrs column, is read with: no attributes.
OLD_COLUMNS = COLUMNS.replace(", xattrs", ", NULL")


@dataclass(slots=True)
class Node:
    """One path of a backup's tree.

    ``link_group`` is the id of the first node of a hardlink group (every
    member, the first included, carries it); ``nlink`` is the group's size.
    ``layer`` is the timestamp of the backup whose layer holds the bytes and
    ``data_offset`` their offset in that layer's uncompressed tar stream.
    ``ctime_ns`` is only used to detect changes (restore cannot set it).
    ``xattrs`` is the blob of :mod:`vmlfs.archive.xattrs` (None: no attributes).
    """

    id: int
    parent: int
    name: bytes
    type: str
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    size: int
    mtime_ns: int
    ctime_ns: int = 0
    target: bytes | None = None
    link_group: int | None = None
    nlink: int = 1
    sha256: bytes | None = None
    layer: str | None = None
    data_offset: int | None = None
    xattrs: bytes | None = None

    @property
    def is_dir(self) -> bool:
        return self.type == DIR

    @property
    def is_file(self) -> bool:
        return self.type == FILE

    @property
    def is_symlink(self) -> bool:
        return self.type == SYMLINK

    def as_row(self) -> tuple:
        return (
            self.id, self.parent, self.name, self.type, self.mode, self.uid, self.gid, self.uname, self.gname,
            self.size, self.mtime_ns, self.ctime_ns, self.target, self.link_group, self.nlink, self.sha256, self.layer,
            self.data_offset, self.xattrs,
        )


@lru_cache(maxsize=1024)
def _valid_layer_name(name: str) -> str:
    """A manifest names few distinct layers: validate each name once. Format 1 names a
    layer by its backup's timestamp, format 2 by the layer object's sha256."""
    return names.digest(name) if len(name) == 64 else names.timestamp(name)


def _ro_uri(path: str) -> str:
    return "file:" + urllib.parse.quote(path) + "?mode=ro&immutable=1"


MAX_OWNER = (1 << 32) - 1  # (uid_t)-1 means "leave unchanged" to chown: never a real owner


def _check_link_target(target: bytes | None) -> None:
    """What the kernel accepts as a symlink's target: 1 to 4095 bytes, no NUL."""
    if not target or b"\0" in target or len(target) >= names.MAX_PATH:
        raise CorruptData(f"symlink target {target[:40] if target else target!r} is not a valid link target")


def _node_from_row(row: tuple, where: str) -> Node:
    """Validate one row. Column types are enforced by SQLite (STRICT tables, checked
    at open); what is left are the rules types cannot express."""
    node = Node(*row)
    try:
        if node.size < 0 or node.nlink < 1 or node.type not in _TYPES:
            raise CorruptData(f"bad type {node.type!r}, size or link count")
        if node.id != ROOT_ID:
            names.component(node.name)
        if node.type == FILE:
            if node.sha256 is None or len(node.sha256) != 32:
                raise CorruptData("file without a sha256")
            if node.size and (node.layer is None or node.data_offset is None or node.data_offset < 0):
                raise CorruptData("file without a data location")
            if node.layer is not None:
                _valid_layer_name(node.layer)
        elif node.type == SYMLINK:
            _check_link_target(node.target)
        if not 0 <= node.mode <= 0o7777:
            raise CorruptData(f"mode {node.mode:o} is not a permission mode")
        if not (0 <= node.uid < MAX_OWNER and 0 <= node.gid < MAX_OWNER):
            raise CorruptData(f"owner {node.uid}:{node.gid} out of range")
        if node.link_group is not None and node.type != FILE:
            raise CorruptData("only a regular file can be in a hardlink group")
        if node.xattrs is not None:
            xattrs.decode(node.xattrs)
    except (CorruptData, names.InvalidRequest) as exc:
        raise CorruptData(f"{where}: damaged manifest row {row[0]!r}: {exc}") from None
    return node


class Manifest:
    """Read-only, lazily opened view of one tree. Thread-safe.

    A tree is either a whole manifest (format 1, or a format-2 checkpoint) or
    a format-2 **delta** over a checkpoint: the delta holds the rows that
    differ from the checkpoint and, in ``gone``, the ids the checkpoint has
    but this tree does not. The checkpoint is attached to the same SQLite
    connection (as ``b``) and every query asks the delta first, then the
    checkpoint's rows the delta neither replaces nor removes: two index probes
    instead of one, whatever the number of backups (docs/FORMAT.md).
    """

    def __init__(self, path: str | os.PathLike[str], where: str, base: str | os.PathLike[str] | None = None,
                 base_digest: str | None = None) -> None:
        self.path = os.fspath(path)
        self.base_path = os.fspath(base) if base is not None else None
        self.where = where
        self._lock = threading.Lock()
        self._db = self._connect()
        self._cols: dict[str, str] = {}  # per schema: COLUMNS, or OLD_COLUMNS for a tree older than 2.1
        fmt = self._check("main")
        if self.base_path is None:
            if "base" in fmt:
                raise CorruptData(f"{where}: tree is a delta but no checkpoint was given")
            return
        if fmt.get("base") != base_digest:
            raise CorruptData(f"{where}: delta names checkpoint {fmt.get('base')!r}, the record {base_digest!r}")
        self._attach(self._db)
        if "base" in self._check("b"):
            raise CorruptData(f"{where}: a delta's checkpoint is itself a delta")

    @property
    def records_xattrs(self) -> bool:
        """Whether every row says its path's attributes (a tree older than 2.1 says none)."""
        return all(cols is COLUMNS for cols in self._cols.values())

    @property
    def checkpoint_path(self) -> str:
        """The whole tree this one is stored against (itself if it is whole)."""
        return self.base_path or self.path

    def _check(self, schema: str) -> dict[str, str]:
        where = self.where
        try:
            fmt = dict(self._db.execute(f"SELECT key, value FROM {schema}.format").fetchall())
            strict = self._db.execute(
                "SELECT strict FROM pragma_table_list WHERE schema = ? AND name = 'nodes'", (schema,)).fetchall()
            has_xattrs = self._db.execute(f"SELECT 1 FROM pragma_table_info('nodes', '{schema}') WHERE name = 'xattrs'")
            self._cols[schema] = COLUMNS if has_xattrs.fetchall() else OLD_COLUMNS
        except (sqlite3.Error, UnicodeDecodeError, ValueError) as exc:
            raise CorruptData(f"{where}: manifest unreadable: {exc}") from None
        if fmt.get("format") != "vmlfs-manifest":
            raise CorruptData(f"{where}: not a vmlfs manifest")
        if strict != [(1,)]:
            raise CorruptData(f"{where}: manifest table is not STRICT (types would be unchecked)")
        try:
            major = int(str(fmt.get("version", "")).split(".")[0])
        except ValueError:
            raise CorruptData(f"{where}: manifest version {fmt.get('version')!r} is malformed") from None
        if major not in READ_MAJORS:
            raise UnsupportedVersion(
                f"{where}: manifest format {fmt.get('version')} is not supported (this vmlfs reads 1.x and 2.x)",
                hint="upgrade vmlfs",
            )
        return fmt

    def _connect(self) -> sqlite3.Connection:
        if not os.path.isfile(self.path):
            raise CorruptData(f"{self.where}: manifest file is missing")
        try:
            return sqlite3.connect(_ro_uri(self.path), uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise CorruptData(f"{self.where}: manifest unreadable: {exc}") from None

    def _attach(self, db: sqlite3.Connection) -> None:
        assert self.base_path is not None
        if not os.path.isfile(self.base_path):
            raise CorruptData(f"{self.where}: checkpoint file is missing")
        try:
            db.execute("ATTACH DATABASE ? AS b", (_ro_uri(self.base_path),))
        except sqlite3.Error as exc:
            raise CorruptData(f"{self.where}: checkpoint unreadable: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                raise CorruptData(f"{self.where}: manifest query failed: {exc}") from None

    def _rows(self, cond: str, args: tuple = (), tail: str = "") -> list[tuple]:
        """Rows of the tree matching ``cond``: the delta's, then the checkpoint's it leaves visible."""
        if self.base_path is None:
            return self._query(f"SELECT {self._cols['main']} FROM main.nodes WHERE {cond} {tail}", args)
        return self._query(f"SELECT {self._cols['main']} FROM main.nodes WHERE {cond} UNION ALL SELECT {self._cols['b']}"
                           f" FROM b.nodes WHERE {cond} AND {_VISIBLE} {tail}", args + args)

    def _nodes(self, cond: str, args: tuple = (), tail: str = "") -> list[Node]:
        return [_node_from_row(r, self.where) for r in self._rows(cond, args, tail)]

    def _first(self, cond: str, args: tuple) -> Node | None:
        """The first matching row: the checkpoint half runs only if the delta half found none (LIMIT 1)."""
        found = self._rows(cond, args, "LIMIT 1")
        return _node_from_row(found[0], self.where) if found else None

    def root(self) -> Node:
        return self.get(ROOT_ID)

    def get(self, node_id: int) -> Node:
        found = self._first("id = ?", (node_id,))
        if found is None:
            raise NotFound(f"{self.where}: no node {node_id}")
        return found

    def child(self, parent: int, name: bytes) -> Node:
        found = self._first("parent = ? AND name = ?", (parent, name))
        if found is None:
            raise NotFound(f"{self.where}: {name!r} not found")
        return found

    def children(self, parent: int, after: bytes | None = None, limit: int = -1) -> list[Node]:
        """Children of a directory in name order, optionally those after a name (for paging).

        Over a delta, SQLite merges the two index-ordered halves (a compound
        SELECT's ORDER BY is a merge), so a page costs a page, not the directory."""
        if after is None:  # no name bound: a damaged empty name is met (and refused), not skipped
            return self._nodes("parent = ? AND id != parent AND id != ?", (parent, ROOT_ID), f"ORDER BY name LIMIT {int(limit)}")
        return self._nodes("parent = ? AND name > ? AND id != parent AND id != ?", (parent, after, ROOT_ID),
                           f"ORDER BY name LIMIT {int(limit)}")

    def children_rows(self, parent: int) -> list[tuple]:
        """Raw, unvalidated rows of a directory's children, for the backup's diff only: their names are only
        compared with the scan's, and whatever the new manifest keeps of them is validated when read."""
        return self._rows("parent = ? AND id != parent AND id != ?", (parent, ROOT_ID))

    def lookup(self, path: bytes | tuple[bytes, ...]) -> Node:
        """The node at a relative path; symlinks are never followed."""
        parts = names.relative_path(path) if isinstance(path, bytes) else path
        node = self.root()
        for i, part in enumerate(parts):
            if not node.is_dir:
                raise NotFound(f"{b'/'.join(parts[:i]).decode(errors='replace')} is not a directory")
            try:
                node = self.child(node.id, part)
            except NotFound:
                raise NotFound(f"{b'/'.join(parts).decode(errors='replace')}: no such file in this backup") from None
        return node

    def count(self) -> int:
        if self.base_path is None:
            return self._query("SELECT count(*) FROM nodes")[0][0]
        return self._query(f"SELECT (SELECT count(*) FROM main.nodes) + (SELECT count(*) FROM b.nodes WHERE {_VISIBLE})")[0][0]

    def max_id(self) -> int:
        """The largest node id (O(log n): the end of the rowid b-tree); the mount sizes inode ranges with it."""
        if self.base_path is None:
            return self._query("SELECT max(id) FROM nodes")[0][0] or ROOT_ID
        top = self._query("SELECT max(coalesce((SELECT max(id) FROM main.nodes), 0), coalesce((SELECT max(id) FROM b.nodes), 0))")
        return top[0][0] or ROOT_ID

    def by_hash(self, digest: bytes) -> Node | None:
        return self._first("type = 'f' AND sha256 = ?", (digest,))

    def same_size_exists(self, size: int) -> bool:
        return self._first("type = 'f' AND size = ?", (size,)) is not None

    def layers(self) -> set[str]:
        """Every layer the tree's files point into (gc's mark phase; one scan of the tree)."""
        sql = "SELECT layer FROM main.nodes WHERE layer IS NOT NULL"
        if self.base_path is not None:
            sql += f" UNION SELECT layer FROM b.nodes WHERE layer IS NOT NULL AND {_VISIBLE}"
        found = {row[0] for row in self._query(sql if self.base_path else sql.replace("SELECT", "SELECT DISTINCT", 1))}
        for name in found:
            try:
                _valid_layer_name(name)
            except names.InvalidRequest as exc:
                raise CorruptData(f"{self.where}: damaged manifest: {exc}") from None
        return found

    def changed_rows(self) -> int:
        """Rows the delta holds (0 for a whole tree): how far this tree has moved from its checkpoint."""
        if self.base_path is None:
            return 0
        return self._query("SELECT (SELECT count(*) FROM main.nodes) + (SELECT count(*) FROM main.gone)")[0][0]

    def files_in_layer_order(self) -> Iterator[Node]:
        """Every regular file with data, ordered by layer and offset (sequential reads); streamed from its own
        connection so a million-file manifest is never held in memory (SQLite's sorter spills to disk)."""
        db = self._connect()
        try:
            cond = "type = 'f' AND size > 0"
            sql = f"SELECT {self._cols['main']} FROM main.nodes WHERE {cond}"
            if self.base_path is not None:
                self._attach(db)
                sql += f" UNION ALL SELECT {self._cols['b']} FROM b.nodes WHERE {cond} AND {_VISIBLE}"
            cursor = db.execute(f"{sql} ORDER BY layer, data_offset, id")
            for row in cursor:
                yield _node_from_row(row, self.where)
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise CorruptData(f"{self.where}: manifest query failed: {exc}") from None
        finally:
            db.close()

    def walk(self, start: int = ROOT_ID) -> Iterator[tuple[tuple[bytes, ...], Node]]:
        """Depth-first (path, node) pairs below ``start``, parents before children."""
        stack: list[tuple[tuple[bytes, ...], Node]] = [((), self.get(start))]
        while stack:
            path, node = stack.pop()
            yield path, node
            if node.is_dir:
                kids = self.children(node.id)
                stack.extend((path + (k.name,), k) for k in reversed(kids))

    def path_of(self, node: Node) -> tuple[bytes, ...]:
        parts: list[bytes] = []
        while node.id != ROOT_ID:
            if len(parts) > names.MAX_PATH:
                raise CorruptData(f"{self.where}: manifest has a parent cycle")
            parts.append(node.name)
            node = self.get(node.parent)
        return tuple(reversed(parts))

    def named(self, glob: str | None) -> list[Node]:
        """Every row but the root whose name matches the SQLite GLOB ``glob`` (all if None): one scan, in C."""
        cond, args = ("id != ?", (ROOT_ID,)) if glob is None else ("id != ? AND CAST(name AS TEXT) GLOB ?", (ROOT_ID, glob))
        return self._nodes(cond, args)
