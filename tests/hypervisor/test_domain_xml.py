"""XML safety (DOCTYPE, external entities, expansion bombs) and the domain XML builder."""

from __future__ import annotations

import time

import pytest
from lxml import etree

from vmlfs.errors import InvalidRequest
from vmlfs.hypervisor import (
    build_domain_xml,
    detect_virt_type,
    open_connection,
    parse_xml,
)

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10))
    + "]>\n<domain><name>&lol9;</name></domain>"
)
EXTERNAL_ENTITY = '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><domain><name>&x;</name></domain>'
EXTERNAL_DTD = '<!DOCTYPE domain SYSTEM "http://127.0.0.1:9/evil.dtd"><domain/>'


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, BILLION_LAUGHS.encode()])
def test_doctype_and_entities_refused_quickly(text: str | bytes) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="DOCTYPE"):
        parse_xml(text, what="domain XML")
    assert time.monotonic() - started < 1


def test_doctype_in_another_encoding_refused_after_parsing() -> None:
    # The byte scan cannot see a UTF-16 DOCTYPE; the parsed document's docinfo does.
    data = EXTERNAL_ENTITY.replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")
    with pytest.raises(InvalidRequest, match="DOCTYPE") as info:
        parse_xml(data)
    assert "root:" not in str(info.value)


def test_malformed_and_oversized_xml_refused() -> None:
    with pytest.raises(InvalidRequest, match="not well-formed"):
        parse_xml("<domain><name>x</domain>")
    with pytest.raises(InvalidRequest, match="limit"):
        parse_xml(b"<a>" + b"x" * (17 * 1024 * 1024) + b"</a>")


def test_plain_xml_parses() -> None:
    root = parse_xml("<domainsnapshot><name>a &amp; b</name></domainsnapshot>")
    assert root.findtext("name") == "a & b"


def test_build_domain_xml_nat_qcow2_cdrom() -> None:
    root = parse_xml(build_domain_xml("cvm-1", "/var/lib/vm/d&'x.qcow2", memory_mib=1024, vcpus=2, cdrom="/isos/ucernvm.iso", virt_type="kvm", vnc=True))
    assert root.get("type") == "kvm"
    assert root.findtext("name") == "cvm-1"
    assert (root.find("memory").get("unit"), root.findtext("memory")) == ("MiB", "1024")
    assert root.findtext("vcpu") == "2"
    assert [b.get("dev") for b in root.findall("os/boot")] == ["cdrom", "hd"]
    assert root.find("cpu") is None  # libvirt's default model: host-passthrough breaks under nested KVM
    disk, iso = root.findall("devices/disk")
    assert disk.find("source").get("file") == "/var/lib/vm/d&'x.qcow2"
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    assert iso.get("device") == "cdrom" and iso.find("readonly") is not None
    nic = root.find("devices/interface")
    assert nic.get("type") == "network" and nic.find("source").get("network") == "default"
    assert root.find("devices/graphics").get("listen") == "127.0.0.1"


def test_build_domain_xml_user_network_none_and_tcg() -> None:
    user = parse_xml(build_domain_xml("a", "/d.qcow2", network="user", virt_type="qemu"))
    assert user.find("devices/interface").get("type") == "user"
    assert [b.get("dev") for b in user.findall("os/boot")] == ["hd"]
    none = parse_xml(build_domain_xml("a", "/d.raw", disk_format="raw", network="none", virt_type="qemu", machine="q35", cdrom="/c.iso"))
    assert none.find("devices/interface") is None
    assert none.findall("devices/disk")[1].find("target").get("bus") == "sata"
    assert none.find("devices/graphics") is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "../x"},
        {"name": "-x"},
        {"name": ""},
        {"disk": "relative.qcow2"},
        {"disk": "/d\n.qcow2"},
        {"memory_mib": 16},
        {"vcpus": 0},
        {"network": "bridge"},
        {"disk_format": "vmdk"},
        {"virt_type": "xen"},
    ],
)
def test_build_domain_xml_refuses_bad_settings(kwargs: dict) -> None:
    args = {"name": "cvm", "disk": "/d.qcow2", "virt_type": "qemu", **kwargs}
    with pytest.raises(InvalidRequest):
        build_domain_xml(args.pop("name"), args.pop("disk"), **args)


def test_built_xml_is_accepted_by_libvirt() -> None:
    with open_connection("test:///default") as conn:
        dom = conn.defineXML(build_domain_xml("cvm-built", "/tmp/cvm.qcow2", virt_type="qemu", network="user"))
        try:
            assert parse_xml(dom.XMLDesc(0)).find("devices/disk/source").get("file") == "/tmp/cvm.qcow2"
        finally:
            dom.undefine()


CAPS = """<capabilities><host/><guest><os_type>hvm</os_type><arch name='x86_64'>
<domain type='qemu'/>{kvm}</arch></guest></capabilities>"""


def test_detect_virt_type_from_capabilities() -> None:
    assert detect_virt_type(CAPS.format(kvm="<domain type='kvm'/>")) == "kvm"
    assert detect_virt_type(CAPS.format(kvm="")) == "qemu"
    assert detect_virt_type(CAPS.format(kvm="<domain type='kvm'/>"), arch="aarch64") == "qemu"
    assert detect_virt_type() in ("kvm", "qemu")


def test_lxml_parser_settings_hold_without_the_doctype_refusal() -> None:
    # Defence in depth: even a parser call that skipped the refusal would not expand entities.
    from vmlfs.hypervisor.domain_xml import _parser

    root = etree.fromstring(EXTERNAL_ENTITY.encode(), _parser())
    assert "root:" not in etree.tostring(root, encoding="unicode")


def test_user_network_forwards_ssh_from_loopback_only() -> None:
    xml = etree.fromstring(build_domain_xml("cvm", "/d.qcow2", network="user", ssh_forward=2222, virt_type="qemu").encode())
    ns = {"q": "http://libvirt.org/schemas/domain/qemu/1.0"}
    args = xml.xpath("q:commandline/q:arg/@value", namespaces=ns)
    assert args[:2] == ["-netdev", "user,id=vmlfsnet0,hostfwd=tcp:127.0.0.1:2222-:22"]
    assert args[2] == "-device" and args[3].startswith("virtio-net-pci,netdev=vmlfsnet0,")
    assert not xml.findall("devices/interface")  # the forwarded NIC is the only one
    with pytest.raises(InvalidRequest, match="needs network 'user'"):
        build_domain_xml("cvm", "/d.qcow2", network="nat", ssh_forward=2222, virt_type="qemu")


def test_every_domain_has_the_guest_agent_channel_and_a_console_log() -> None:
    xml = etree.fromstring(build_domain_xml("cvm", "/d.qcow2", virt_type="qemu", console_log="/pool/cvm-console.log",
                                            uuid="7a4e4a5e-0000-4000-8000-000000000001").encode())
    assert xml.xpath("devices/channel[@type='unix']/target[@type='virtio']/@name") == ["org.qemu.guest_agent.0"]
    assert xml.xpath("devices/rng[@model='virtio']/backend/text()") == ["/dev/urandom"]
    assert xml.xpath("devices/serial/log/@file") == ["/pool/cvm-console.log"]
    assert xml.findtext("uuid") == "7a4e4a5e-0000-4000-8000-000000000001"
