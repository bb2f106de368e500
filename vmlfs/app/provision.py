"""Provisioning: a new libvirt domain running an entry's CernVM release, with its environment restored.

One function, :func:`provision`, serves ``vmlfs provision`` and the mount's
``/control/provision``. It lives in the application layer because it needs
the store, the CernVM images, libvirt and SSH at once; each step is announced through ``report`` so both can
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vmlfs import hypervisor as hv
from vmlfs.app.refs import resolve_backup, split_ref
from vmlfs.app.restore import restore_into_ssh
from vmlfs.app.session import Session
from vmlfs.backends.connect import HostKeys, is_ssh, parse_guest_url, ssh_endpoint
from vmlfs.cernvm import contextualize, images
from vmlfs.engine.model import EntryConfig, VmSettings
from vmlfs.names import domain_name
from vmlfs.engine.restore import RestoreReport
from vmlfs.engine.store import StoreLayout
from vmlfs.errors import (
    AlreadyExists,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    VmlfsError,
)
from vmlfs.release.detect import parse_release
from vmlfs.release.versions import parse_version

log = logging.getLogger(__name__)

Report = Callable[[str], None]
Locate = Callable[[Any], tuple[str, int]]
SSH_TIMEOUT = 300.0
DISK_GIB = 20  # docs/cernvm-facts.md §5.2: CernVM wants a root disk of 20 GB or more
@dataclass(frozen=True)
class Target:
    """What to provision: an entry's backup (``ts`` None: no backups yet), or a bare release."""

    domain: str
    release: str
    entry: EntryConfig | None = None
    ts: str | None = None


def plan(store: StoreLayout, request: str) -> Target:
    """Resolve ``NAME``, ``NAME@TS`` (newest, ``latest`` or a unique prefix) or a CernVM release."""
    name, at, _ = request.partition("@")
    if not at and name not in store.entry_names():
        try:
            version = parse_version(name)
        except InvalidRequest:
            raise NotFound(f"no entry {name!r}, and it is not a CernVM release either") from None
        return Target(domain_name(f"cernvm-{version.text}"), version.text)
    cfg = store.load_entry(split_ref(request)[0])
    try:
        chosen: str | None = resolve_backup(store, request)[1]
    except NotFound:
        if at:
            raise
        chosen = None  # an entry without backups yet: a fresh domain of its release
    meta = store.meta(cfg.name, chosen) if chosen else None
    recorded = (meta.release if meta else None) or cfg.release
    if not recorded:
        raise InvalidRequest(f"entry {name!r} records no CernVM release", hint=f"vmlfs entry edit {name} --release VERSION")
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


@dataclass
class Provisioned:
    domain: str
    address: str
    report: RestoreReport | None
    warning: str | None


def provision(session: Session, target: Target, *, strict_release: bool = False, ssh_timeout: float = SSH_TIMEOUT,
              report: Report = log.info, locate: Locate | None = None) -> Provisioned:
    """Create, start and fill a domain for ``target`` (see the module docstring for the steps),
    through the session's libvirt connection and image repository."""
    store = session.store()
    settings = VmSettings.from_entry(target.entry.vm if target.entry else {})
    work = Path(settings.disk_dir or disks_dir()) / target.domain
    conn = session.libvirt().connection()
    try:
        hv.lookup_domain(conn, target.domain)
        raise AlreadyExists(f"domain {target.domain!r} already exists at {session.libvirt_uri}",
                            hint="name another domain with 'vmlfs entry edit --domain', or remove it")
    except NotFound:
        pass
    if work.exists():
        raise AlreadyExists(f"{work} already exists", hint="remove it if no domain uses it")
    report(f"fetching CernVM {target.release}")
    image = images.fetch(target.release, repo=session.image_repo)
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
        dom = hv.define_and_start(conn, xml, target.domain, lambda dom: contextualize.write_config_drive(
            work / "config.iso", target.domain, dom.UUIDString(), data, user_key))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if target.entry is not None and target.entry.domain is None:
        store.save_entry(replace(target.entry, domain=target.domain))
    report(f"waiting for SSH on {target.domain} (up to {ssh_timeout:.0f} s)")
    find = (lambda: locate(dom)) if locate else (lambda: ssh_endpoint(settings.ssh)) if settings.ssh else (lambda: hv.domain_address(dom))
    host, port = wait_for_ssh(find, ssh_timeout)
    shown = f"[{host}]:{port}" if port != 22 or ":" in host else host
    (work / "known_hosts").write_text(f"{shown} {' '.join(host_public.split()[:2])}\n")
    if target.entry is None or target.ts is None:
        report(f"{target.domain} is up at {host}:{port}; no backup to restore")
        return Provisioned(target.domain, f"{host}:{port}", None, None)
    user, path = "root", "/root"
    if is_ssh(target.entry.guest):
        old = parse_guest_url(target.entry.guest)
        user, path = old.user or "root", old.path or "/root"
    url = f"ssh://{user}@{'[' + host + ']' if ':' in host else host}:{port}{path}"
    report(f"restoring {target.entry.name}@{target.ts} into {url}")
    recorded = store.meta(target.entry.name, target.ts).release or target.entry.release
    restored, warning = restore_into_ssh(store, target.entry.name, target.ts, url, HostKeys(known_hosts=str(work / "known_hosts")),
                                         recorded=recorded, strict_release=strict_release)
    if warning:
        report(f"warning: {warning}")
    report(f"{target.domain} is up at {host}:{port} with {target.entry.name}@{target.ts}: {restored.files} files restored")
    return Provisioned(target.domain, f"{host}:{port}", restored, warning)
