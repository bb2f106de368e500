"""Format-2 trees as stored: whole checkpoints, deltas over them, and rewrites of either.

A backup builds its whole tree locally (the base's tree materialized, then
patched by the scan, as format 1 did). What goes into the store is only the
difference from the base's checkpoint, unless that difference has grown past
:data:`CHECKPOINT_RATIO` of the checkpoint: then the whole tree becomes the
next checkpoint. A reader thus never needs more than two files, and a tree
costs what changed since its checkpoint (docs/FORMAT.md, "Trees").

Every function writes a new file; stored trees are never modified.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from vmlfs.archive.manifest import (
    COLUMNS,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    GONE,
    GROUP_INDEX,
    INDEXES,
    OLD_COLUMNS,
    SCHEMA,
    Manifest,
    _ro_uri,
)
from vmlfs.errors import StorageFull

#: A delta larger than this share of its checkpoint (in bytes) is stored as a new checkpoint instead.
#: With k % of the rows changing per backup, about CHECKPOINT_RATIO/k backups share a checkpoint;
#: 0.15 keeps the amortized tree cost near 0.15 checkpoint per backup at 1 % change (docs/FORMAT.md).
CHECKPOINT_RATIO = 0.15

_SAME = " AND ".join(f"o.{c} IS n.{c}" for c in COLUMNS.split(", ")[1:])
_VERSION = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"


def _open(path: str | os.PathLike[str]) -> sqlite3.Connection:
    db = sqlite3.connect(os.fspath(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    return db


def _has_xattrs(db: sqlite3.Connection, schema: str = "main") -> bool:
    return bool(db.execute(f"SELECT 1 FROM pragma_table_info('nodes', '{schema}') WHERE name = 'xattrs'").fetchall())


def _add_xattrs(db: sqlite3.Connection) -> None:
    """A tree older than 2.1 gets the xattrs column (NULL: none) before it is patched or rewritten as 2.1."""
    if not _has_xattrs(db):
        db.execute("ALTER TABLE nodes ADD COLUMN xattrs BLOB")


def _set_format(db: sqlite3.Connection, base: str | None) -> None:
    db.execute("DELETE FROM format WHERE key IN ('backup', 'base', 'version')")
    db.execute("INSERT INTO format VALUES ('version', ?)", (_VERSION,))
    if base is not None:
        db.execute("INSERT INTO format VALUES ('base', ?)", (base,))


def materialize(tree: Manifest, out: str | os.PathLike[str]) -> None:
    """The whole tree of ``tree`` as one manifest file at ``out`` (what a backup patches)."""
    try:
        shutil.copyfile(tree.checkpoint_path, out)
        db = _open(out)
        try:
            db.execute("BEGIN")
            db.execute(GONE.replace("TABLE", "TABLE IF NOT EXISTS"))
            _add_xattrs(db)
            if tree.base_path is not None:
                db.execute("ATTACH DATABASE ? AS d", (_ro_uri(tree.path),))
                db.execute("DELETE FROM nodes WHERE id IN (SELECT id FROM d.gone) OR id IN (SELECT id FROM d.nodes)")
                db.execute(f"INSERT INTO nodes ({COLUMNS}) SELECT {COLUMNS if _has_xattrs(db, 'd') else OLD_COLUMNS} FROM d.nodes")
            _set_format(db, None)
            db.execute("COMMIT")
        finally:
            db.close()
    except (OSError, sqlite3.Error) as exc:
        raise StorageFull(f"cannot write the base tree: {exc}") from exc


def write_delta(full: str | os.PathLike[str], checkpoint: str, checkpoint_digest: str, out: str | os.PathLike[str],
                same_as: Manifest | None = None) -> None:
    """The rows of ``full`` that differ from ``checkpoint`` and the ids it lost, as a delta file.

    Rows go in ``full``'s id order, so the same two trees always give the same
    bytes: an unchanged backup's delta is the previous backup's object again.
    ``same_as`` is a tree over the same checkpoint (or that checkpoint itself) which ``full`` is
    known to equal, row for row (a backup that changed no row of its base): the delta then holds that
    tree's own rows and lost ids, in the same order, instead of comparing every row of ``full`` with
    the checkpoint (which would find exactly those)."""
    try:
        db = _open(out)
        try:
            db.executescript(SCHEMA)
            db.execute(GONE)
            db.execute("BEGIN")
            db.execute("INSERT INTO format VALUES ('format', 'vmlfs-manifest')")
            _set_format(db, checkpoint_digest)
            cols = ", ".join(f"n.{c}" for c in COLUMNS.split(", "))
            if same_as is None:
                db.execute("ATTACH DATABASE ? AS f", (_ro_uri(os.fspath(full)),))
                db.execute("ATTACH DATABASE ? AS c", (_ro_uri(checkpoint),))
                db.execute(f"INSERT INTO main.nodes SELECT {cols} FROM f.nodes AS n"
                           f" WHERE NOT EXISTS (SELECT 1 FROM c.nodes AS o WHERE o.id = n.id AND {_SAME}) ORDER BY n.id")
                db.execute("INSERT INTO main.gone SELECT id FROM c.nodes WHERE id NOT IN (SELECT id FROM f.nodes) ORDER BY id")
                db.execute("COMMIT")
                db.execute("DETACH DATABASE f")
                db.execute("DETACH DATABASE c")
            elif same_as.base_path is not None:  # a delta: its rows are what differs from the checkpoint
                db.execute("ATTACH DATABASE ? AS d", (_ro_uri(same_as.path),))
                db.execute(f"INSERT INTO main.nodes SELECT {cols} FROM d.nodes AS n ORDER BY n.id")
                db.execute("INSERT INTO main.gone SELECT id FROM d.gone ORDER BY id")
                db.execute("COMMIT")
                db.execute("DETACH DATABASE d")
            else:  # the checkpoint itself: nothing differs
                db.execute("COMMIT")
            for statement in [*INDEXES.strip().split(";\n"), GROUP_INDEX]:
                db.execute(statement)
        finally:
            db.close()
    except (OSError, sqlite3.Error) as exc:
        raise StorageFull(f"cannot write a tree delta: {exc}") from exc


def choose_stored(full: Path, checkpoint: Manifest | None, checkpoint_digest: str | None, *,
                  unchanged: bool = False) -> tuple[Path, bool]:
    """What to store for the whole tree ``full``: (file, is_delta). A delta over ``checkpoint``
    while it stays small, else ``full`` itself as a new checkpoint (also over a checkpoint older than 2.1,
    whose rows cannot say that attributes are the same). ``unchanged``: ``full`` has exactly the rows of
    the tree ``checkpoint`` (a backup's base, which it patched without changing a row). An unchanged
    whole tree is stored as the base's own file (a hard link where it can be, read only from then on):
    patching leaves other bytes (SQLite's change counter), and a new object of the same rows would be
    stored, and kept, at every such backup."""
    if checkpoint is None or checkpoint_digest is None or not _columns_current(checkpoint.checkpoint_path):
        return full, False
    if unchanged and checkpoint.base_path is None and _format_rows(checkpoint.path) == _format_rows(full):
        same = full.with_name(full.name + ".base")
        try:
            os.link(checkpoint.path, same)  # no copy to write, and sync, of a tree that may be 100s of MB
        except OSError:  # a checkpoint cached on another file system
            shutil.copyfile(checkpoint.path, same)
        return same, False
    # A delta without the attributes column holds rows unlike the ones a delta would hold now: compared.
    same_as = checkpoint if unchanged and _columns_current(checkpoint.path) else None
    delta = full.with_name(full.name + ".delta")
    write_delta(full, checkpoint.checkpoint_path, checkpoint_digest, delta, same_as=same_as)
    if delta.stat().st_size > CHECKPOINT_RATIO * os.path.getsize(checkpoint.checkpoint_path):
        delta.unlink()
        return full, False
    return delta, True


def _format_rows(path: str | os.PathLike[str]) -> list[tuple]:
    """A tree file's format table (kind, version, checkpoint), which its rows alone do not say."""
    db = sqlite3.connect(_ro_uri(os.fspath(path)), uri=True)
    try:
        return db.execute("SELECT key, value FROM format ORDER BY key").fetchall()
    finally:
        db.close()


def _columns_current(path: str) -> bool:
    """Whether a tree file's rows have every column this vmlfs writes (a tree older than 2.1 has no attributes)."""
    db = sqlite3.connect(_ro_uri(path), uri=True)
    try:
        return _has_xattrs(db)
    finally:
        db.close()


def rewrite(src: str | os.PathLike[str], out: str | os.PathLike[str], *, base: str | None,
            renames: dict[str, str] | None = None,
            moves: list[tuple[str, int, str, int]] | None = None) -> None:
    """A copy of tree file ``src`` whose files point elsewhere, as a format-2 tree over ``base``.

    ``renames`` maps a layer name to another (format-1 timestamps to layer
    objects: upgrade); ``moves`` lists (layer, offset, new layer, new offset)
    of single members (gc's repack)."""
    try:
        shutil.copyfile(src, out)
        db = _open(out)
        try:
            db.execute("BEGIN")
            db.execute(GONE.replace("TABLE", "TABLE IF NOT EXISTS"))
            _add_xattrs(db)
            if renames:
                db.execute("CREATE TEMP TABLE renames (old TEXT PRIMARY KEY, new TEXT NOT NULL)")
                db.executemany("INSERT INTO renames VALUES (?, ?)", renames.items())
                db.execute("UPDATE nodes SET layer = (SELECT new FROM renames WHERE old = nodes.layer)"
                           " WHERE layer IN (SELECT old FROM renames)")
            if moves:
                db.execute("CREATE TEMP TABLE moves (layer TEXT, off INTEGER, new_layer TEXT, new_off INTEGER,"
                           " PRIMARY KEY (layer, off))")
                db.executemany("INSERT INTO moves VALUES (?, ?, ?, ?)", moves)
                db.execute("UPDATE nodes SET (layer, data_offset) = (SELECT new_layer, new_off FROM moves m"
                           " WHERE m.layer = nodes.layer AND m.off = nodes.data_offset)"
                           " WHERE EXISTS (SELECT 1 FROM moves m WHERE m.layer = nodes.layer AND m.off = nodes.data_offset)")
            _set_format(db, base)
            db.execute("COMMIT")
        finally:
            db.close()
    except (OSError, sqlite3.Error) as exc:
        raise StorageFull(f"cannot rewrite a tree: {exc}") from exc


def own_layers(path: str | os.PathLike[str]) -> set[str]:
    """Layers the rows of one tree file name (for a delta: its own rows only)."""
    db = sqlite3.connect(_ro_uri(os.fspath(path)), uri=True)
    try:
        return {row[0] for row in db.execute("SELECT DISTINCT layer FROM nodes WHERE layer IS NOT NULL")}
    finally:
        db.close()
