"""Domain snapshots (create, list, revert, delete) and consistent backup points.

Each option maps to exactly one libvirt flag, so the same call works on every
driver, and a flag a driver refuses surfaces as a HypervisorError carrying
the driver's own one-line reason. Snapshot XML is built with lxml and read
back through :func:`vmlfs.hypervisor.domain_xml.parse_xml`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import datetime, timezone
from typing import Literal

import libvirt
from lxml import etree

from vmlfs import names
from vmlfs.names import snapshot_name
from vmlfs.errors import InvalidRequest, NotFound, VmlfsError
from vmlfs.hypervisor.connection import (
    domain_state,
    libvirt_errors,
    lookup_domain,
    translate,
)
from vmlfs.hypervisor.domain_xml import parse_xml, to_text
from vmlfs.hypervisor.tree import SnapshotInfo

log = logging.getLogger(__name__)

ConsistencyMethod = Literal["auto", "freeze", "pause"]


def default_snapshot_name(now: datetime | None = None) -> str:
    """``vmlfs-<UTC timestamp>``, the same clock format as backups."""
    return "vmlfs-" + names.format_timestamp(now or datetime.now(timezone.utc))


def _lookup(domain: libvirt.virDomain, name: str) -> libvirt.virDomainSnapshot:
    if not name or not name.isprintable():
        raise InvalidRequest(f"invalid snapshot name {name!r}")
    with libvirt_errors(f"snapshot {name!r} of domain {domain.name()!r}"):
        return domain.snapshotLookupByName(name, 0)


def _info(snap: libvirt.virDomainSnapshot, current: str | None) -> SnapshotInfo:
    name = snap.getName()
    with libvirt_errors(f"reading snapshot {name!r}"):
        xml = parse_xml(snap.getXMLDesc(0), what=f"XML of snapshot {name!r}")
    created = xml.findtext("creationTime") or "0"
    try:
        stamp = datetime.fromtimestamp(int(created), timezone.utc)
    except (ValueError, OverflowError, OSError):
        stamp = datetime.fromtimestamp(0, timezone.utc)
    return SnapshotInfo(
        name=name,
        parent=xml.findtext("parent/name"),
        created=stamp,
        state=xml.findtext("state") or "unknown",
        description=xml.findtext("description") or "",
        current=name == current,
    )


def _current_name(domain: libvirt.virDomain) -> str | None:
    with libvirt_errors(f"reading the current snapshot of {domain.name()!r}"):
        if not domain.hasCurrentSnapshot(0):
            return None
        return domain.snapshotCurrent(0).getName()


def create_snapshot(
    domain: libvirt.virDomain,
    name: str | None = None,
    description: str = "",
    *,
    disk_only: bool = False,
    quiesce: bool = False,
    halt: bool = False,
    atomic: bool = False,
    no_metadata: bool = False,
    reuse_ext: bool = False,
) -> SnapshotInfo:
    """Take a snapshot of ``domain``; ``name`` None means :func:`default_snapshot_name`.

    Flags: ``disk_only`` (VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY, no memory
    state), ``quiesce`` (_QUIESCE, freeze guest file systems through the
    guest agent for the moment of the snapshot), ``halt`` (_HALT, stop the
    domain afterwards), ``atomic`` (_ATOMIC, all disks or nothing),
    ``no_metadata`` (_NO_METADATA, libvirt keeps no record: the snapshot is
    not listed afterwards), ``reuse_ext`` (_REUSE_EXT, disk-only snapshots
    write into existing external files).
    """
    name = snapshot_name(name if name is not None else default_snapshot_name())
    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = name
    if description:
        etree.SubElement(root, "description").text = description
    flags = (
        (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY if disk_only else 0)
        | (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE if quiesce else 0)
        | (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_HALT if halt else 0)
        | (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC if atomic else 0)
        | (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA if no_metadata else 0)
        | (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT if reuse_ext else 0)
    )
    with libvirt_errors(f"creating snapshot {name!r} of domain {domain.name()!r}"):
        snap = domain.snapshotCreateXML(to_text(root), flags)
    if no_metadata:  # nothing to read back: libvirt forgot it
        return SnapshotInfo(name, None, datetime.now(timezone.utc), "unknown", description, False)
    return _info(snap, _current_name(domain))


def redefine_snapshot(domain: libvirt.virDomain, xml: bytes | str, *, current: bool = False) -> SnapshotInfo:
    """Give libvirt back its record of a snapshot from the XML it once described
    (VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE; with ``current``, _CURRENT makes it the current one).

    This is how a snapshot taken with ``no_metadata``, or whose record was
    deleted with ``metadata_only``, is known again; the disk data is not touched.
    """
    parsed = parse_xml(xml, what="snapshot XML")
    if parsed.tag != "domainsnapshot":
        raise InvalidRequest(f"not a libvirt snapshot description (root element <{parsed.tag}>)")
    name = snapshot_name(parsed.findtext("name") or "")
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT if current else 0)
    with libvirt_errors(f"redefining snapshot {name!r} of domain {domain.name()!r}"):
        snap = domain.snapshotCreateXML(to_text(parsed), flags)
    return _info(snap, _current_name(domain))


#: Filters of :func:`list_snapshots`, each one libvirt listing flag.
LIST_FILTERS = {
    "roots": "VIR_DOMAIN_SNAPSHOT_LIST_ROOTS",
    "leaves": "VIR_DOMAIN_SNAPSHOT_LIST_LEAVES",
    "no_leaves": "VIR_DOMAIN_SNAPSHOT_LIST_NO_LEAVES",
    "metadata": "VIR_DOMAIN_SNAPSHOT_LIST_METADATA",
    "no_metadata": "VIR_DOMAIN_SNAPSHOT_LIST_NO_METADATA",
    "internal": "VIR_DOMAIN_SNAPSHOT_LIST_INTERNAL",
    "external": "VIR_DOMAIN_SNAPSHOT_LIST_EXTERNAL",
    "active": "VIR_DOMAIN_SNAPSHOT_LIST_ACTIVE",
    "inactive": "VIR_DOMAIN_SNAPSHOT_LIST_INACTIVE",
    "disk_only": "VIR_DOMAIN_SNAPSHOT_LIST_DISK_ONLY",
}


def list_snapshots(domain: libvirt.virDomain, *filters: str, descendants_of: str | None = None) -> list[SnapshotInfo]:
    """Snapshots of ``domain``, oldest first (draw them with :func:`render_tree`).

    ``filters`` are keys of :data:`LIST_FILTERS` (ANDed as libvirt does);
    ``descendants_of`` lists only the descendants of that snapshot
    (``"current"``: of the current snapshot).
    """
    unknown = sorted(set(filters) - set(LIST_FILTERS))
    if unknown:
        raise InvalidRequest(f"unknown snapshot filter {', '.join(unknown)}", hint=f"known: {', '.join(LIST_FILTERS)}")
    flags = 0
    for key in filters:
        flags |= getattr(libvirt, LIST_FILTERS[key])
    current = _current_name(domain)
    if descendants_of is not None:
        anchor = current if descendants_of == "current" else descendants_of
        if anchor is None:
            raise NotFound(f"domain {domain.name()!r} has no current snapshot")
        with libvirt_errors(f"listing descendants of snapshot {anchor!r}"):
            snaps = _lookup(domain, anchor).listAllChildren(flags | libvirt.VIR_DOMAIN_SNAPSHOT_LIST_DESCENDANTS)
    else:
        with libvirt_errors(f"listing snapshots of domain {domain.name()!r}"):
            snaps = domain.listAllSnapshots(flags)
    return sorted((_info(s, current) for s in snaps), key=lambda s: (s.created, s.name))


def snapshot_family(domain: libvirt.virDomain, name: str) -> tuple[str | None, list[str]]:
    """The parent (None for a root) and the direct children of snapshot ``name``, by name."""
    snap = _lookup(domain, name)
    try:
        parent: str | None = snap.getParent(0).getName()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise translate(exc, f"reading the parent of snapshot {name!r}") from exc
        parent = None
    with libvirt_errors(f"listing children of snapshot {name!r}"):
        children = sorted(c.getName() for c in snap.listAllChildren(0))
    return parent, children


def snapshot_xml(domain: libvirt.virDomain, name: str) -> str:
    """libvirt's XML description of snapshot ``name`` (what :func:`redefine_snapshot` takes back)."""
    snap = _lookup(domain, name)
    with libvirt_errors(f"reading snapshot {name!r} of domain {domain.name()!r}"):
        return snap.getXMLDesc(0)


def revert_snapshot(
    domain: libvirt.virDomain, name: str, *, running: bool = False, paused: bool = False, force: bool = False
) -> str:
    """Revert ``domain`` to snapshot ``name``; returns the domain's state afterwards.

    ``running``/``paused`` (VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING/_PAUSED)
    override the state the snapshot recorded; ``force`` (_FORCE) allows
    risky reverts libvirt otherwise refuses.
    """
    if running and paused:
        raise InvalidRequest("--running and --paused are mutually exclusive")
    snap = _lookup(domain, name)
    flags = (
        (libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING if running else 0)
        | (libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED if paused else 0)
        | (libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE if force else 0)
    )
    with libvirt_errors(f"reverting domain {domain.name()!r} to snapshot {name!r}"):
        domain.revertToSnapshot(snap, flags)
    if domain_state(domain) == "running":
        _thaw_after_revert(domain)
    return domain_state(domain)


def _thaw_after_revert(domain: libvirt.virDomain) -> None:
    """A memory snapshot taken while the guest's file systems were frozen (by an older vmlfs, or by
    hand with domfsfreeze) reverts to frozen file systems; thaw them, so a revert always yields a
    guest that can write. Without a guest agent there is nothing to thaw."""
    try:
        thawed = domain.fsThaw(None, 0)
    except libvirt.libvirtError as exc:
        log.debug("no thaw after reverting %r: %s", domain.name(), exc.get_error_message())
        return
    if thawed:
        log.warning("domain %r came back from its snapshot with %d frozen file systems; thawed them", domain.name(), thawed)


def delete_snapshot(
    domain: libvirt.virDomain,
    name: str,
    *,
    children: bool = False,
    children_only: bool = False,
    metadata_only: bool = False,
) -> list[str]:
    """Delete snapshot ``name``; returns the names deleted (the snapshot, then its descendants by name).

    ``children`` (VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN) also deletes its
    descendants, ``children_only`` (_CHILDREN_ONLY) deletes only them,
    ``metadata_only`` (_METADATA_ONLY) forgets libvirt's record but keeps the
    disk data.
    """
    if children and children_only:
        raise InvalidRequest("--children and --children-only are mutually exclusive")
    snap = _lookup(domain, name)
    with libvirt_errors(f"listing descendants of snapshot {name!r}"):
        descendants = (
            sorted(c.getName() for c in snap.listAllChildren(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_DESCENDANTS))
            if children or children_only
            else []
        )
    flags = (
        (libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN if children else 0)
        | (libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN_ONLY if children_only else 0)
        | (libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0)
    )
    with libvirt_errors(f"deleting snapshot {name!r} of domain {domain.name()!r}"):
        snap.delete(flags)
    return descendants if children_only else [name, *descendants]


def _is_paused(domain: libvirt.virDomain) -> bool:
    with libvirt_errors(f"reading the state of domain {domain.name()!r}"):
        return domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED


@contextmanager
def consistent(domain: libvirt.virDomain, *, method: ConsistencyMethod = "auto") -> Iterator[str]:
    """Hold ``domain`` still for the body; always undo it on exit, even on errors.

    ``freeze`` freezes the guest's file systems through the QEMU guest agent
    (the guest keeps running, so an SSH scan still works, but its writes
    block); ``pause`` suspends the vCPUs (nothing in the guest runs, so only
    host-side reads work); ``auto`` freezes where the agent answers and
    pauses otherwise. Yields what was done: ``frozen``, ``paused``,
    ``inactive`` (nothing to hold) or ``already paused`` (left paused on exit).
    """
    if method not in ("auto", "freeze", "pause"):
        raise InvalidRequest(f"consistency method must be auto, freeze or pause, not {method!r}")
    name = domain.name()
    with libvirt_errors(f"reading the state of domain {name!r}"):
        active = domain.isActive()
    if not active:
        yield "inactive"
        return
    if _is_paused(domain):
        yield "already paused"
        return
    with _signals_unwind():
        if method in ("auto", "freeze"):
            try:
                domain.fsFreeze(None, 0)
            except libvirt.libvirtError as exc:
                # An agent that timed out may still have frozen the guest: never leave it so.
                _release(f"thawing the file systems of domain {name!r} after a failed freeze", lambda: domain.fsThaw(None, 0),
                         quiet=True)
                if method == "freeze":
                    raise translate(exc, f"freezing the file systems of domain {name!r}") from exc
                log.info("cannot freeze domain %r through the guest agent (%s); pausing it", name, exc.get_error_message())
            else:
                try:
                    yield "frozen"
                finally:
                    _release(f"thawing the file systems of domain {name!r} (thaw them with 'virsh domfsthaw {name}')",
                             lambda: domain.fsThaw(None, 0))
                return
        with libvirt_errors(f"pausing domain {name!r}"):
            domain.suspend()
        try:
            yield "paused"
        finally:
            _release(f"resuming domain {name!r} (it is still paused; 'virsh resume {name}')", domain.resume)


RELEASE_ATTEMPTS = 3


def _release(action: str, call: Callable[[], object], *, quiet: bool = False) -> None:
    """Thaw or resume, retried: a guest agent that is slow once must not leave the guest held."""
    for attempt in range(1, RELEASE_ATTEMPTS + 1):
        try:
            call()
            return
        except libvirt.libvirtError as exc:
            if attempt == RELEASE_ATTEMPTS:
                if quiet:
                    log.debug("%s: %s", action, exc.get_error_message())
                    return
                raise translate(exc, action) from exc
            time.sleep(attempt)


@contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP end a Python process without running ``finally`` clauses, which would
    leave the guest frozen or paused. While a guest is held they interrupt like SIGINT instead
    (KeyboardInterrupt), so the hold is released first; handlers the program set itself are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def unwind(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    replaced = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            replaced[sig] = signal.signal(sig, unwind)
    try:
        yield
    finally:
        for sig, old in replaced.items():
            signal.signal(sig, old)


@contextmanager
def backup_point(
    domain: libvirt.virDomain,
    *,
    snapshot: str | None = None,
    consistency: ConsistencyMethod | None = None,
    description: str = "",
) -> Iterator[SnapshotInfo | None]:
    """The hypervisor's side of one environment backup.

    With ``snapshot``, a libvirt snapshot of that name is taken first and
    yielded; if the body raises, the snapshot is deleted again so no snapshot
    outlives a backup that never committed. It is a full snapshot (memory and
    disks), a point in time of the whole machine and so consistent by
    itself: it is taken *before* the hold, because one taken while the
    guest's file systems are frozen records them frozen, and reverting to it
    would give a guest that cannot write. With ``consistency``, the domain is
    then held still (:func:`consistent`) for the whole body and released
    afterwards, whatever happens (errors, SIGINT, SIGTERM).
    """
    with ExitStack() as stack:
        taken = create_snapshot(domain, snapshot, description) if snapshot is not None else None
        try:
            if consistency is not None:
                stack.enter_context(consistent(domain, method=consistency))
            yield taken
        except BaseException:
            if taken is not None:
                try:
                    delete_snapshot(domain, taken.name)
                except VmlfsError as exc:
                    log.warning("backup failed and its VM snapshot %r could not be removed: %s", taken.name, exc)
            raise


def backup_hook(
    connection: Callable[[], libvirt.virConnect],
    domain: str,
    *,
    snapshot: bool = False,
    consistency: ConsistencyMethod | None = None,
    description: str = "",
) -> Callable[[str], AbstractContextManager[str | None]]:
    """The ``around`` hook :func:`vmlfs.engine.backup.run_backup` calls with the backup's timestamp.

    ``connection`` gives the front end's libvirt connection (see
    :class:`vmlfs.hypervisor.session.LibvirtSession`), asked for only once the
    timestamp is chosen. The hook wraps the backup in :func:`backup_point` with
    a snapshot named ``vmlfs-<ts>`` when ``snapshot``, and yields that name
    (or None) for ``meta.vm_snapshot``. Kept here so the engine never imports
    libvirt.
    """

    @contextmanager
    def around(ts: str) -> Iterator[str | None]:
        dom = lookup_domain(connection(), domain)
        name = f"vmlfs-{ts}" if snapshot else None
        with backup_point(dom, snapshot=name, consistency=consistency, description=description) as taken:
            yield taken.name if taken is not None else None

    return around
