"""A walk of a backup (``find``, ``ls -R``) opens and lists its directories from memory, with one
query hop per :data:`~vmlfs.fs.archive.AHEAD_ROWS` rows, not per directory (vmlfs.fs.archive.FirstPages)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from vmlfs.app.session import Session
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.engine.backup import BackupOptions, run_backup
from vmlfs.engine.model import EntryConfig
from vmlfs.errors import CorruptData
from vmlfs.fs import archive
from vmlfs.fs.control import Jobs
from vmlfs.fs.state import MountState


def backed_up(tmp_path: Path, home: Path, forge=None):
    """The home of a full backup of ``home``, its tree first changed by ``forge(db)`` (with the record
    rewritten to match, as an attacker would)."""
    store = LocalStore(tmp_path / "store")
    store.add_entry(EntryConfig("e", str(home)))
    ts = run_backup(store, store.load_entry("e"), LocalGuest(home), BackupOptions(kind="full")).timestamp
    if forge is not None:
        record_path = tmp_path / "store" / "entries" / "e" / "backups" / f"{ts}.json"
        record = json.loads(record_path.read_text())
        tree = tmp_path / "store" / "objects" / "trees" / f"{record['manifest']['sha256']}.sqlite"
        forged = tmp_path / "forged.sqlite"
        forged.write_bytes(tree.read_bytes())
        db = sqlite3.connect(forged)
        forge(db)
        db.commit()
        db.close()
        data = forged.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (tmp_path / "store" / "objects" / "trees" / f"{digest}.sqlite").write_bytes(data)
        record["manifest"].update(sha256=digest, size=len(data))
        record_path.write_text(json.dumps(record))
    session = Session(str(tmp_path / "store"), shared_store=True)
    st = MountState(session.store(), Jobs(session), owner_uid=1000, owner_gid=1000)
    return st, st.root.lookup(b"entries").lookup(b"e").lookup(ts.encode()).lookup(b"home")


@pytest.fixture
def tree(tmp_path):
    """30 directories of 3 subdirectories of 5 files each: 570 rows below home."""
    home = tmp_path / "home"
    for i in range(30):
        for j in range(3):
            leaf = home / f"d{i:02d}" / f"s{j}"
            leaf.mkdir(parents=True)
            for k in range(5):
                (leaf / f"f{k}").write_text(f"{i} {j} {k}\n")
    st, top = backed_up(tmp_path, home)
    yield home, top
    st.close()


def find(top, batch: int = 7) -> tuple[list[str], int, int]:
    """Every path below ``top`` as a depth-first walk lists them, in kernel-sized batches; with how many
    openings and how many batches needed a worker thread (a query)."""
    paths, opened, listed = [], 0, 0

    def walk(node, prefix: str) -> None:
        nonlocal opened, listed
        listing = node.listing_cached()
        if listing is None:
            opened += 1
            listing = node.listing()
        offset, children = 0, []
        while True:
            batch_rows = listing.entries_cached(offset, batch)
            if batch_rows is None:
                listed += 1
                batch_rows = listing.entries(offset, batch)
            if not batch_rows:
                break
            children += batch_rows
            offset = batch_rows[-1][0]
        for _, name, child in children:
            path = f"{prefix}/{os.fsdecode(name)}"
            paths.append(path)
            if child.row.is_dir:
                walk(child, path)

    walk(top, "")
    return paths, opened, listed


def guest_paths(home: Path) -> list[str]:
    out = []

    def walk(d: Path, prefix: str) -> None:
        for p in sorted(d.iterdir(), key=lambda p: os.fsencode(p.name)):
            out.append(f"{prefix}/{p.name}")
            if p.is_dir():
                walk(p, out[-1])

    walk(home, "")
    return out


def test_a_walk_opens_and_lists_from_memory_after_its_first_directory(tree):
    home, top = tree
    paths, opened, listed = find(top)
    assert paths == guest_paths(home)
    assert (opened, listed) == (1, 0), "the first opening fetches every page of the walk ahead (570 rows < AHEAD_ROWS)"


def test_fetched_ahead_in_budget_pieces_and_big_directories_in_pages(tree, monkeypatch):
    home, top = tree
    monkeypatch.setattr(archive, "AHEAD_ROWS", 40)
    monkeypatch.setattr(archive, "PAGE", 4)  # every directory holding more than 4 children needs a second page
    paths, opened, listed = find(top, batch=3)
    assert paths == guest_paths(home)
    # 120 directories' first pages, about 400 rows: fetched ahead 40 rows at a time.
    assert 1 < opened <= 30, opened
    assert listed == 7 + 90, "past their first page: home (30 children) pages 7 times by 4, each s* (5) once"


def test_another_walk_starts_again_and_still_lists_everything(tree):
    home, top = tree
    d07 = top.lookup(b"d07")
    assert find(d07)[0] == [p[len("/d07"):] for p in guest_paths(home) if p.startswith("/d07/")]
    paths, opened, _ = find(top)
    assert paths == guest_paths(home) and opened == 1


def test_a_damaged_directory_ahead_fails_only_its_own_opening(tmp_path):
    home = tmp_path / "home"
    for name in ("a", "b", "c"):
        (home / name).mkdir(parents=True)
        (home / name / "f").write_text(name)

    def forge(db):  # a name no directory may hold, in b
        (b,) = db.execute("SELECT id FROM nodes WHERE name = ?", (b"b",)).fetchone()
        db.execute("UPDATE nodes SET name = ? WHERE parent = ?", (b"x/y", b))

    st, top = backed_up(tmp_path, home, forge)
    try:
        names = [name for _, name, _ in top.listing().entries(0, 10)]  # fetches a, b (damaged), c ahead
        assert names == [b"a", b"b", b"c"]
        a, b, c = (top.lookup(name) for name in names)
        assert a.listing_cached() is not None
        assert b.listing_cached() is None
        with pytest.raises(CorruptData):
            b.listing()
        assert [n for _, n, _ in (c.listing_cached() or c.listing()).entries(0, 10)] == [b"f"]
    finally:
        st.close()
