"""Hypervisor use cases: a VM snapshot of an entry's domain, and what the mount's ``vm/`` tree asks libvirt.

:class:`SessionVm` is the mount's :class:`vmlfs.fs.control.VmPort`: the
snapshot listing and XML for ``vm/``, ``control/vm-snapshot`` and
``/control/provision``, all through the session's one libvirt connection.
"""

from __future__ import annotations

from collections.abc import Callable

from vmlfs.app import provision as prov
from vmlfs.app.session import Session
from vmlfs.errors import InvalidRequest


def entry_domain(session: Session, entry: str) -> str:
    """The libvirt domain ``entry`` names; InvalidRequest when it names none."""
    domain = session.store().load_entry(entry).domain
    if not domain:
        raise InvalidRequest(f"entry {entry!r} names no libvirt domain", hint=f"vmlfs entry edit {entry} --domain NAME")
    return domain


def take_vm_snapshot(session: Session, domain: str, description: str = "", name: str | None = None,
                     **flags: bool):
    """A libvirt snapshot of ``domain`` (named ``name``, or vmlfs-<UTC time>), with
    :func:`vmlfs.hypervisor.create_snapshot`'s flags; returns its SnapshotInfo."""
    from vmlfs.hypervisor import create_snapshot

    return session.libvirt().with_domain(domain, lambda dom: create_snapshot(dom, name, description, **flags))


def domains(session: Session):
    """Every domain of the session's libvirt, with state and snapshot count."""
    from vmlfs.hypervisor import list_domains

    return list_domains(session.libvirt().connection())


def snapshot_tree(session: Session, domain: str) -> str:
    from vmlfs.hypervisor import list_snapshots, render_tree

    return render_tree(session.libvirt().with_domain(domain, list_snapshots))


def revert_vm_snapshot(session: Session, domain: str, snapshot: str, **flags: bool) -> str:
    """Revert ``domain`` to ``snapshot``; returns the domain's state afterwards."""
    from vmlfs.hypervisor import revert_snapshot

    return session.libvirt().with_domain(domain, lambda dom: revert_snapshot(dom, snapshot, **flags))


def delete_vm_snapshot(session: Session, domain: str, snapshot: str, **flags: bool) -> list[str]:
    """Delete ``snapshot`` (and, by the flags, its descendants); returns what was deleted."""
    from vmlfs.hypervisor import delete_snapshot

    return session.libvirt().with_domain(domain, lambda dom: delete_snapshot(dom, snapshot, **flags))


class SessionVm:
    """Implements :class:`vmlfs.fs.control.VmPort` over a session (one libvirt connection)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def snapshot_names(self, domain: str) -> list[str]:
        return self.session.libvirt().snapshot_names(domain)

    def snapshot_xml(self, domain: str, name: str) -> bytes:
        return self.session.libvirt().snapshot_xml(domain, name)

    def snapshot_tree(self, domain: str) -> bytes:
        return self.session.libvirt().snapshot_tree(domain)

    def take_snapshot(self, domain: str, description: str) -> str:
        return take_vm_snapshot(self.session, domain, description).name

    def provision(self, request: str, report: Callable[[str], None]) -> str:
        done = prov.provision(self.session, prov.plan(self.session.store(), request), report=report)
        return f"provisioned {request}: domain {done.domain} at {done.address}" + (
            f"; {done.report.files} files restored" if done.report else "") + (f"; warning: {done.warning}" if done.warning else "") + (
            f"; {done.recorded}" if done.recorded else "")

    def close(self) -> None:
        self.session.close_libvirt()
