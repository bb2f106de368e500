"""Snapshots and consistent backup points on a real libvirtd running QEMU (KVM or TCG)."""

from __future__ import annotations

import pytest

from tests.conftest import Vmlfs
from vmlfs.errors import HypervisorError
from vmlfs.hypervisor import (
    backup_point,
    consistent,
    create_snapshot,
    delete_snapshot,
    domain_state,
    list_snapshots,
    lookup_domain,
    open_connection,
    revert_snapshot,
)

pytestmark = [pytest.mark.libvirtd, pytest.mark.slow]


def test_snapshot_list_revert_delete(qemu_domain: tuple[str, str]) -> None:
    uri, name = qemu_domain
    with open_connection(uri) as conn:
        dom = lookup_domain(conn, name)
        first = create_snapshot(dom, "first", "empty disk")
        second = create_snapshot(dom, "second")
        assert (first.state, second.parent, second.current) == ("running", "first", True)
        assert [(s.name, s.parent, s.current) for s in list_snapshots(dom)] == [("first", None, False), ("second", "first", True)]

        assert revert_snapshot(dom, "first") == "running"
        assert [s.name for s in list_snapshots(dom) if s.current] == ["first"]
        assert revert_snapshot(dom, "second", paused=True) == "paused"
        dom.resume()

        assert delete_snapshot(dom, "first", children=True) == ["first", "second"]
        assert list_snapshots(dom) == []


def test_consistent_pauses_without_agent_and_always_resumes(qemu_domain: tuple[str, str]) -> None:
    uri, name = qemu_domain
    with open_connection(uri) as conn:
        dom = lookup_domain(conn, name)
        with consistent(dom) as how:  # no qemu-ga in this guest: auto falls back to pausing
            assert how == "paused" and domain_state(dom) == "paused"
        assert domain_state(dom) == "running"

        with pytest.raises(OSError, match="No space left"):
            with backup_point(dom, snapshot="vmlfs-20240101T000000Z", consistency="auto"):
                assert domain_state(dom) == "paused"
                raise OSError(28, "No space left on device")
        assert domain_state(dom) == "running"
        assert list_snapshots(dom) == []  # the failed backup's VM snapshot was removed

        with pytest.raises(HypervisorError, match="guest agent"):
            with consistent(dom, method="freeze"):
                pytest.fail("must not run without a freeze")
        assert domain_state(dom) == "running"


def test_cli_keeps_state_across_calls(qemu_domain: tuple[str, str], vmlfs: Vmlfs) -> None:
    uri, name = qemu_domain
    vmlfs.env["VMLFS_LIBVIRT_URI"] = uri
    assert name in vmlfs.run("vm", "list").stdout.decode()
    vmlfs.run("vm", "snapshot", name, "--name", "cli-1", "--description", "from the CLI")
    tree = vmlfs.run("vm", "snapshots", name).stdout.decode()
    assert tree.startswith("cli-1 *") and "from the CLI" in tree
    assert vmlfs.run("vm", "delete", name, "cli-1").stdout.decode() == f"deleted 'cli-1' of domain {name!r}\n"
