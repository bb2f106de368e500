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


def take_vm_snapshot(session: Session, domain: str, description: str) -> str:
    """A libvirt snapshot of ``domain`` (named vmlfs-<UTC time>); returns its name."""
    return session.libvirt().take_snapshot(domain, description)


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
        return take_vm_snapshot(self.session, domain, description)

    def provision(self, request: str, report: Callable[[str], None]) -> str:
        done = prov.provision(self.session, prov.plan(self.session.store(), request), report=report)
        return f"provisioned {request}: domain {done.domain} at {done.address}" + (
            f"; {done.report.files} files restored" if done.report else "") + (f"; warning: {done.warning}" if done.warning else "")

    def close(self) -> None:
        self.session.close_libvirt()
