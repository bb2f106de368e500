"""Disks of provisioned domains, as volumes of a libvirt storage pool.

A pool's directory is the hypervisor's to read: libvirt created it with
permissions QEMU can use, and relabels (chowns) a volume for the domain that
opens it, so a disk works whether QEMU runs as root or as ``libvirt-qemu``
(Debian). A file under the user's home or cache usually does not: QEMU cannot
even traverse ``~``. Everything therefore goes through libvirt's storage API:
the CernVM image is uploaded once as a base volume (named after the release
file, reused by later domains), each domain's root disk is a qcow2 volume
backed by it, and the ConfigDrive is uploaded as a volume of its own. Upload
is a libvirt stream, so this works on a remote hypervisor too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import libvirt
from lxml import etree

from vmlfs.errors import NotFound, VmlfsError
from vmlfs.hypervisor.connection import libvirt_errors
from vmlfs.hypervisor.domain_xml import to_text

log = logging.getLogger(__name__)

DEFAULT_POOL = "default"
_CHUNK = 4 * 1024 * 1024


def open_pool(conn: libvirt.virConnect, name: str = DEFAULT_POOL) -> libvirt.virStoragePool:
    """The active pool ``name``, refreshed; NotFound (with how to make one) if there is none."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise VmlfsError(f"looking up storage pool {name!r}: {exc.get_error_message()}") from exc
        raise NotFound(f"libvirt has no storage pool {name!r} at {conn.getURI()}",
                       hint=f"create it: virsh pool-define-as {name} dir --target /var/lib/libvirt/images && "
                            f"virsh pool-build {name} && virsh pool-start {name} && virsh pool-autostart {name}; "
                            "or name another pool with 'vmlfs entry edit --vm pool=NAME'") from None
    with libvirt_errors(f"starting storage pool {name!r}"):
        if not pool.isActive():
            pool.create(0)
        pool.refresh(0)
    return pool


def _volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise VmlfsError(f"looking up volume {name!r}: {exc.get_error_message()}") from exc


def _volume_xml(name: str, capacity: int, fmt: str, backing: tuple[str, str] | None = None) -> str:
    root = etree.Element("volume")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    if fmt == "raw":
        etree.SubElement(root, "allocation", unit="bytes").text = "0"
    etree.SubElement(etree.SubElement(root, "target"), "format", type=fmt)
    if backing is not None:
        store = etree.SubElement(root, "backingStore")
        etree.SubElement(store, "path").text = backing[0]
        etree.SubElement(store, "format", type=backing[1])
    return to_text(root)


def upload(pool: libvirt.virStoragePool, name: str, source: Path) -> libvirt.virStorageVol:
    """A new raw volume ``name`` holding ``source``'s bytes (its format, e.g. qcow2, stays inside)."""
    size = source.stat().st_size
    with libvirt_errors(f"creating volume {name!r} in pool {pool.name()!r}"):
        vol = pool.createXML(_volume_xml(name, size, "raw"), 0)
    try:
        conn = pool.connect()
        with libvirt_errors(f"uploading {source.name} into volume {name!r}"):
            stream = conn.newStream(0)
            vol.upload(stream, 0, size, 0)
            with open(source, "rb") as f:
                while chunk := f.read(_CHUNK):
                    while chunk:
                        sent = stream.send(chunk)
                        chunk = chunk[sent:]
            stream.finish()
    except BaseException:
        delete(vol)
        raise
    return vol


def base_volume(pool: libvirt.virStoragePool, source: Path) -> libvirt.virStorageVol:
    """The pool's copy of the release image ``source``: reused when a complete volume of that name exists.

    Release files are named by version and never change (a changed one would
    fail its checksum before it got here). An upload writes every byte, so a
    volume with fewer bytes allocated than its capacity is an interrupted
    upload: it is replaced.
    """
    name = f"vmlfs-base-{source.name}"
    size = source.stat().st_size
    found = _volume(pool, name)
    if found is not None:
        with libvirt_errors(f"reading volume {name!r}"):
            _kind, capacity, allocation = found.info()
            if capacity == size and allocation >= size:
                return found
        log.info("replacing the incomplete volume %s", name)
        delete(found)
    log.info("uploading %s into pool %s", source.name, pool.name())
    uploaded = upload(pool, name, source)
    with libvirt_errors(f"refreshing storage pool {pool.name()!r}"):
        pool.refresh(0)
    return uploaded


@dataclass(frozen=True)
class Disk:
    path: str
    format: str


def format_of(source: Path) -> str:
    """``qcow2`` when the file starts like one, else ``raw``: the backing format, never guessed by QEMU."""
    with open(source, "rb") as f:
        return "qcow2" if f.read(4) == b"QFI\xfb" else "raw"


def overlay(pool: libvirt.virStoragePool, name: str, capacity_gib: int, backing: Disk | None) -> libvirt.virStorageVol:
    """A new qcow2 volume ``name`` of ``capacity_gib`` GiB, backed by ``backing`` (None: empty)."""
    capacity = capacity_gib * 1024**3
    with libvirt_errors(f"creating volume {name!r} in pool {pool.name()!r}"):
        return pool.createXML(_volume_xml(name, capacity, "qcow2", (backing.path, backing.format) if backing else None), 0)


def delete(vol: libvirt.virStorageVol) -> None:
    """Remove ``vol``; a volume already gone is fine (cleanup after a failure must not fail again)."""
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            log.warning("could not delete volume %s: %s", vol.name(), exc.get_error_message())


def domain_volumes(pool: libvirt.virStoragePool, domain: str) -> list[libvirt.virStorageVol]:
    """The volumes provisioning made for ``domain`` (named ``<domain>-...``): what removing it removes."""
    with libvirt_errors(f"listing volumes of pool {pool.name()!r}"):
        pool.refresh(0)  # the console log is written by libvirt's log daemon, not through the pool
        return [v for v in pool.listAllVolumes(0) if v.name().startswith(domain + "-")]


def console_log_path(pool: libvirt.virStoragePool, domain: str) -> str:
    """Where ``domain``'s serial console is copied: a file in its pool, so it is cleaned up with its
    volumes and readable through the storage API, from a remote client too."""
    with libvirt_errors(f"reading storage pool {pool.name()!r}"):
        target = etree.fromstring(pool.XMLDesc(0).encode()).findtext("target/path")
    if not target:
        raise VmlfsError(f"storage pool {pool.name()!r} has no target directory for a console log")
    return f"{target.rstrip('/')}/{domain}-console.log"


def tail(pool: libvirt.virStoragePool, name: str, lines: int = 15, limit: int = 64 * 1024) -> str:
    """The last ``lines`` lines of volume ``name`` (e.g. a console log); '' when there is none."""
    try:
        pool.refresh(0)
        vol = _volume(pool, name)
        if vol is None:
            return ""
        size = vol.info()[2] or vol.info()[1]
        start = max(0, size - limit)
        stream = pool.connect().newStream(0)
        vol.download(stream, start, size - start, 0)
        chunks = []
        while data := stream.recv(_CHUNK):
            if not isinstance(data, bytes):
                break
            chunks.append(data)
        stream.finish()
    except (libvirt.libvirtError, VmlfsError) as exc:
        return f"(console log unreadable: {exc})"
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r", "")
    return "\n".join(text.splitlines()[-lines:])
