"""The mount's hypervisor nodes: ``entries/<e>/vm/``, ``control/vm-snapshot``, ``/control/provision``.

``vm/`` lists the libvirt snapshots of the entry's domain as read-only files
``<snapshot>.xml`` (libvirt's XML description) and ``tree`` (the same drawing
as ``vmlfs vm snapshots``). Snapshots change under the mount, so nothing here
is cached by the kernel. Each listing or lookup asks libvirt (from a worker
thread, through the mount's :class:`~vmlfs.fs.control.VmPort`); when libvirt
cannot be reached the directory answers EIO and ``status`` says why, and the
rest of the mount is untouched.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from vmlfs.errors import ConnectionFailed, HypervisorError, InvalidRequest
from vmlfs.fs import layout
from vmlfs.fs.control import PROVISION, Job, parse_target
from vmlfs.fs.layout import Slot
from vmlfs.fs.nodes import ControlFile, ControlHandle, VirtualDir
from vmlfs.fs.protocol import NEVER, Attrs, ContentHandle, FsNode

if TYPE_CHECKING:
    from vmlfs.fs.state import MountState

T = TypeVar("T")


def _ask(state: "MountState", entry: str, call: Callable[[], T]) -> T:
    """A libvirt call for ``vm/``; an unreachable libvirtd becomes EIO, recorded in the entry's status."""
    try:
        return call()
    except ConnectionFailed as exc:
        error = HypervisorError(exc.message, hint=exc.hint)
        state.jobs.record_error(entry, error)
        raise error from None


class VmDir(VirtualDir):
    """``/entries/<entry>/vm``: one file per snapshot of the entry's domain, and ``tree``."""

    timeout = NEVER

    def __init__(self, state: "MountState", entry: str) -> None:
        super().__init__(state, ("vm", entry), state.mounted_ns)
        self.entry = entry

    def slots(self) -> list[Slot]:
        port, domain = self.state.jobs.port(self.entry), self.state.jobs.domain(self.entry)
        return layout.vm_layout(_ask(self.state, self.entry, lambda: port.snapshot_names(domain)))

    def child(self, slot: Slot) -> FsNode:
        port, domain = self.state.jobs.port(self.entry), self.state.jobs.domain(self.entry)
        if slot.kind == "tree":
            fetch = lambda: _ask(self.state, self.entry, lambda: port.snapshot_tree(domain))  # noqa: E731
        else:
            fetch = lambda: _ask(self.state, self.entry, lambda: port.snapshot_xml(domain, slot.arg or ""))  # noqa: E731
        return VmFile(self.state, self.entry, slot.name, fetch)


class VmFile(FsNode):
    """A snapshot's XML or the tree: fetched at lookup (for its size) and again at every open (fresh)."""

    def __init__(self, state: "MountState", entry: str, name: str, fetch: Callable[[], bytes]) -> None:
        self.state, self.fetch = state, fetch
        self.content = fetch()
        self.ino = state.table.number(("vm-file", entry, name))

    def attrs(self) -> Attrs:
        return self.state.attrs(self.ino, stat.S_IFREG | 0o444, len(self.content), self.state.now_ns(), NEVER)

    def open_read(self) -> ContentHandle:
        self.content = self.fetch()
        return ContentHandle(self.content)


class VmSnapshotFile(ControlFile):
    """``entries/<e>/control/vm-snapshot``: touch it (or write nothing but a newline) for a libvirt snapshot."""

    help = b"touch this file to take a libvirt snapshot of the entry's domain; see ../vm/ and status\n"
    kind = "vm-snapshot"

    def check(self, data: bytes) -> None:
        if data.strip():
            raise InvalidRequest(f"refused vm-snapshot request {data[:64]!r}: touch the file, write nothing")

    def start(self, key: str, data: bytes | None) -> Job:
        return self.state.jobs.start_vm_snapshot(key)

    def open_write(self, uid: int) -> ControlHandle:
        """No backup lock to probe: a VM snapshot may be taken while another process backs up."""
        return ControlHandle(self, self._allowed(uid))


class ProvisionFile(ControlFile):
    """``/control/provision``: write ``NAME``, ``NAME@TS`` or a CernVM release to provision a domain."""

    help = b"write NAME, NAME@TIMESTAMP or a CernVM release here to provision a libvirt domain; see status\n"
    kind = "provision"

    def key(self) -> str:
        return PROVISION

    def check(self, data: bytes) -> None:
        parse_target(data, partial=True)

    def start(self, key: str, data: bytes | None) -> Job:
        if data is None:
            raise InvalidRequest("touching provision does nothing: write NAME, NAME@TIMESTAMP or a release")
        return self.state.jobs.start_provision(parse_target(data))

    def open_write(self, uid: int) -> ControlHandle:
        return ControlHandle(self, self._allowed(uid))
