"""The local guest's bulk reads: small files whole, read ahead (by threads, or advised) only when the page cache misses."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from vmlfs.backends import local_reads
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.engine.guest import FileChanged, ScanEntry, ScanReport
from vmlfs.engine.rules import Rules


def _guest(tmp_path: Path, files: int) -> tuple[LocalGuest, list[ScanEntry], dict[bytes, bytes]]:
    home = tmp_path / "g"
    home.mkdir()
    contents = {}
    for i in range(files):
        name = b"f%04d" % i
        contents[name] = os.urandom(i % 300) + name  # no two alike, some large: not read whole
        (home / name.decode()).write_bytes(contents[name] * (4000 if i % 97 == 1 else 1))
    guest = LocalGuest(home)
    entries = [e for e in guest.scan(Rules(), ScanReport()) if e.type == "f"]
    return guest, entries, {e.path: (home / e.path.decode()).read_bytes() for e in entries}


def _read_all(guest: LocalGuest, entries: list[ScanEntry]) -> tuple[list[tuple[bytes, bytes | str]], set[str]]:
    """(path, content or the FileChanged message) in the order read_many hands them out, and the
    threads that opened the files."""
    openers = set()
    real_open = guest._open

    def recording_open(entry: ScanEntry) -> int:
        openers.add(threading.current_thread().name)
        return real_open(entry)

    guest._open = recording_open  # type: ignore[method-assign]
    out: list[tuple[bytes, bytes | str]] = []
    for entry, chunks in guest.read_many(entries):
        try:
            out.append((entry.path, b"".join(chunks)))
        except FileChanged as exc:
            out.append((entry.path, str(exc)))
    return out, openers


@pytest.mark.parametrize("cached", [True, False])
def test_a_batch_comes_whole_and_in_order_whether_or_not_threads_read_ahead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool) -> None:
    guest, entries, contents = _guest(tmp_path, 700)
    assert any(e.size > local_reads.SMALL_READ for e in entries)
    monkeypatch.setattr(local_reads.SmallReads, "_cached", lambda self, fd: cached)
    out, openers = _read_all(guest, entries)
    assert out == [(e.path, contents[e.path]) for e in entries]
    if cached:
        assert openers == {threading.current_thread().name}, "a warm cache is read without threads"
    else:
        assert "guest-read" in openers, "a cold cache is read ahead"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("readers", [True, False])
def test_files_changed_after_the_scan_are_reported_when_read_ahead_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readers: bool) -> None:
    guest, entries, contents = _guest(tmp_path, 400)
    monkeypatch.setattr(local_reads.SmallReads, "_cached", lambda self, fd: False)
    monkeypatch.setattr(guest._read_ahead, "readers", lambda: readers)
    home = Path(os.fsdecode(guest.home))
    (home / "f0300").write_bytes(b"grown" + contents[b"f0300"])
    (home / "f0301").unlink()
    out = dict(_read_all(guest, entries)[0])
    assert out[b"f0300"] == "f0300: changed while it was read"
    assert out[b"f0301"] == "f0301: cannot open (No such file or directory)"
    assert sum(isinstance(v, bytes) for v in out.values()) == 398


def test_a_batch_read_advised_stops_early_and_leaves_no_file_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer that stops taking (a failed backup) closes the batch: the files opened ahead are closed."""
    guest, entries, contents = _guest(tmp_path, 400)
    monkeypatch.setattr(local_reads.SmallReads, "_cached", lambda self, fd: False)
    monkeypatch.setattr(guest._read_ahead, "readers", lambda: False)
    before = _open_fds()
    reads = guest.read_many(entries)
    for _ in range(100):
        next(reads)
    assert _open_fds() >= before + local_reads.ADVISED, "files are open ahead of the one taken"
    reads.close()
    assert _open_fds() == before


def test_the_choice_tries_both_ways_then_keeps_the_faster_and_now_and_then_the_other() -> None:
    choice = local_reads.ReadAheadChoice()
    assert choice.readers() is True, "the first cold batch: with readers"
    choice.record(True, 3.0, 1000)
    assert choice.readers() is False, "the second: without"
    choice.record(False, 1.0, 1000)
    every = local_reads.RETRY_EVERY
    ways = [choice.readers() for _ in range(every + 2 * every + 4 * every)]
    retries = [i + 1 for i, way in enumerate(ways) if way]
    assert retries == [every, 3 * every, 7 * every], "inline was faster; readers retried, less often each time"
    choice.record(True, 0.5, 1000)  # the retry found readers faster now
    assert choice.per_file(True) == 0.0005
    ways = [choice.readers() for _ in range(every)]
    assert ways == [True] * (every - 1) + [False], "the new choice stands, the other way retried soon again"
    choice.record(False, 0.1, local_reads.MIN_SAMPLE - 1)
    assert choice.per_file(False) == 0.001, "a short cold part measures nothing"


def test_retries_of_the_slower_way_become_rare_but_never_stop() -> None:
    choice = local_reads.ReadAheadChoice()
    choice.record(True, 3.0, 1000)
    choice.record(False, 1.0, 1000)
    ways = [choice.readers() for _ in range(10_000)]
    retries = [i for i, way in enumerate(ways) if way]
    gaps = [b - a for a, b in zip(retries, retries[1:])]
    assert len(retries) < 100 and gaps == sorted(gaps) and gaps[-1] == local_reads.MAX_RETRY_EVERY
    assert ways[-local_reads.MAX_RETRY_EVERY:].count(True) == 1, "at the longest interval, still retried"


def test_a_guest_whose_disk_readers_do_not_speed_up_reads_a_cold_batch_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guest, entries, contents = _guest(tmp_path, 700)
    monkeypatch.setattr(local_reads.SmallReads, "_cached", lambda self, fd: False)
    guest._read_ahead.record(True, 10.0, 1000)
    guest._read_ahead.record(False, 1.0, 1000)
    advised = []
    monkeypatch.setattr(local_reads.os, "posix_fadvise", lambda fd, offset, length, advice: advised.append(advice))
    before = _open_fds()
    out, openers = _read_all(guest, entries)
    assert out == [(e.path, contents[e.path]) for e in entries]
    assert openers == {threading.current_thread().name}, "read inline: readers were measured slower"
    assert guest._read_ahead.per_file(False) < 0.001, "and this batch's cold part was measured"
    small = [e for e in entries if 0 < e.size <= local_reads.SMALL_READ]
    assert set(advised) == {os.POSIX_FADV_WILLNEED} and len(small) - 16 <= len(advised) < len(small), \
        "each small file after the batch turned cold was advised before it was read"
    assert _open_fds() == before
