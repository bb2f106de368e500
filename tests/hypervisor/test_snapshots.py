"""The snapshot library against libvirt's test driver: one connection carries state across calls."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

from vmlfs.errors import HypervisorError, InvalidRequest, NotFound, VmlfsError
from vmlfs.hypervisor import (
    backup_point,
    consistent,
    create_snapshot,
    default_snapshot_name,
    delete_snapshot,
    domain_state,
    list_snapshots,
    lookup_domain,
    open_connection,
    revert_snapshot,
)


@pytest.fixture
def cvm(node_uri: str) -> Iterator[libvirt.virDomain]:
    with open_connection(node_uri) as conn:
        yield lookup_domain(conn, "cvm")


def names(dom: libvirt.virDomain) -> list[str]:
    return [s.name for s in list_snapshots(dom)]


def test_list_reads_tree_current_and_times(cvm: libvirt.virDomain) -> None:
    snaps = {s.name: s for s in list_snapshots(cvm)}
    assert list(snaps) == ["base", "child", "sibling", "grandchild"]  # oldest first
    assert snaps["base"].parent is None and snaps["base"].description == "fresh install"
    assert snaps["grandchild"].parent == "child" and snaps["grandchild"].current
    assert snaps["child"].state == "shutoff"
    assert snaps["base"].created.isoformat() == "2023-11-14T22:13:20+00:00"


def test_create_becomes_current_child_of_previous_current(cvm: libvirt.virDomain) -> None:
    made = create_snapshot(cvm, "after-update", "kernel 5.14\n<b>&amp;</b>")
    assert made.name == "after-update" and made.current
    assert made.parent == "grandchild"
    assert made.description == "kernel 5.14\n<b>&amp;</b>"  # lxml escaped it; nothing was interpreted
    default = create_snapshot(cvm)
    assert default.name.startswith("vmlfs-") and default.parent == "after-update"
    with pytest.raises(HypervisorError, match="after-update"):
        create_snapshot(cvm, "after-update")


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "-rf", "a b", "x" * 129, "é"])
def test_create_refuses_bad_names(cvm: libvirt.virDomain, bad: str) -> None:
    with pytest.raises(InvalidRequest):
        create_snapshot(cvm, bad)


def test_default_name_uses_backup_clock() -> None:
    from datetime import datetime, timezone

    assert default_snapshot_name(datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "vmlfs-20240102T030405Z"


def test_refused_flag_gives_driver_reason_in_one_line(cvm: libvirt.virDomain) -> None:
    with pytest.raises(HypervisorError) as info:
        create_snapshot(cvm, "disk", disk_only=True)
    assert "unsupported flags (0x10)" in str(info.value) and "\n" not in str(info.value)
    assert "disk" not in names(cvm)


def test_halt_flag_stops_the_domain(cvm: libvirt.virDomain) -> None:
    create_snapshot(cvm, "halted", halt=True, atomic=True, quiesce=True)
    assert domain_state(cvm) == "shut off"


def test_revert_flags(cvm: libvirt.virDomain) -> None:
    assert revert_snapshot(cvm, "base", paused=True) == "paused"
    assert [s.name for s in list_snapshots(cvm) if s.current] == ["base"]
    assert revert_snapshot(cvm, "sibling") == "running"
    assert revert_snapshot(cvm, "child") == "shut off"
    with pytest.raises(InvalidRequest, match="mutually exclusive"):
        revert_snapshot(cvm, "base", running=True, paused=True)
    with pytest.raises(NotFound, match="no-such"):
        revert_snapshot(cvm, "no-such")


def test_risky_revert_is_refused_with_the_drivers_reason(tmp_path) -> None:
    node = tmp_path / "old.xml"
    node.write_text(
        "<node><domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'><name>old</name>"
        "<memory>1048576</memory><os><type arch='x86_64'>hvm</type></os><test:domainsnapshot><name>legacy</name>"
        "<state>running</state><creationTime>1600000000</creationTime><active>0</active></test:domainsnapshot></domain></node>"
    )
    with open_connection(f"test://{node}") as conn:
        with pytest.raises(HypervisorError) as info:
            revert_snapshot(lookup_domain(conn, "old"), "legacy")
    assert "revert requires force" in str(info.value) and "\n" not in str(info.value)


class Recorder:
    """Passes every call to the real domain and records the flags of snapshot calls."""

    def __init__(self, dom: libvirt.virDomain) -> None:
        self._dom = dom
        self.flags: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self._dom, name)

    def snapshotCreateXML(self, xml: str, flags: int):  # noqa: N802  (libvirt's name)
        self.flags.append(flags)
        return self._dom.snapshotCreateXML(xml, flags & ~libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY)

    def revertToSnapshot(self, snap, flags: int):  # noqa: N802
        self.flags.append(flags)
        return self._dom.revertToSnapshot(snap, flags)


def test_options_map_to_libvirt_constants(cvm: libvirt.virDomain) -> None:
    dom = Recorder(cvm)
    create_snapshot(dom, "a", disk_only=True)
    create_snapshot(dom, "b", quiesce=True, halt=True)
    create_snapshot(dom, "c", atomic=True)
    revert_snapshot(dom, "a", running=True, force=True)
    revert_snapshot(dom, "a", paused=True)
    revert_snapshot(dom, "a")
    assert dom.flags == [
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY,
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_HALT,
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC,
        libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING | libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE,
        libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED,
        0,
    ]


def test_delete_flags(cvm: libvirt.virDomain) -> None:
    with pytest.raises(HypervisorError, match=r"unsupported flags \(0x2\)"):
        delete_snapshot(cvm, "sibling", metadata_only=True)  # the test driver has no metadata-only delete
    assert delete_snapshot(cvm, "sibling") == ["sibling"]
    assert delete_snapshot(cvm, "base", children_only=True) == ["child", "grandchild"]
    assert names(cvm) == ["base"]
    create_snapshot(cvm, "next")
    assert delete_snapshot(cvm, "base", children=True) == ["base", "next"]
    assert names(cvm) == []
    with pytest.raises(NotFound):
        delete_snapshot(cvm, "base")
    with pytest.raises(InvalidRequest, match="mutually exclusive"):
        delete_snapshot(cvm, "x", children=True, children_only=True)


def test_consistent_pause_resumes_even_when_the_body_fails(cvm: libvirt.virDomain) -> None:
    with consistent(cvm, method="pause") as how:
        assert how == "paused" and domain_state(cvm) == "paused"
    assert domain_state(cvm) == "running"
    with pytest.raises(RuntimeError, match="scan failed"):
        with consistent(cvm, method="pause"):
            assert domain_state(cvm) == "paused"
            raise RuntimeError("scan failed")
    assert domain_state(cvm) == "running"


def test_consistent_freeze_through_agent_keeps_running(cvm: libvirt.virDomain) -> None:
    with consistent(cvm) as how:
        assert how == "frozen" and domain_state(cvm) == "running"
    with consistent(cvm, method="freeze") as how:
        assert how == "frozen"


class NoAgent:
    """A domain whose guest agent never answers (as QEMU without qemu-ga)."""

    def __init__(self, dom: libvirt.virDomain) -> None:
        self._dom = dom

    def __getattr__(self, name: str):
        return getattr(self._dom, name)

    def fsFreeze(self, *args):  # noqa: N802  (libvirt's name)
        raise libvirt.libvirtError("Guest agent is not responding")


def test_consistent_auto_falls_back_to_pause_and_freeze_alone_refuses(cvm: libvirt.virDomain) -> None:
    dom = NoAgent(cvm)
    with consistent(dom) as how:
        assert how == "paused" and domain_state(cvm) == "paused"
    assert domain_state(cvm) == "running"
    with pytest.raises(HypervisorError, match="freezing"):
        with consistent(dom, method="freeze"):
            pytest.fail("body must not run without a freeze")
    assert domain_state(cvm) == "running"


def test_consistent_leaves_paused_and_inactive_domains_as_found(cvm: libvirt.virDomain) -> None:
    cvm.suspend()
    with consistent(cvm) as how:
        assert how == "already paused"
    assert domain_state(cvm) == "paused"
    cvm.destroy()
    with consistent(cvm) as how:
        assert how == "inactive"
    assert domain_state(cvm) == "shut off"
    with pytest.raises(InvalidRequest):
        with consistent(cvm, method="sleep"):  # type: ignore[arg-type]
            pass


def test_backup_point_keeps_snapshot_on_success_and_removes_it_on_failure(cvm: libvirt.virDomain) -> None:
    with backup_point(cvm, snapshot="vmlfs-20240101T000000Z", consistency="pause", description="backup") as snap:
        assert snap is not None and snap.name == "vmlfs-20240101T000000Z"
        assert domain_state(cvm) == "paused"
    assert domain_state(cvm) == "running"
    assert "vmlfs-20240101T000000Z" in names(cvm)

    with pytest.raises(VmlfsError, match="disk full"):
        with backup_point(cvm, snapshot="vmlfs-20240102T000000Z", consistency="pause"):
            assert "vmlfs-20240102T000000Z" in names(cvm)
            raise VmlfsError("disk full")
    assert "vmlfs-20240102T000000Z" not in names(cvm)
    assert domain_state(cvm) == "running"

    with backup_point(cvm) as nothing:
        assert nothing is None and domain_state(cvm) == "running"
