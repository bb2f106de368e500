"""The tree model without a mount: layout, inode table, control parsing, jobs, nodes over a real store."""

from __future__ import annotations

import ast
import errno
from pathlib import Path

import pytest

from tests.fs.conftest import make_store
from vmlfs.app.session import Session
from vmlfs.engine.model import EntryConfig
from vmlfs.errors import (
    Busy,
    CorruptData,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ReadOnly,
)
from vmlfs.fs import layout
from vmlfs.fs.control import Jobs, check_partial, parse_request
from vmlfs.fs.inodes import RECENT, ROOT_INODE, InodeTable
from vmlfs.fs.layout import Kind
from vmlfs.fs.files import ControlHandle
from vmlfs.fs.state import MountState
from vmlfs.fs.tree import NODE_KINDS

FS = Path(__file__).parents[2] / "vmlfs" / "fs"
MODEL = sorted(p.name for p in FS.glob("*.py") if p.name != "fuse_adapter.py")


def test_model_modules_import_no_fuse_or_trio():
    assert "tree.py" in MODEL and "files.py" in MODEL
    for name in MODEL:
        for node in ast.walk(ast.parse((FS / name).read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] in ("pyfuse3", "trio") for m in mods), (name, mods)


def test_layout_shapes():
    assert [s.name for s in layout.root_layout()] == ["control", "entries"]
    assert [s.name for s in layout.entry_layout([])] == ["control"]
    slots = layout.entry_layout(["20240102T000000Z", "20240101T000000Z"])
    assert [s.name for s in slots] == ["20240101T000000Z", "20240102T000000Z", "control", "latest", "versions"]
    assert slots[-2].arg == "20240102T000000Z"  # latest
    assert layout.iso_ns("2024-01-01T00:00:00.5+00:00") == 1704067200_500_000_000
    assert layout.iso_ns("garbage") == 0
    assert [s.kind for s in layout.control_layout(per_entry=False)] == [Kind.PROVISION, Kind.SNAPSHOT, Kind.STATUS]


def test_every_kind_is_built_by_the_one_table():
    assert set(NODE_KINDS) == set(Kind)


def test_inode_table_numbers_ranges_and_forget():
    t = InodeTable()
    a = t.number(("entries",))
    assert a != ROOT_INODE and t.number(("entries",)) == a
    base = t.range(("archive", "e", "ts"), 100)
    assert base > a and t.range(("archive", "e", "ts"), 100) == base
    assert t.number(("other",)) >= base + 100  # ranges never overlap later numbers

    class N:
        def __init__(self, ino: int) -> None:
            self.ino = ino

    virtual = N(t.number(("info", "e", "ts")))
    assert t.remember(virtual) is virtual and t.remember(N(virtual.ino)) is virtual  # the live object wins
    t.forget(virtual.ino, 1)
    assert t.get(virtual.ino) is virtual
    t.forget(virtual.ino, 1)
    with pytest.raises(NotFound):
        t.get(virtual.ino)


def test_archive_nodes_are_not_held_for_the_kernel_but_built_again_from_their_number():
    t = InodeTable()
    base = t.range(("archive", "e", "ts"), 10 * RECENT)
    built: list[tuple] = []

    class N:
        def __init__(self, ino: int) -> None:
            self.ino = ino

    def resolve(key, number):
        built.append((key, number))
        return N(base + number)

    with pytest.raises(NotFound):  # no resolver yet: an archive number is unknown until one is set
        t.get(base + 1)
    t.resolver = resolve
    first = N(base + 1)
    assert t.remember(first) is first and t.remember(N(base + 1)) is first and t.get(base + 1) is first
    for i in range(2, 3 * RECENT):  # an ls -lR: far more lookups than the table keeps
        t.remember(N(base + i))
    assert not t._live and len(t._recent) == RECENT and not t._counts  # nothing is held for the kernel
    again = t.get(base + 1)  # long evicted: built from its tree row, by number
    assert again.ino == base + 1 and built == [(("archive", "e", "ts"), 1)]
    assert t.cached(base + 1) is again and t.get(base + 1) is again and len(built) == 1
    t.forget(base + 1, 5)  # the kernel's forgets of archive nodes change nothing
    with pytest.raises(NotFound):
        t.get(base + 10 * RECENT)  # past the range: nobody's number


@pytest.mark.parametrize("text", [b"bogus", b"full full", b"; rm -rf /", b"$(id)", b"../x", b"FULL", b"full\0", b"x" * 100])
def test_control_refuses(text):
    with pytest.raises(InvalidRequest):
        parse_request(text)
    assert InvalidRequest.errno == errno.EINVAL


def test_control_accepts_and_checks_prefixes():
    assert parse_request(b"full\n") == "full" and parse_request(b" differential ") == "differential"
    assert parse_request(b"") is None and parse_request(b"\n") is None
    check_partial(b"incr")
    with pytest.raises(InvalidRequest):
        check_partial(b"fullx")
    with pytest.raises(InvalidRequest):
        check_partial(b"ful\n")


@pytest.fixture
def state(tmp_path):
    s = make_store(tmp_path)
    s.backup()
    session = Session(str(s.store_path), shared_store=True)
    st = MountState(session.store(), Jobs(session), owner_uid=1000, owner_gid=1000)
    yield s, st
    st.close()


def walk(st: MountState, *names: str):
    node = st.root
    for name in names:
        node = node.lookup(name.encode())
    return node


def test_nodes_over_a_store(state):
    s, st = state
    ts = s.store().backups("e1")[0].timestamp
    main = walk(st, "entries", "e1", ts, "home", "src", "main.py")
    hard = walk(st, "entries", "e1", ts, "home", "data", "hardlink-to-main")
    assert main.ino == hard.ino and main.attrs().nlink == 2
    assert main.open_read().read(0, 5) == b"print"
    assert walk(st, "entries", "e1", "latest").readlink() == ts.encode()
    assert walk(st, "entries", "e1", ts, "home").attrs().ino == walk(st, "entries", "e1", ts, "home").ino
    names = [n for _, n, _ in walk(st, "entries", "e1", ts, "home").listing().entries(0, 3)]
    assert names == sorted(names) and len(names) == 3
    with pytest.raises(ReadOnly):
        main.open_write(0)
    with pytest.raises(ReadOnly):
        main.setattr(0, times=True, truncate=False, other=False)
    with pytest.raises(NotFound):
        walk(st, "entries", "e1", ts, "home", "nope")


def test_snapshot_file_protocol(state):
    s, st = state
    snap = walk(st, "entries", "e1", "control", "snapshot")
    with pytest.raises(PermissionDenied):
        snap.open_write(4242)
    handle = snap.open_write(1000)
    assert isinstance(handle, ControlHandle)
    with pytest.raises(InvalidRequest):
        handle.write(b"bogus")
    assert handle.flush() is None  # refused requests never run
    handle = snap.open_write(0)
    handle.write(b"full\n")
    work = handle.flush()
    assert work is not None and handle.flush() is None
    job = st.jobs.running("e1")
    assert job is not None and job.kind == "full"
    with pytest.raises(Busy):
        snap.open_write(1000)
    work()
    assert len(s.store().backups("e1")) == 2
    status = walk(st, "entries", "e1", "control", "status").open_read().read(0, 4096).decode()
    assert "running: none" in status and "Z full backup" in status and "Busy: entry 'e1' is already backing up" in status


def test_damaged_meta_fails_only_that_backup(state):
    s, st = state
    ts2 = s.backup()
    ts1 = s.store().backups("e1")[0].timestamp
    (s.store_path / "entries" / "e1" / "backups" / f"{ts1}.json").write_text("{")
    entry = walk(st, "entries", "e1")
    assert [n for _, n, _ in entry.listing().entries(0, 10)][:2] == [ts1.encode(), ts2.encode()]
    with pytest.raises(CorruptData):
        walk(st, "entries", "e1", ts1).lookup(b"home")
    assert walk(st, "entries", "e1", ts2, "home", "shared.txt").open_read().read(0, 100) == b"everyone\n"


def test_readahead_only_for_sequential_reads(state, monkeypatch):
    s, st = state
    ts = s.store().backups("e1")[0].timestamp
    node = walk(st, "entries", "e1", ts, "home", "data", "big.bin")
    big = node.open_read()
    started: list[int] = []
    monkeypatch.setattr(st.readahead, "submit", lambda reader, frames: started.extend(frames))
    step = 128 << 10
    big.read(0, step)  # opens the layer
    big.readahead(0, step)
    assert started == [], "a first read is not yet sequential"
    big.readahead(step, 2 * step)
    assert started, "a read continuing the previous one decompresses the next frames ahead"
    started.clear()
    big.readahead(2 * step, 3 * step)
    assert started == [], "claims are renewed once per frame"
    far = node.attrs().size - step
    other = node.open_read()
    other.read(far - 3 * step, step)
    other.readahead(far - 3 * step, far - 2 * step)
    assert started == [], "a seek (dd skip=) decompresses only what it reads; each open file is followed alone"


def test_a_forged_node_number_never_leaves_its_backups_inode_range(tmp_path):
    """A tree row whose link_group lies beyond the tree's ids (with the record rewritten to match, as an
    attacker would) is damage for that row only: it never takes another backup's or entry's inode numbers."""
    import hashlib
    import json
    import sqlite3

    s = make_store(tmp_path)
    ts = s.backup()
    s.store().add_entry(EntryConfig("other", str(s.home)))
    record_path = s.store_path / "entries" / "e1" / "backups" / f"{ts}.json"
    record = json.loads(record_path.read_text())
    tree = s.store_path / "objects" / "trees" / f"{record['manifest']['sha256']}.sqlite"
    forged = tmp_path / "forged.sqlite"
    forged.write_bytes(tree.read_bytes())
    db = sqlite3.connect(forged)
    (victim,) = db.execute("SELECT id FROM nodes WHERE name = ?", (b"run.sh",)).fetchone()
    db.execute("UPDATE nodes SET link_group = ? WHERE id = ?", (10**9, victim))
    db.commit()
    db.close()
    data = forged.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    (s.store_path / "objects" / "trees" / f"{digest}.sqlite").write_bytes(data)
    record["manifest"].update(sha256=digest, size=len(data))
    record_path.write_text(json.dumps(record))
    session = Session(str(s.store_path), shared_store=True)
    st = MountState(session.store(), Jobs(session), owner_uid=1000, owner_gid=1000)
    try:
        home = walk(st, "entries", "e1", ts, "home")
        with pytest.raises(CorruptData, match="outside the tree's ids"):
            home.lookup(b"run.sh")
        assert home.lookup(b"secret").attrs().mode & 0o777 == 0o600, "the other rows are unaffected"
        listed = [name for _, name, _ in home.listing().entries(0, 1000)]
        assert b"secret" in listed and b"run.sh" not in listed, "a listing leaves out only the damaged row"
        assert walk(st, "entries", "other").attrs().mode, "the other entry still works"
    finally:
        st.close()
