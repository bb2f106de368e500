"""Manifests: indexed queries, bounded memory, and refusal of damaged or foreign files."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from vmlfs.archive.manifest import ROOT_ID, Manifest, Node
from vmlfs.archive.manifest_writer import ManifestWriter
from vmlfs.errors import CorruptData, NotFound, UnsupportedVersion

TS = "20260101T000000Z"


def node(w: ManifestWriter, parent: int, name: bytes, kind: str = "f", size: int = 0) -> Node:
    n = Node(id=w.allocate_id(), parent=parent, name=name, type=kind, mode=0o644, uid=0, gid=0, uname="root",
             gname="root", size=size, mtime_ns=1, sha256=hashlib.sha256(b"").digest() if kind == "f" else None,
             layer=TS if size else None, data_offset=512 if size else None)
    w.add(n)
    return n


def small_manifest(path: Path) -> None:
    w = ManifestWriter(path)
    root = node(w, 0, b"", "d")
    sub = node(w, root.id, b"sub", "d")
    node(w, sub.id, b"b.txt", size=10)
    node(w, sub.id, b"a.txt")
    link = Node(id=w.allocate_id(), parent=root.id, name=b"ln", type="l", mode=0o777, uid=0, gid=0, uname="", gname="",
                size=0, mtime_ns=1, target=b"sub")
    w.add(link)
    w.close()


def test_lookup_and_listing(tmp_path: Path) -> None:
    small_manifest(tmp_path / "m.sqlite")
    m = Manifest(tmp_path / "m.sqlite", "t")
    assert [c.name for c in m.children(ROOT_ID)] == [b"ln", b"sub"]
    assert [c.name for c in m.children(m.lookup(b"sub").id)] == [b"a.txt", b"b.txt"]
    assert m.lookup(b"sub/b.txt").size == 10
    assert m.lookup(b"./sub//b.txt").size == 10
    with pytest.raises(NotFound):
        m.lookup(b"ln/b.txt")  # symlinks are never followed
    with pytest.raises(NotFound):
        m.lookup(b"sub/zzz")
    assert [p for p, _ in m.walk()] == [(), (b"ln",), (b"sub",), (b"sub", b"a.txt"), (b"sub", b"b.txt")]
    assert [n.name for n in m.files_in_layer_order()] == [b"b.txt"]


def test_every_kind_of_row_reads_back_as_written(tmp_path: Path) -> None:
    """add() writes the common stored file without its NULL columns, anything else whole: both read back alike."""
    w = ManifestWriter(tmp_path / "m.sqlite")
    sha = hashlib.sha256(b"x").digest()
    rows = [
        Node(1, 0, b"", "d", 0o755, 0, 0, "root", "root", 0, 5),
        Node(2, 1, b"stored", "f", 0o644, 1000, 100, "u", "g", 10, 7, 8, sha256=sha, layer=TS, data_offset=1536),
        Node(3, 1, b"empty", "f", 0o600, 0, 0, "", "", 0, 7, 9, sha256=hashlib.sha256(b"").digest()),
        Node(4, 1, b"linked", "f", 0o644, 0, 0, "root", "root", 10, 7, 8, link_group=4, nlink=2, sha256=sha,
             layer=TS, data_offset=1536),
        Node(5, 1, b"attrs\xff", "f", 0o644, 0, 0, "root", "root", 10, 7, 8, sha256=sha, layer="a" * 64,
             data_offset=0, xattrs=b"\x06\x01\x00\x00\x00user.kv"),
        Node(6, 1, b"ln", "l", 0o777, 0, 0, "root", "root", 0, 7, 8, target=b"stored"),
    ]
    for n in rows:
        w.add(n)
    w.close()
    m = Manifest(tmp_path / "m.sqlite", "t")
    assert [m.get(n.id).as_row() for n in rows] == [n.as_row() for n in rows]
    assert all(type(m.get(n.id).name) is bytes for n in rows)


def test_damaged_manifests_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorruptData):
        Manifest(bad, "t")
    with pytest.raises(CorruptData, match="missing"):
        Manifest(tmp_path / "absent.sqlite", "t")
    future = tmp_path / "future.sqlite"
    small_manifest(future)
    db = sqlite3.connect(future)
    db.execute("UPDATE format SET value = '3.0' WHERE key = 'version'")
    db.commit()
    db.close()
    with pytest.raises(UnsupportedVersion):
        Manifest(future, "t")


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE nodes SET name = X'2e2e' WHERE name = X'737562'",  # '..'
        "UPDATE nodes SET name = X'612f62' WHERE name = X'737562'",  # 'a/b'
        "UPDATE nodes SET name = X'' WHERE name = X'737562'",
        "UPDATE nodes SET layer = '../../x' WHERE size = 10",
        "UPDATE nodes SET sha256 = X'00' WHERE size = 10",
    ],
)
def test_malicious_rows_are_corrupt_data(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "m.sqlite"
    small_manifest(path)
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()
    m = Manifest(path, "t")
    with pytest.raises(CorruptData):
        list(m.walk())


def test_non_utf8_owner_text_is_corrupt_data(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    small_manifest(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA ignore_check_constraints = 1")
    db.execute("UPDATE nodes SET uname = CAST(X'ff' AS TEXT) WHERE size = 10")
    db.commit()
    db.close()
    with pytest.raises(CorruptData):
        Manifest(path, "t").lookup(b"sub/b.txt")


BIG = r"""
import hashlib, sys, time
from vmlfs.archive.manifest import Manifest, Node
from vmlfs.archive.manifest_writer import ManifestWriter
path = sys.argv[1]
if sys.argv[2] == "write":
    w = ManifestWriter(path)
    digest = hashlib.sha256(b"x").digest()
    def add(parent, name, kind):
        n = Node(w.allocate_id(), parent, name, kind, 0o644, 0, 0, "u", "g", 1 if kind == "f" else 0, 1,
                 sha256=digest if kind == "f" else None, layer="20260101T000000Z" if kind == "f" else None,
                 data_offset=0 if kind == "f" else None)
        w.add(n)
        return n.id
    root = add(0, b"", "d")
    big = add(root, b"big", "d")
    for i in range(10_000):
        add(big, b"f%05d" % i, "f")
    for d in range(99):
        sub = add(root, b"d%02d" % d, "d")
        for i in range(9_999):
            add(sub, b"g%04d" % i, "f")
    w.close()
else:
    m = Manifest(path, "big")
    t = time.time()
    assert m.lookup(b"d42/g0999").size == 1
    listing = m.children(m.lookup(b"big").id)
    assert len(listing) == 10_000
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it would count the (large) test process that forked us
    hwm = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
    print(m.count(), hwm // 1024, time.time() - t)
"""


@pytest.mark.slow
def test_million_entry_manifest_lookup_and_listing_stay_under_200_mb(tmp_path: Path) -> None:
    path = str(tmp_path / "big.sqlite")
    subprocess.run([sys.executable, "-c", BIG, path, "write"], check=True, timeout=300)
    out = subprocess.run([sys.executable, "-c", BIG, path, "read"], check=True, capture_output=True, text=True).stdout
    count, rss_mib, seconds = out.split()
    assert int(count) >= 1_000_000
    assert int(rss_mib) < 200, f"reader RSS {rss_mib} MiB"
    assert float(seconds) < 5
