"""A backup that appears (through control/snapshot, or from another process) shows in the mount at once:
the entry directory and /entries take its time, latest points at it, and the kernel's cached entries
are dropped (the mount's log says so)."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.fs.conftest import make_store, needs_fuse
from tests.provision.test_mount_vm import wait_status
from vmlfs.fs.layout import iso_ns


def completed_ns(entry, ts: str) -> int:
    return iso_ns(json.loads((entry / ts / "info.json").read_text())["completed"])


def wait_log(log, text: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while text not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    return text in log.read_text()


@pytest.fixture
def mounted(tmp_path, mount_factory):
    """A store with one backup of entry e1, mounted: (store setup, that backup, the mount, the entry's directory)."""
    s = make_store(tmp_path, big_mib=1)
    first = s.backup()
    m = mount_factory(s.store_path)
    return s, first, m, m.entry()


@needs_fuse
def test_a_backup_through_the_mount_shows_at_once(mounted) -> None:
    s, first, m, entry = mounted
    assert os.stat(entry).st_mtime_ns == completed_ns(entry, first) == os.stat(m.path / "entries").st_mtime_ns
    assert os.readlink(entry / "latest") == first and first in os.listdir(entry)

    (s.home / "new.txt").write_text("after the first backup\n")
    os.utime(entry / "control" / "snapshot")
    wait_status(entry / "control" / "status", "backup: ", timeout=60)
    (new,) = {n for n in os.listdir(entry) if n[:1].isdigit()} - {first}
    assert os.readlink(entry / "latest") == new
    assert (entry / "latest" / "home" / "new.txt").read_text() == "after the first backup\n"
    assert os.stat(entry).st_mtime_ns == completed_ns(entry, new) == os.stat(m.path / "entries").st_mtime_ns
    assert wait_log(m.log, "entry e1 changed (0 vanished)")


@needs_fuse
def test_a_backup_or_forget_by_another_process_is_noticed_at_the_next_listing(mounted) -> None:
    s, first, m, entry = mounted
    os.listdir(entry)
    second = s.backup()
    time.sleep(1.1)  # the entry directory's own cache time (SHORT), as a file manager's refresh would come later
    assert second in os.listdir(entry) and os.readlink(entry / "latest") == second
    assert os.stat(entry).st_mtime_ns == completed_ns(entry, second)
    assert wait_log(m.log, "entry e1 changed (0 vanished)")
    m.vmlfs("forget", f"e1@{second}")
    time.sleep(1.1)
    assert second not in os.listdir(entry) and os.readlink(entry / "latest") == first
    assert wait_log(m.log, "entry e1 changed (1 vanished)")


@needs_fuse
def test_a_backup_committed_a_moment_ago_is_found_by_name_at_once(mounted) -> None:
    """A lookup answers from the mount's listing while it is under a second old, but a name that
    listing lacks is looked for in a fresh one: a new backup's directory opens at once by name."""
    s, first, m, entry = mounted
    assert (entry / first / "home").is_dir() and os.readlink(entry / "latest") == first  # the entry just listed
    second = s.backup()
    assert (entry / second / "home").is_dir(), "found by name within the second the old listing is kept"
