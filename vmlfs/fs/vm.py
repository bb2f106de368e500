"""The mount's hypervisor nodes: the files of ``entries/<e>/vm/``, ``control/vm-snapshot``, ``control/vm-revert``,
``/control/provision``.

``vm/`` (the directory is in :mod:`vmlfs.fs.tree`) lists the libvirt
snapshots of the entry's domain as read-only files ``<snapshot>.xml``
(libvirt's XML description) and ``tree`` (the same drawing as ``vmlfs vm
snapshots``). Snapshots change under the mount, so nothing here is cached by
the kernel. Each listing, lookup or open asks libvirt (from a worker thread,
through the mount's :class:`~vmlfs.fs.control.VmPort`); when libvirt cannot
be reached the directory answers EIO and ``status`` says why, and the rest of
the mount is untouched.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from typing import TypeVar

from vmlfs.errors import ConnectionFailed, HypervisorError, InvalidRequest
from vmlfs.fs import layout
from vmlfs.fs.context import MountContext
from vmlfs.fs.control import PROVISION, Job, VmPort, parse_snapshot, parse_target
from vmlfs.fs.files import ControlFile, VirtualNode
from vmlfs.fs.protocol import NEVER, Attrs, ContentHandle

T = TypeVar("T")


class DomainSnapshots:
    """The questions ``vm/`` asks libvirt about one entry's domain.

    An unreachable libvirtd becomes EIO (HypervisorError), recorded in the
    entry's status; a mount without libvirt or an entry without a domain are
    refused (and recorded) by the jobs' ``port`` and ``domain``.
    """

    def __init__(self, ctx: MountContext, entry: str) -> None:
        self.ctx, self.entry = ctx, entry

    def _ask(self, question: Callable[[VmPort, str], T]) -> T:
        jobs = self.ctx.jobs
        port, domain = jobs.port(self.entry), jobs.domain(self.entry)
        try:
            return question(port, domain)
        except ConnectionFailed as exc:
            error = HypervisorError(exc.message, hint=exc.hint)
            jobs.record_error(self.entry, error)
            raise error from None

    def names(self) -> list[str]:
        return self._ask(lambda port, domain: port.snapshot_names(domain))

    def xml(self, snapshot: str) -> bytes:
        return self._ask(lambda port, domain: port.snapshot_xml(domain, snapshot))

    def tree(self) -> bytes:
        return self._ask(lambda port, domain: port.snapshot_tree(domain))


class VmFile(VirtualNode):
    """A snapshot's XML or the tree: fetched at lookup (for its size) and again at every open (fresh)."""

    def __init__(self, ctx: MountContext, entry: str, name: str, fetch: Callable[[], bytes]) -> None:
        super().__init__(ctx, ("vm-file", entry, name))
        self.fetch = fetch
        self.content = fetch()

    def attrs(self) -> Attrs:
        return self.owned_attrs(stat.S_IFREG | 0o444, len(self.content), self.ctx.now_ns(), NEVER)

    def open_read(self) -> ContentHandle:
        self.content = self.fetch()
        return ContentHandle(self.content)


class VmSnapshotFile(ControlFile):
    """``entries/<e>/control/vm-snapshot``: touch it (or write nothing but a newline) for a libvirt snapshot."""

    name = layout.VM_SNAPSHOT
    help = b"touch this file to take a libvirt snapshot of the entry's domain; see ../vm/ and status\n"

    def check(self, data: bytes) -> None:
        if data.strip():
            raise InvalidRequest(f"refused vm-snapshot request {data[:64]!r}: touch the file, write nothing")

    def start(self, key: str, data: bytes | None) -> Job:
        return self.ctx.jobs.start_vm_snapshot(key)


class VmRevertFile(ControlFile):
    """``entries/<e>/control/vm-revert``: write a snapshot's name to revert the entry's domain to it."""

    name = layout.VM_REVERT
    help = b"write the name of a snapshot (see ../vm/) here to revert the entry's domain to it; see status\n"

    def check(self, data: bytes) -> None:
        parse_snapshot(data, partial=True)

    def start(self, key: str, data: bytes | None) -> Job:
        if data is None:
            raise InvalidRequest("touching vm-revert does nothing: write the name of a snapshot (see ../vm/)")
        return self.ctx.jobs.start_vm_revert(key, parse_snapshot(data))


class ProvisionFile(ControlFile):
    """``/control/provision``: write ``NAME``, ``NAME@TS`` or a CernVM release to provision a domain."""

    name = layout.PROVISION
    help = b"write NAME, NAME@TIMESTAMP or a CernVM release here to provision a libvirt domain; see status\n"

    def __init__(self, ctx: MountContext) -> None:
        super().__init__(ctx, None)

    def key(self) -> str:
        return PROVISION

    def check(self, data: bytes) -> None:
        parse_target(data, partial=True)

    def start(self, key: str, data: bytes | None) -> Job:
        if data is None:
            raise InvalidRequest("touching provision does nothing: write NAME, NAME@TIMESTAMP or a release")
        return self.ctx.jobs.start_provision(parse_target(data))
