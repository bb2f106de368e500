"""An incremental backup of a local guest reads the attributes only of paths whose ctime moved:
the others come from the base row of the same ctime (docs/FORMAT.md, "Extended attributes")."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from vmlfs.archive.manifest import Manifest
from vmlfs.archive.xattr_io import encode_xattrs
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.engine import backup
from vmlfs.engine.backup import run_backup
from vmlfs.engine.guest import ScanReport, UnreadXattrs
from vmlfs.engine.model import EntryConfig
from vmlfs.engine.plan import NOTHING_SETTLED, xattrs_read_since
from vmlfs.engine.rules import Rules
from vmlfs.engine.scan_check import BadRecord, checked_late_xattrs, checked_scan

FAR_FUTURE_NS = 1 << 62  # every path's ctime is earlier: every attribute may be left unread


def test_attributes_may_be_left_unread_for_paths_settled_before_the_base() -> None:
    assert xattrs_read_since(12345, True, False) == 12345
    assert xattrs_read_since(NOTHING_SETTLED, True, False) is None, "a full backup reads them all"
    assert xattrs_read_since(12345, False, False) is None, "a base tree older than 2.1"
    assert xattrs_read_since(12345, True, True) is None, "--checksum"


def test_a_late_read_blob_is_checked_like_a_record() -> None:
    assert checked_late_xattrs(None, b"a", "guest") is None
    with pytest.raises(BadRecord, match="'a/b'.*extended attributes are malformed"):
        checked_late_xattrs(b"\xff", b"a/b", "guest")


def test_a_root_with_its_attributes_left_unread_is_refused(home: Path) -> None:
    root, *rest = LocalGuest(home).scan(Rules(), ScanReport())
    root.xattrs = UnreadXattrs(lambda path: None)
    with pytest.raises(BadRecord, match="'.'.*its attributes were left unread"):
        list(checked_scan([root, *rest], "guest"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "g"
    (home / "d").mkdir(parents=True)
    for name in ("kept", "changed", "gains", "plain"):
        (home / "d" / name).write_text(name)
    try:
        os.setxattr(home / "d" / "kept", "user.origin", b"atlas")
    except OSError as exc:
        pytest.skip(f"{tmp_path} takes no user xattrs: {exc.strerror}")
    os.setxattr(home / "d" / "changed", "user.origin", b"cms")
    os.setxattr(home / "d", "user.dir", b"on a directory")
    return home


def test_the_scan_leaves_them_unread_only_for_paths_older_than_asked(home: Path) -> None:
    guest = LocalGuest(home)
    deferred = list(guest.scan(Rules(), ScanReport(), FAR_FUTURE_NS))
    assert deferred[0].path == b"" and type(deferred[0].xattrs) is not UnreadXattrs, "the root's are always read"
    assert all(type(e.xattrs) is UnreadXattrs for e in deferred[1:])
    marker = deferred[1].xattrs
    assert isinstance(marker, UnreadXattrs)
    read = {e.path: e.xattrs for e in guest.scan(Rules(), ScanReport())}
    assert {e.path: marker.read(e.path) for e in deferred[1:]} == {p: x for p, x in read.items() if p}
    assert read[b"d/kept"] is not None and read[b"d/plain"] is None
    assert all(type(e.xattrs) is not UnreadXattrs for e in guest.scan(Rules(), ScanReport(), 0)), "all newer than 1970"


def _rows(store: LocalStore, meta) -> dict[bytes, bytes | None]:
    tree = store.open_tree(meta.manifest, "test")
    try:
        return {b"/".join(path): node.xattrs for path, node in tree.walk()}
    finally:
        tree.close()


def _listxattr_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = os.listxattr

    def counted(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(os.fsencode(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "listxattr", counted)
    return calls


def test_an_incremental_reads_the_attributes_of_changed_paths_only(tmp_path: Path, home: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "s")
    cfg = EntryConfig("e", str(home))
    store.add_entry(cfg)
    full = run_backup(store, cfg, LocalGuest(home))
    os.setxattr(home / "d" / "changed", "user.origin", b"lhcb")  # each changes the path's ctime only
    os.setxattr(home / "d" / "gains", "user.new", b"1")
    monkeypatch.setattr(backup, "settled_before", lambda started: FAR_FUTURE_NS)  # as if the base were old
    calls = _listxattr_calls(monkeypatch)
    incremental = run_backup(store, cfg, LocalGuest(home))
    assert sorted(os.path.relpath(p, os.fsencode(home.resolve())) for p in calls) == [b".", b"d/changed", b"d/gains"]
    rows = _rows(store, incremental)
    assert rows == {**_rows(store, full), b"d/changed": encode_xattrs({b"user.origin": b"lhcb"}),
                    b"d/gains": encode_xattrs({b"user.new": b"1"})}
    assert incremental.stats["xattr_files"] == 4 and incremental.stats["unchanged_files"] == 2


def test_paths_changed_near_the_base_backup_have_their_attributes_read(tmp_path: Path, home: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A ctime stamped within a clock tick of the base's read can hide a change made in that tick."""
    store = LocalStore(tmp_path / "s")
    cfg = EntryConfig("e", str(home))
    store.add_entry(cfg)
    run_backup(store, cfg, LocalGuest(home))
    calls = _listxattr_calls(monkeypatch)
    run_backup(store, cfg, LocalGuest(home))  # every path's ctime lies within RACY_CTIME_NS of the base's start
    assert len(calls) == 6


def test_a_base_tree_older_than_attributes_is_not_trusted_for_them(tmp_path: Path, home: Path) -> None:
    store = LocalStore(tmp_path / "s")
    cfg = EntryConfig("e", str(home))
    store.add_entry(cfg)
    meta = run_backup(store, cfg, LocalGuest(home))
    tree = store.open_tree(meta.manifest, "test")
    assert tree.records_xattrs
    old = tmp_path / "old.sqlite"
    shutil.copy(tree.path, old)
    tree.close()
    db = sqlite3.connect(old)
    db.execute("ALTER TABLE nodes DROP COLUMN xattrs")
    db.commit()
    db.close()
    assert not Manifest(old, "old").records_xattrs
