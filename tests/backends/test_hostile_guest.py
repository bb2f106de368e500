"""A broken or hostile guest: every record is checked before it enters a tree (vmlfs/engine/scan_check.py).

Each bad record refuses the backup with one error naming the path, and
nothing is committed; a property test throws random record streams at the
agent's wire format and checks that outcome or an exact tree, never
anything in between and never another exception.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backends.hostile_agent import Rec, ScriptedRunner, listing
from vmlfs.backends.local_store import LocalStore
from vmlfs.backends.ssh_guest import SshGuest
from vmlfs.engine.backup import run_backup
from vmlfs.engine.guest import ScanEntry
from vmlfs.engine.model import EntryConfig
from vmlfs.engine.scan_check import BadRecord, checked_scan
from vmlfs.errors import GuestError

ROOT = Rec(b"")


def attr(name: bytes, value: bytes = b"") -> bytes:
    return struct.pack("<BI", len(name), len(value)) + name + value


def backup_from(tmp_path: Path, records: list[Rec] | bytes):
    store = LocalStore(tmp_path / "s")
    if "e" not in store.entry_names():
        store.add_entry(EntryConfig("e", "ssh://hostile"))
    scan = records if isinstance(records, bytes) else listing(records)
    return store, lambda: run_backup(store, EntryConfig("e", "ssh://hostile"), SshGuest(ScriptedRunner(scan), ""))


@pytest.mark.parametrize("records, named", [
    ([ROOT, Rec(b"..")], ".."),
    ([ROOT, Rec(b".")], "."),
    ([ROOT, Rec(b"a\0b", b"f")], "a\\x00b"),
    ([ROOT, Rec(b"x" * 256, b"f")], "xxxx"),
    ([ROOT, Rec(b"a"), Rec(b"a/../../etc")], "a/../../etc"),
    ([ROOT, Rec(b"a//b")], "a//b"),
    ([ROOT, Rec(b"a", b"f"), Rec(b"a", b"f")], "a"),  # duplicate
    ([ROOT, Rec(b"a"), Rec(b"")], "."),  # a second root
    ([Rec(b"a"), ROOT], "a"),  # no root first
    ([ROOT, Rec(b"a/b", b"f"), Rec(b"a")], "a/b"),  # child before parent
    ([ROOT, Rec(b"a", b"f"), Rec(b"a/b", b"f")], "a/b"),  # child of a file
    ([ROOT, Rec(b"b"), Rec(b"a")], "a"),  # siblings out of order
    ([ROOT, Rec(b"a"), Rec(b"b"), Rec(b"a/c")], "a/c"),  # back into a directory already left
    ([ROOT, Rec(b"l", b"l", target=b"")], "l"),
    ([ROOT, Rec(b"l", b"l", target=b"a\0b")], "l"),
    ([ROOT, Rec(b"d", size=5)], "d"),
    ([ROOT, Rec(b"f", b"f", mode=0o170777)], "f"),
    ([ROOT, Rec(b"f", b"f", nlink=0)], "f"),
    ([ROOT, Rec(b"f", b"f", size=1 << 63)], "f"),
    ([Rec(b"", b"f")], "."),
    ([ROOT, Rec(b"f", b"f", xattrs=attr(b"trusted.overlay.opaque", b"y"))], "f"),  # not a kept attribute
    ([ROOT, Rec(b"f", b"f", xattrs=attr(b"user.a\0b"))], "f"),
    ([ROOT, Rec(b"f", b"f", xattrs=attr(b"user.a", b"x" * 65537))], "f"),  # over Linux's value limit
    ([ROOT, Rec(b"f", b"f", xattrs=attr(b"user.b") + attr(b"user.a"))], "f"),  # not canonical
    ([ROOT, Rec(b"f", b"f", xattrs=attr(b"user.a")[:-1])], "f"),  # truncated
])
def test_bad_records_refuse_the_backup_naming_the_path(tmp_path: Path, records: list[Rec], named: str) -> None:
    store, backup = backup_from(tmp_path, records)
    with pytest.raises(BadRecord, match="invalid record for '" + named.replace("\\", "\\\\")[:4]) as caught:
        backup()
    assert "nothing was committed" in str(caught.value)
    assert store.backups("e") == [] and list((tmp_path / "s" / "entries" / "e" / "backups").iterdir()) == []


@pytest.mark.parametrize("stream", [
    listing([ROOT])[:-1] + b"q",  # an unknown record type
    listing([ROOT, Rec(b"a")])[:-1][:-3],  # ends inside a record
    listing([ROOT])[:-1],  # ends without its end mark
    listing([]),  # no root at all
    listing([ROOT])[:-1] + b"X" + struct.pack("<I", 1 << 30),  # a gigabyte of attributes announced
])
def test_malformed_streams_are_guest_errors(tmp_path: Path, stream: bytes) -> None:
    store, backup = backup_from(tmp_path, stream)
    with pytest.raises(GuestError):
        backup()
    assert store.backups("e") == []


def entry(path: bytes, kind: str = "f", **fields) -> ScanEntry:
    return ScanEntry(**{"path": path, "type": kind, "mode": 0o644, "uid": 0, "gid": 0, "uname": "u", "gname": "g",
                        "size": 0, "mtime_ns": 0, "ctime_ns": 0, **fields})


@pytest.mark.parametrize("bad", [
    entry(b"x", size=-1), entry(b"x", kind="p"), entry(b"x", uid=-1), entry(b"x", gid=(1 << 32) - 1),
    entry(b"x", uname="\udcff"),
    entry(b"x", target=b"y"), entry(b"x", mtime_ns=1 << 63), entry(b"x", mode=-1),
])
def test_fields_no_scan_can_produce_are_refused(bad: ScanEntry) -> None:
    """Any Guest, not only SSH: the same check runs on the local scan's records."""
    with pytest.raises(BadRecord, match="'x'"):
        list(checked_scan([entry(b"", "d"), bad], "g"))


def test_a_valid_stream_is_committed_exactly(tmp_path: Path) -> None:
    records = [ROOT, Rec(b"a"), Rec(b"a/b\\c", b"f", size=3), Rec(b"a/l", b"l", target=b"../x"), Rec(b"z", b"f")]
    store, backup = backup_from(tmp_path, records)
    meta = backup()
    manifest = store.open_manifest("e", meta.timestamp)
    assert [b"/".join(p) for p, _ in manifest.walk()] == [r.path for r in records]


NAMES = st.sampled_from([b"a", b"b", b"c", b".", b"..", b"", b"a\0", b"a/..", b"x" * 256, b"\xff\xfe", b"a\\..\\b"])
RECORDS = st.builds(
    Rec,
    path=st.lists(NAMES, min_size=0, max_size=4).map(b"/".join),
    kind=st.sampled_from([b"d", b"f", b"l"]),
    size=st.sampled_from([0, 1, 7]),
    target=st.sampled_from([b"", b"t", b"/etc/passwd", b"a\0b"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(RECORDS, max_size=8), st.booleans())
def test_any_record_stream_commits_exactly_or_nothing(tmp_path_factory, records: list[Rec], with_root: bool) -> None:
    tmp_path = tmp_path_factory.mktemp("h")
    if with_root:
        records = [ROOT, *records]
    store, backup = backup_from(tmp_path, records)
    try:
        meta = backup()
    except GuestError:
        assert store.backups("e") == []
        return
    manifest = store.open_manifest("e", meta.timestamp)
    walked = [(b"/".join(p), n.type) for p, n in manifest.walk()]
    assert walked == [(r.path, r.kind.decode()) for r in records]
