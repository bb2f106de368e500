"""``vmlfs backup --vm-snapshot [--consistent]`` against libvirt's test driver, in-process.

``test:///default`` shares one state between the connections of a process,
while one stays open, so the guest wrapper below can look at the domain (through its own
connection) at the moment the engine scans: that is how "paused for the
scan, running afterwards, also when the backup fails" is observed.
"""

from __future__ import annotations

import json
from pathlib import Path

import libvirt
import pytest
from click.testing import CliRunner

import vmlfs.app.backups as backups_app
from vmlfs.backends.connect import open_guest
from vmlfs.cli.main import cli
from vmlfs.errors import GuestError
from vmlfs.hypervisor import (
    domain_state,
    list_snapshots,
    lookup_domain,
    open_connection,
)

URI = "test:///default"


class Watched:
    """A guest that records what the domain looked like when the scan ran; optionally fails there."""

    def __init__(self, inner, seen: list[str], fail: bool) -> None:
        self.inner, self.seen, self.fail = inner, seen, fail
        self.description = inner.description

    def scan(self, rules, report, xattrs_since=None):
        with open_connection(URI) as conn:
            dom = lookup_domain(conn, "test")
            state = domain_state(dom)
            if state == "running" and dom.fsFreeze(None, 0) == 0:  # 0: no file system newly frozen
                state = "frozen"
            elif state == "running":
                dom.fsThaw(None, 0)
            self.seen.append(state)
        if self.fail:
            raise GuestError("the guest went away mid-scan")
        return self.inner.scan(rules, report, xattrs_since)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(autouse=True)
def driver_state():
    """The test driver forgets ``test:///default``'s state when its last connection closes: keep one open."""
    with open_connection(URI) as conn:
        yield conn


@pytest.fixture
def store(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "d").mkdir(parents=True)
    (home / "d" / "f").write_text("x")
    store = tmp_path / "store"
    run(store, "entry", "add", "e1", "--guest", str(home), "--domain", "test")
    return store


def run(store: Path, *args: str, code: int = 0):
    result = CliRunner().invoke(cli, ["--store", str(store), *args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def backup(store: Path, monkeypatch, *flags: str, fail: bool = False, code: int = 0) -> tuple[list[str], object]:
    seen: list[str] = []
    monkeypatch.setattr(backups_app, "open_guest", lambda *a, **kw: Watched(open_guest(*a, **kw), seen, fail))
    return seen, run(store, "backup", "e1", "--libvirt-uri", URI, *flags, code=code)


def snapshots() -> list[str]:
    with open_connection(URI) as conn:
        return [s.name for s in list_snapshots(lookup_domain(conn, "test"))]


def state() -> str:
    with open_connection(URI) as conn:
        return domain_state(lookup_domain(conn, "test"))


def test_vm_snapshot_recorded_and_domain_paused_for_the_scan(store: Path, monkeypatch) -> None:
    def no_agent(self, *args):
        raise libvirt.libvirtError("guest agent is not responding")

    monkeypatch.setattr(libvirt.virDomain, "fsFreeze", no_agent)  # a CernVM without qemu-guest-agent
    seen, _ = backup(store, monkeypatch, "--vm-snapshot", "--consistent")
    monkeypatch.undo()
    assert seen == ["paused"] and state() == "running"
    (record,) = (store / "entries" / "e1" / "backups").iterdir()
    meta = json.loads(record.read_text())
    ts = meta["timestamp"]
    assert meta["vm_snapshot"] == f"vmlfs-{ts}" and f"vmlfs-{ts}" in snapshots()
    assert run(store, "list", "e1").output.rstrip().endswith(f"vm:vmlfs-{ts}")


def test_consistent_freezes_where_the_agent_answers(store: Path, monkeypatch) -> None:
    seen, result = backup(store, monkeypatch, "--consistent")
    assert seen == ["frozen"] and state() == "running"
    assert "VM snapshot" not in result.output
    with open_connection(URI) as conn:  # thawed afterwards: freezing again freezes file systems anew
        dom = lookup_domain(conn, "test")
        assert dom.fsFreeze(None, 0) > 0
        dom.fsThaw(None, 0)


def test_failed_backup_resumes_and_drops_its_snapshot(store: Path, monkeypatch) -> None:
    monkeypatch.setattr(libvirt.virDomain, "fsFreeze", lambda self, *a: (_ for _ in ()).throw(libvirt.libvirtError("no agent")))
    before = snapshots()
    seen, result = backup(store, monkeypatch, "--vm-snapshot", "--consistent", fail=True, code=1)
    monkeypatch.undo()
    assert isinstance(result.exception, GuestError)
    assert seen == ["paused"] and state() == "running"
    assert snapshots() == before
    assert not (store / "entries" / "e1" / "backups").exists() or not list((store / "entries" / "e1" / "backups").iterdir())


def test_vm_snapshot_needs_a_domain(tmp_path: Path, monkeypatch) -> None:
    run(tmp_path / "s", "entry", "add", "plain", "--guest", str(tmp_path))
    result = run(tmp_path / "s", "backup", "plain", "--vm-snapshot", "--libvirt-uri", URI, code=1)
    assert "names no libvirt domain" in str(result.exception)
