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


def redefine_vm_snapshot(session: Session, domain: str, xml: bytes, *, current: bool = False):
    """Give libvirt back a snapshot's record from its XML (see :func:`vmlfs.hypervisor.redefine_snapshot`)."""
    from vmlfs.hypervisor import redefine_snapshot

    return session.libvirt().with_domain(domain, lambda dom: redefine_snapshot(dom, xml, current=current))


def domains(session: Session):
    """Every domain of the session's libvirt, with state and snapshot count."""
    from vmlfs.hypervisor import list_domains

    return list_domains(session.libvirt().connection())


def vm_snapshots(session: Session, domain: str, *filters: str, descendants_of: str | None = None):
    """``domain``'s snapshots, filtered as :func:`vmlfs.hypervisor.list_snapshots` filters them."""
    from vmlfs.hypervisor import list_snapshots

    return session.libvirt().with_domain(domain, lambda dom: list_snapshots(dom, *filters, descendants_of=descendants_of))


def snapshot_tree(session: Session, domain: str, *filters: str, descendants_of: str | None = None) -> str:
    from vmlfs.hypervisor import render_tree

    return render_tree(vm_snapshots(session, domain, *filters, descendants_of=descendants_of))


def vm_snapshot_details(session: Session, domain: str, snapshot: str) -> tuple[str | None, list[str], str]:
    """(parent, children, libvirt's XML) of one snapshot."""
    from vmlfs.hypervisor import snapshot_family, snapshot_xml

    def details(dom):
        parent, children = snapshot_family(dom, snapshot)
        return parent, children, snapshot_xml(dom, snapshot)

    return session.libvirt().with_domain(domain, details)


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
        return [s.name for s in vm_snapshots(self.session, domain)]

    def snapshot_xml(self, domain: str, name: str) -> bytes:
        return vm_snapshot_details(self.session, domain, name)[2].encode()

    def snapshot_tree(self, domain: str) -> bytes:
        return snapshot_tree(self.session, domain).encode()

    def take_snapshot(self, domain: str, description: str) -> str:
        return take_vm_snapshot(self.session, domain, description).name

    def revert(self, domain: str, snapshot: str) -> str:
        return revert_vm_snapshot(self.session, domain, snapshot)

    def provision(self, request: str, report: Callable[[str], None]) -> str:
        done = prov.provision(self.session, prov.plan(self.session.store(), request), report=report)
        return f"provisioned {request}: domain {done.domain} at {done.address}" + (
            f"; {done.report.files} files restored" if done.report else "") + (f"; warning: {done.warning}" if done.warning else "") + (
            f"; {done.recorded}" if done.recorded else "")

    def close(self) -> None:
        self.session.close_libvirt()
