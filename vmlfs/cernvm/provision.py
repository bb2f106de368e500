"""Provisioning: a new libvirt domain running an entry's CernVM release, with its environment restored.

One function, :func:`provision`, serves ``vmlfs provision`` and the mount's
``/control/provision``; each step is announced through ``report`` so both can
show progress. The steps:

1. fetch the release's image (:func:`vmlfs.cernvm.images.fetch`);
2. in a directory of its own (``$XDG_DATA_HOME/vmlfs/disks/<domain>/``): a
   qcow2 overlay backed by the image (or, for an ISO, an empty disk and the ISO
   as boot CD-ROM), a fresh SSH host key, and the ConfigDrive ISO that installs
   the user's public key and that host key (:mod:`vmlfs.cernvm.contextualize`);
3. define and start the domain (:func:`vmlfs.hypervisor.build_domain_xml`);
4. wait, bounded, until its sshd answers, then log in trusting only the host key
   we injected;
5. compare the backup's release with the guest's, detected by the same probe
   a backup uses (a warning; ``strict_release`` refuses before anything is
   written), and restore the backup into the guest over SSH.

Where the guest's sshd answers comes from the entry's ``vm.ssh`` setting
(``HOST:PORT``, e.g. a port forward) or libvirt's DHCP leases; ``locate``
replaces that lookup entirely (tests point it at a local sshd).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from vmlfs import hypervisor as hv
from vmlfs import names
from vmlfs.backends.store_layout import StoreLayout
from vmlfs.cernvm import contextualize, images
from vmlfs.cernvm.detect import check_release, parse_release
from vmlfs.cernvm.versions import parse_version
from vmlfs.engine.model import EntryConfig
from vmlfs.engine.restore import RestoreReport
from vmlfs.errors import (
    AlreadyExists,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    VmlfsError,
)
from vmlfs.hypervisor.connection import libvirt_errors
from vmlfs.hypervisor.domain_xml import domain_name

log = logging.getLogger(__name__)

Report = Callable[[str], None]
Locate = Callable[[Any], tuple[str, int]]
SSH_TIMEOUT = 300.0
DISK_GIB = 20  # facts §5.2: CernVM wants a root disk of 20 GB or more
VM_KEYS = {"memory": int, "cpus": int, "network": str, "ssh": str, "disk_dir": str}


@dataclass(frozen=True)
class VmSettings:
    """An entry's ``vm`` settings with defaults (facts §5: 2 GiB, 1 vCPU, NAT network ``default``)."""

    memory: int = 2048
    cpus: int = 1
    network: str = "nat"
    ssh: str | None = None
    disk_dir: str | None = None

    @classmethod
    def from_entry(cls, vm: dict[str, Any]) -> "VmSettings":
        for key, value in vm.items():
            if key not in VM_KEYS or not isinstance(value, VM_KEYS[key]) or isinstance(value, bool):
                raise InvalidRequest(f"invalid entry vm setting {key}={value!r}",
                                     hint=f"known settings: {', '.join(f'{k} ({t.__name__})' for k, t in VM_KEYS.items())}")
        settings = cls(**vm)
        if settings.ssh is not None:
            ssh_endpoint(settings.ssh)
        return settings


def ssh_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) checked like an SSH URL's host and port."""
    from vmlfs.backends.ssh_url import parse_ssh_url

    target = parse_ssh_url(f"ssh://{text}")
    if target.port is None or target.path or target.user:
        raise InvalidRequest(f"invalid SSH endpoint {text!r}", hint="use HOST:PORT, e.g. 127.0.0.1:2222")
    return target.host, target.port


@dataclass(frozen=True)
class Target:
    """What to provision: an entry's backup (``ts`` None: no backups yet), or a bare release."""

    domain: str
    release: str
    entry: EntryConfig | None = None
    ts: str | None = None


def plan(store: StoreLayout, request: str) -> Target:
    """Resolve ``NAME``, ``NAME@TS`` (newest, ``latest`` or a unique prefix) or a CernVM release."""
    name, at, ts = request.partition("@")
    if not at and name not in store.entry_names():
        try:
            version = parse_version(name)
        except InvalidRequest:
            raise NotFound(f"no entry {name!r}, and it is not a CernVM release either") from None
        return Target(domain_name(f"cernvm-{version.text}"), version.text)
    cfg = store.load_entry(names.entry_name(name))
    stamps = [r.timestamp for r in store.backups(cfg.name)]
    chosen = None
    if stamps:
        matches = stamps[-1:] if ts in ("", "latest") else [s for s in stamps if s.startswith(ts)]
        if len(matches) != 1:
            raise NotFound(f"entry {name!r} has {'no' if not matches else len(matches)} backups matching {ts!r}",
                           hint=f"see 'vmlfs list {name}'")
        chosen = matches[0]
    elif at:
        raise NotFound(f"entry {name!r} has no backups yet")
    meta = store.meta(cfg.name, chosen) if chosen else None
    recorded = (meta.release if meta else None) or cfg.release
    if not recorded:
        raise InvalidRequest(f"entry {name!r} records no CernVM release", hint=f"vmlfs entry add {name} --release VERSION")
    bootloader = parse_release(recorded).ucernvm
    if bootloader is None:
        raise InvalidRequest(f"entry {name!r} records release {recorded!r}, which names no µCernVM image version",
                             hint="record the bootloader version, e.g. --release 2021.05-1")
    return Target(domain_name(cfg.domain or cfg.name), bootloader.text, cfg, chosen)


def disks_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "vmlfs" / "disks"


def _make_disk(image: images.Fetched, disk: Path) -> Path | None:
    """The root disk; returns the ISO to boot from, if the release is an ISO."""
    fmt = image.release.files[0].format if image.release.files else image.path.suffix.lstrip(".")
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if fmt != "iso":
        argv += ["-F", "qcow2" if fmt == "qcow2" else "raw", "-b", str(image.path.resolve())]
    if shutil.which("qemu-img") is None:
        raise NotFound("qemu-img is not installed", hint="apt install qemu-utils")
    done = subprocess.run([*argv, str(disk), f"{DISK_GIB}G"], capture_output=True, text=True)
    if done.returncode != 0:
        raise VmlfsError(f"creating the disk {disk} failed: {done.stderr.strip()}")
    return image.path.resolve() if fmt == "iso" else None


def lease_address(dom: Any) -> tuple[str, int]:
    """The guest's IPv4 address from libvirt's DHCP leases (or its guest agent), port 22."""
    for source in (libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT):
        try:
            interfaces = dom.interfaceAddresses(source)
        except libvirt.libvirtError:
            continue
        for iface in interfaces.values():
            for addr in iface.get("addrs") or []:
                if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and not addr["addr"].startswith("127."):
                    return addr["addr"], 22
    raise ConnectionFailed("the guest has no address yet")


def wait_for_ssh(locate: Callable[[], tuple[str, int]], timeout: float) -> tuple[str, int]:
    """Poll until an SSH server greets at the located address; ConnectionFailed after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    why = "no attempt made"
    while True:
        try:
            host, port = locate()
            with socket.create_connection((host, port), timeout=5) as sock:
                sock.settimeout(5)
                if sock.recv(4).startswith(b"SSH-"):
                    return host, port
                why = f"{host}:{port} answered, but not as an SSH server"
        except ConnectionFailed as exc:
            why = exc.message
        except OSError as exc:
            why = exc.strerror or str(exc)
        if time.monotonic() >= deadline:
            raise ConnectionFailed(f"the guest's SSH did not answer within {timeout:.0f} s (last: {why})",
                                   hint="watch it boot with 'virsh console', or set the entry's vm ssh HOST:PORT")
        time.sleep(0.5)


def restore_into(store: StoreLayout, entry: str, ts: str, url: str, *, recorded: str | None, strict_release: bool,
                 known_hosts: str | None = None, accept_new_host_key: bool = False,
                 on_bytes: Callable[[int], None] = lambda n: None) -> tuple[RestoreReport, str | None]:
    """Restore ``entry@ts`` into ``ssh://...`` after comparing ``recorded`` with the guest's detected release.

    Returns the report and the release warning (None when they agree); with
    ``strict_release`` a mismatch raises before anything is written.
    """
    from vmlfs.backends.ssh_guest import SshGuest
    from vmlfs.backends.ssh_restore import restore_to_guest
    from vmlfs.backends.ssh_runner import SshConnection, SshOptions
    from vmlfs.backends.ssh_url import parse_ssh_url

    target = parse_ssh_url(url)
    conn = SshConnection(target, SshOptions(accept_new_host_key=accept_new_host_key, known_hosts=known_hosts))
    try:
        warning = check_release(recorded, SshGuest(conn, "/", target.display).release(), strict=strict_release)
        manifest = store.open_manifest(entry, ts)
        try:
            report = restore_to_guest(manifest, lambda layer: store.open_layer(entry, layer), conn, target.path or ".",
                                      on_bytes=on_bytes)
        finally:
            manifest.close()
    finally:
        conn.close()
    return report, warning


@dataclass
class Provisioned:
    domain: str
    address: str
    report: RestoreReport | None
    warning: str | None


def provision(store: StoreLayout, target: Target, *, uri: str, insecure: bool = False, strict_release: bool = False,
              repo: str | None = None, ssh_timeout: float = SSH_TIMEOUT, report: Report = log.info,
              locate: Locate | None = None, connection: Any = None) -> Provisioned:
    """Create, start and fill a domain for ``target`` (see the module docstring for the steps).

    ``connection`` is an open libvirt connection to use (the mount's) instead of
    opening one to ``uri``.
    """
    settings = VmSettings.from_entry(target.entry.vm if target.entry else {})
    work = Path(settings.disk_dir or disks_dir()) / target.domain
    opened = nullcontext(connection) if connection is not None else hv.open_connection(uri, insecure=insecure)
    with opened as conn:
        try:
            hv.lookup_domain(conn, target.domain)
            raise AlreadyExists(f"domain {target.domain!r} already exists at {uri}",
                                hint="name another domain with 'vmlfs entry add --domain', or remove it")
        except NotFound:
            pass
        if work.exists():
            raise AlreadyExists(f"{work} already exists", hint="remove it if no domain uses it")
        report(f"fetching CernVM {target.release}")
        image = images.fetch(target.release, repo=repo)
        report(f"creating {work}")
        work.mkdir(parents=True, mode=0o700)
        try:
            boot_iso = _make_disk(image, work / "disk.qcow2")
            host_public = contextualize.new_host_key(work)
            user_key = contextualize.user_public_key()
            data = contextualize.user_data(target.domain, user_key, (work / "ssh_host_ed25519_key").read_text(), host_public)
            xml = hv.build_domain_xml(target.domain, work / "disk.qcow2", memory_mib=settings.memory, vcpus=settings.cpus,
                                      cdrom=boot_iso, config_drive=work / "config.iso",
                                      network=settings.network,  # type: ignore[arg-type]
                                      virt_type=hv.detect_virt_type(conn.getCapabilities()))
            report(f"defining and starting domain {target.domain}")
            with libvirt_errors(f"defining domain {target.domain!r}"):
                dom = conn.defineXML(xml)
            contextualize.write_config_drive(work / "config.iso", target.domain, dom.UUIDString(), data, user_key)
            with libvirt_errors(f"starting domain {target.domain!r}"):
                try:
                    dom.create()
                except libvirt.libvirtError:
                    dom.undefine()
                    raise
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        if target.entry is not None and target.entry.domain is None:
            store.save_entry(EntryConfig(**{**target.entry.__dict__, "domain": target.domain}))
        report(f"waiting for SSH on {target.domain} (up to {ssh_timeout:.0f} s)")
        find = (lambda: locate(dom)) if locate else (lambda: ssh_endpoint(settings.ssh)) if settings.ssh else (lambda: lease_address(dom))
        host, port = wait_for_ssh(find, ssh_timeout)
    shown = f"[{host}]:{port}" if port != 22 or ":" in host else host
    (work / "known_hosts").write_text(f"{shown} {' '.join(host_public.split()[:2])}\n")
    if target.entry is None or target.ts is None:
        report(f"{target.domain} is up at {host}:{port}; no backup to restore")
        return Provisioned(target.domain, f"{host}:{port}", None, None)
    user, path = "root", "/root"
    if target.entry.guest.startswith("ssh://"):
        from vmlfs.backends.ssh_url import parse_ssh_url

        old = parse_ssh_url(target.entry.guest)
        user, path = old.user or "root", old.path or "/root"
    url = f"ssh://{user}@{'[' + host + ']' if ':' in host else host}:{port}{path}"
    report(f"restoring {target.entry.name}@{target.ts} into {url}")
    recorded = store.meta(target.entry.name, target.ts).release or target.entry.release
    restored, warning = restore_into(store, target.entry.name, target.ts, url, recorded=recorded,
                                     strict_release=strict_release, known_hosts=str(work / "known_hosts"))
    if warning:
        report(f"warning: {warning}")
    report(f"{target.domain} is up at {host}:{port} with {target.entry.name}@{target.ts}: {restored.files} files restored")
    return Provisioned(target.domain, f"{host}:{port}", restored, warning)
