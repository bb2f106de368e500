"""Domain and snapshot XML: parsed with entities off, built with lxml.

XML reaches vmlfs from libvirt drivers (possibly on another host) and from
users; a DOCTYPE can declare external entities (file or network reads) or an
entity-expansion bomb. :func:`parse_xml` refuses any DOCTYPE outright and
parses with entity resolution, DTD loading, network access and huge trees
off, so neither can do harm even if the refusal were bypassed.

:func:`build_domain_xml` is the one place a domain definition is written; the
CernVM provisioning code calls it with the image paths it found.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from lxml import etree

from vmlfs.errors import InvalidRequest
from vmlfs.names import domain_name

MAX_XML_BYTES = 16 * 1024 * 1024
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not thread-safe, and libvirt
    # calls run in worker threads.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_blank_text=True
    )


def parse_xml(text: str | bytes, *, what: str = "XML") -> etree._Element:
    """Parse ``text`` safely; ``what`` names the document in error messages.

    Raises InvalidRequest for a DOCTYPE or ENTITY declaration, text over
    :data:`MAX_XML_BYTES`, or malformed XML.
    """
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if len(data) > MAX_XML_BYTES:
        raise InvalidRequest(f"{what} is {len(data)} bytes, over the {MAX_XML_BYTES}-byte limit")
    if _DOCTYPE.search(data):
        raise InvalidRequest(f"{what} contains a DOCTYPE or ENTITY declaration; refused (entities are never expanded)")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise InvalidRequest(f"{what} is not well-formed XML: {exc}") from None
    # The byte scan misses declarations in other encodings (UTF-16); the
    # parsed document tells the truth.
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise InvalidRequest(f"{what} contains a DOCTYPE; refused (entities are never expanded)")
    return root


def to_text(element: etree._Element) -> str:
    return etree.tostring(element, encoding="unicode", pretty_print=True)


def detect_virt_type(capabilities_xml: str | None = None, *, arch: str = "x86_64") -> Literal["kvm", "qemu"]:
    """Choose KVM when it can be used, TCG emulation (``qemu``) otherwise.

    Given the host capabilities (``conn.getCapabilities()``), trust them:
    libvirt probes /dev/kvm as the user QEMU runs as, which may differ from
    ours. Without them, look at /dev/kvm from this process.
    """
    if capabilities_xml is None:
        return "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu"
    caps = parse_xml(capabilities_xml, what="host capabilities")
    found = caps.xpath("guest[os_type='hvm']/arch[@name=$arch]/domain[@type='kvm']", arch=arch)
    return "kvm" if found else "qemu"


def _absolute(path: str | os.PathLike[str], what: str) -> str:
    text = os.fspath(path)
    if not os.path.isabs(text) or any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise InvalidRequest(f"{what} must be an absolute path without control characters: {text!r}")
    return text


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def build_domain_xml(
    name: str,
    disk: str | os.PathLike[str],
    *,
    memory_mib: int = 2048,
    vcpus: int = 1,
    disk_format: Literal["qcow2", "raw"] = "qcow2",
    cdrom: str | os.PathLike[str] | None = None,
    config_drive: str | os.PathLike[str] | None = None,
    network: Literal["nat", "user", "none"] = "nat",
    network_name: str = "default",
    virt_type: Literal["kvm", "qemu"] | None = None,
    arch: str = "x86_64",
    machine: str = "pc",
    vnc: bool = False,
    ssh_forward: int | None = None,
    uuid: str | None = None,
    console_log: str | os.PathLike[str] | None = None,
) -> str:
    """Return the XML of a QEMU/KVM domain for a CernVM guest.

    ``disk`` is the root disk on virtio ``vda``; ``cdrom`` (the µCernVM ISO)
    is attached read-only and booted first when given; ``config_drive`` (the
    contextualization ISO) is a second read-only CD-ROM, never booted. ``network`` is
    ``nat`` (libvirt network ``network_name``, virbr0 by default), ``user``
    (QEMU user-mode, no host setup needed) or ``none``; with ``user``,
    ``ssh_forward`` is the port on the hypervisor's 127.0.0.1 forwarded to the
    guest's port 22 (libvirt 9 forwards ports only through passt, which is
    not everywhere, so it is QEMU's own ``hostfwd`` on the NIC's netdev).
    ``uuid`` None lets libvirt choose one (the ConfigDrive carries it, so
    provisioning chooses it first). ``virt_type`` None means
    :func:`detect_virt_type`. The serial console is
    a pty, copied to ``console_log`` (on the hypervisor) when given; ``vnc``
    adds a VNC display listening on 127.0.0.1 only. Every domain gets the
    QEMU guest agent's channel (``org.qemu.guest_agent.0``: freeze and thaw)
    and a virtio RNG (first-boot key generation needs entropy).
    """
    domain_name(name)
    if not 64 <= memory_mib <= 1024 * 1024:
        raise InvalidRequest(f"memory must be 64 MiB to 1 TiB, not {memory_mib} MiB")
    if not 1 <= vcpus <= 256:
        raise InvalidRequest(f"vcpus must be 1 to 256, not {vcpus}")
    if disk_format not in ("qcow2", "raw"):
        raise InvalidRequest(f"disk format must be qcow2 or raw, not {disk_format!r}")
    if network not in ("nat", "user", "none"):
        raise InvalidRequest(f"network must be nat, user or none, not {network!r}")
    if ssh_forward is not None and (network != "user" or not 1 <= ssh_forward <= 65535):
        raise InvalidRequest(f"an SSH port forward ({ssh_forward}) needs network 'user' and a port from 1 to 65535")
    kind = virt_type or detect_virt_type(arch=arch)
    if kind not in ("kvm", "qemu"):
        raise InvalidRequest(f"virt type must be kvm or qemu, not {kind!r}")

    root = etree.Element("domain", type=kind, nsmap={"qemu": QEMU_NS} if ssh_forward else None)
    _sub(root, "name", name)
    if uuid is not None:
        _sub(root, "uuid", uuid)
    _sub(root, "memory", str(memory_mib), unit="MiB")
    _sub(root, "vcpu", str(vcpus))
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch=arch, machine=machine)
    if cdrom is not None:
        _sub(os_el, "boot", dev="cdrom")
    _sub(os_el, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")

    devices = _sub(root, "devices")
    root_disk = _sub(devices, "disk", type="file", device="disk")
    _sub(root_disk, "driver", name="qemu", type=disk_format)
    _sub(root_disk, "source", file=_absolute(disk, "disk"))
    _sub(root_disk, "target", dev="vda", bus="virtio")
    # i440fx ('pc') machines have IDE; q35 has SATA only.
    ide = machine.startswith("pc") and "q35" not in machine
    for slot, (image, what) in enumerate(((cdrom, "cdrom image"), (config_drive, "config drive"))):
        if image is None:
            continue
        iso = _sub(devices, "disk", type="file", device="cdrom")
        _sub(iso, "driver", name="qemu", type="raw")
        _sub(iso, "source", file=_absolute(image, what))
        _sub(iso, "target", dev=("hdc", "hdd")[slot] if ide else ("sda", "sdb")[slot], bus="ide" if ide else "sata")
        _sub(iso, "readonly")
    if network == "nat":
        nic = _sub(devices, "interface", type="network")
        _sub(nic, "source", network=network_name)
        _sub(nic, "model", type="virtio")
    elif network == "user" and ssh_forward is None:
        nic = _sub(devices, "interface", type="user")
        _sub(nic, "model", type="virtio")
    serial = _sub(devices, "serial", type="pty")
    if console_log is not None:
        _sub(serial, "log", file=_absolute(console_log, "console log"), append="off")
    _sub(devices, "console", type="pty")
    agent = _sub(devices, "channel", type="unix")
    _sub(agent, "target", type="virtio", name="org.qemu.guest_agent.0")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    if vnc:
        _sub(devices, "graphics", type="vnc", listen="127.0.0.1", autoport="yes")
    if ssh_forward is not None:
        args = _sub(root, f"{{{QEMU_NS}}}commandline")
        for value in ("-netdev", f"user,id=vmlfsnet0,hostfwd=tcp:127.0.0.1:{ssh_forward}-:22",
                      # A fixed slot: QEMU places command-line devices first, libvirt numbers its own from slot 2.
                      "-device", f"virtio-net-pci,netdev=vmlfsnet0,bus={'pci.0' if ide else 'pcie.0'},addr=0x1e"):
            _sub(args, f"{{{QEMU_NS}}}arg", value=value)
    return to_text(root)
