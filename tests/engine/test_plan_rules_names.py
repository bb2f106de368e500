"""Pure core: base selection, timestamps, change detection, rules, the name validator."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from vmlfs import names
from vmlfs.archive.manifest import Node
from vmlfs.engine.guest import ScanEntry
from vmlfs.engine.model import BackupMeta
from vmlfs.engine.plan import (
    NOTHING_SETTLED,
    RACY_CTIME_NS,
    choose_base,
    content_unchanged,
    metadata_unchanged,
    next_timestamp,
    settled_before,
    untouched,
)
from vmlfs.engine.rules import Rules
from vmlfs.errors import InvalidRequest, UnsafePath


def meta(ts: str, kind: str) -> BackupMeta:
    return BackupMeta(ts, kind, None, "", "", 0, "", None, {}, {}, {})


def test_choose_base() -> None:
    assert choose_base([], None) == ("full", None, [])
    kind, base, notes = choose_base([], "differential")
    assert (kind, base) == ("full", None) and "no full backup" in notes[0]
    history = [meta("20260101T000000Z", "full"), meta("20260102T000000Z", "incremental"), meta("20260103T000000Z", "full"),
               meta("20260104T000000Z", "incremental")]
    assert choose_base(history, None)[:2] == ("incremental", "20260104T000000Z")
    assert choose_base(history, "differential")[:2] == ("differential", "20260103T000000Z")
    assert choose_base(history, "full")[:2] == ("full", None)
    with pytest.raises(InvalidRequest):
        choose_base(history, "sometimes")


def test_next_timestamp_is_strictly_increasing() -> None:
    now = datetime(2026, 5, 1, 12, 0, 0, 500, tzinfo=timezone.utc)
    assert next_timestamp([], now) == "20260501T120000Z"
    assert next_timestamp(["20260501T120000Z"], now) == "20260501T120001Z"
    assert next_timestamp(["20260501T120005Z"], now) == "20260501T120006Z"


def test_a_backup_name_is_parsed_once_however_often_it_is_met(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []

    class Counting(datetime):
        def __new__(cls, *fields: int, **kwargs: object) -> datetime:  # type: ignore[misc]
            if len(fields) == 6:  # a moment built from a name's digits (now() passes microseconds too)
                parsed.append("%04d%02d%02dT%02d%02d%02dZ" % fields)
            return datetime(*fields, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(names, "datetime", Counting)
    names._parsed.cache_clear()
    stamps = ["20260501T120000Z", "20260502T120000Z"]
    for _ in range(5):
        assert next_timestamp(stamps, datetime(2026, 5, 3, tzinfo=timezone.utc)) == "20260503T000000Z"
        assert [names.backup_name_problem(ts) for ts in stamps] == [None, None]
    assert sorted(parsed) == stamps
    with pytest.raises(InvalidRequest, match="invalid backup timestamp"):
        names.timestamp("20261399T999999Z")  # a malformed one is refused every time, never remembered
    with pytest.raises(InvalidRequest):
        names.timestamp("20261399T999999Z")


SETTLED = 100  # every ctime below is older than the base's start


def test_content_unchanged_trusts_size_mtime_ctime_settled_before_the_base() -> None:
    e = ScanEntry(b"a", "f", 0o644, 0, 0, "", "", 10, 5, 7)
    base = Node(2, 1, b"a", "f", 0o600, 0, 0, "", "", 10, 5, 7).as_row()
    assert content_unchanged(e, base, SETTLED)
    assert not content_unchanged(e, None, SETTLED)
    for change in ({"size": 11}, {"mtime_ns": 6}, {"ctime_ns": 8}):
        assert not content_unchanged(replace(e, **change), base, SETTLED)
    assert not content_unchanged(e, base, 7), "changed in the tick in which the base may have read it"


def test_settled_before_is_two_seconds_before_the_base_started() -> None:
    assert settled_before("2026-12-01T10:00:00.250+00:00") == 1796119200_250_000_000 - RACY_CTIME_NS
    assert settled_before("2026-12-01T10:00:00.250") == settled_before("2026-12-01T10:00:00.250+00:00"), "UTC"
    assert settled_before("yesterday") == NOTHING_SETTLED, "a start that cannot be read trusts no row"


def test_untouched_is_metadata_and_content_unchanged_without_links() -> None:
    """One rule decides whether a base row survives as it is; each field it records counts."""
    e = ScanEntry(b"a", "f", 0o644, 1, 2, "u", "g", 10, 5, 7)
    row = Node(2, 1, b"a", "f", 0o644, 1, 2, "u", "g", 10, 5, 7).as_row()
    assert metadata_unchanged(e, row) and untouched(e, row, False, SETTLED)
    assert not untouched(e, row, True, SETTLED)
    assert not untouched(e, row, False, 7)
    for change in ({"mode": 0o600}, {"uid": 9}, {"gid": 9}, {"uname": "x"}, {"gname": "x"}, {"mtime_ns": 6},
                   {"size": 11}, {"ctime_ns": 8}, {"nlink": 2}):
        assert not untouched(replace(e, **change), row, False, SETTLED), change
    linked = Node(2, 1, b"a", "f", 0o644, 1, 2, "u", "g", 10, 5, 7, link_group=2).as_row()
    assert not untouched(e, linked, False, SETTLED)
    d = ScanEntry(b"d", "d", 0o755, 1, 2, "u", "g", 0, 5, 7)
    dir_row = Node(3, 1, b"d", "d", 0o755, 1, 2, "u", "g", 4096, 5, 99).as_row()
    assert untouched(d, dir_row, False, SETTLED) and untouched(d, dir_row, False, 0), "a directory has no bytes"


def test_rules_are_gitignore_style() -> None:
    rules = Rules(include=("keep.root",), exclude=("*.root", "build/", "/top-only"))
    assert rules.excluded(b"data/x.root", False)
    assert not rules.excluded(b"data/keep.root", False)
    assert rules.excluded(b"sub/build", True)
    assert not rules.excluded(b"sub/build", False), "build/ matches directories only"
    assert rules.excluded(b"top-only", False) and not rules.excluded(b"a/top-only", False)
    assert not Rules().excluded(b"anything", False)
    assert Rules(exclude=("caf\udcffe",)).excluded(b"caf\xffe", False), "non-UTF-8 names match bytewise"


@pytest.mark.parametrize("bad", [b"/etc/passwd", b"//x", b"C:\\x", b"../x", b"a/../../x", b"a\\..\\x", b"a\0b", b"x" * 5000])
def test_relative_path_refuses_traversal(bad: bytes) -> None:
    with pytest.raises(UnsafePath):
        names.relative_path(bad)


def test_relative_path_accepts_plain_paths() -> None:
    assert names.relative_path(b"a/./b//c") == (b"a", b"b", b"c")
    assert names.relative_path(b"") == ()
    assert names.relative_path(b'win:*?"<>|name') == (b'win:*?"<>|name',)


@pytest.mark.parametrize("bad", [b"", b".", b"..", b"a/b", b"a\0", b"x" * 256])
def test_component_refuses(bad: bytes) -> None:
    with pytest.raises(UnsafePath):
        names.component(bad)


@pytest.mark.parametrize("bad", ["..", "a/b", "", "\x01ctl", "20261301T000000Z", "2026-01-01"])
def test_timestamps_and_entry_names(bad: str) -> None:
    with pytest.raises(InvalidRequest):
        names.timestamp(bad)
    if bad not in ("20261301T000000Z",):
        with pytest.raises(InvalidRequest):
            names.entry_name(bad if bad != "2026-01-01" else "bad name")
