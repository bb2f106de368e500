"""Provisioning: a new libvirt domain running an entry's CernVM release, with its environment restored.

One function, :func:`provision`, serves ``vmlfs provision`` and the mount's
``/control/provision``. It lives in the application layer because it needs
the store, the CernVM images, libvirt and SSH at once; each step is announced through ``report`` so both can
show progress. The steps:

1. fetch the release's image (:func:`vmlfs.cernvm.images.fetch`);
2. in a libvirt storage pool (the entry's ``vm.pool``, libvirt's ``default``
   otherwise; :mod:`vmlfs.hypervisor.storage`): the image as a base volume,
   a qcow2 volume backed by it (or, for an ISO, an empty disk and the ISO as
   boot CD-ROM), and the ConfigDrive that installs the user's public key, a
   fresh SSH host key, the backup's user account (:mod:`vmlfs.cernvm.contextualize`)
   and the login-shell script that applies its env.txt (:mod:`vmlfs.cernvm.environment`);
3. define and start the domain (:func:`vmlfs.hypervisor.build_domain_xml`:
   guest-agent channel, console copied into the pool);
4. wait, bounded, until its sshd answers, watching the domain: one that is
   paused, crashed or shut off fails at once with its console's last lines;
5. compare the backup's release with the guest's, detected by the same probe
   a backup uses (a warning; ``strict_release`` refuses before anything is
   written), and restore the backup into the guest over SSH, as its user;
   then its CernVM-FS cache part, if it has one (``with_cvmfs_cache`` None;
   True requires one, False skips it), over SSH as root (the ConfigDrive lets
   root in with the user's key) with the steps of :mod:`vmlfs.app.cvmfs`,
   before anything in the new VM mounts CernVM-FS from an empty cache;
6. record the new guest: on the entry (domain, SSH URL, ``vm.ssh``), or on a
   new entry (``as_new_entry``), and its host key in ``~/.ssh/known_hosts``.

Any failure (or interrupt) before the end removes the domain and its volumes
again, so a failed provisioning leaves nothing behind and can be retried;
the entry changes only once the guest works.

Where the guest's sshd answers: with ``vm.network`` ``user``, a port on the
hypervisor's 127.0.0.1 forwarded to the guest (``vm.ssh``'s port, else a free
one); else the entry's ``vm.ssh`` (``HOST:PORT``) or libvirt's DHCP leases;
``locate`` replaces that lookup entirely (tests point it at a local sshd).
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
import urllib.parse
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vmlfs import hypervisor as hv
from vmlfs.app.refs import resolve_backup, split_ref
from vmlfs.app.cvmfs import put_cache
from vmlfs.app.restore import restore_into_ssh
from vmlfs.app.session import Session
from vmlfs.backends import known_hosts
from vmlfs.backends.connect import HostKeys, is_ssh, parse_guest_url, ssh_endpoint
from vmlfs.cernvm import contextualize, environment, images
from vmlfs.engine.model import EntryConfig, VmSettings
from vmlfs.names import domain_name
from vmlfs.engine.restore import RestoreReport
from vmlfs.engine.store import StoreLayout
from vmlfs.errors import AlreadyExists, ConnectionFailed, InvalidRequest, NotFound, VmlfsError
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


def plan(store: StoreLayout, request: str, domain: str | None = None) -> Target:
    """Resolve ``NAME``, ``NAME@TS`` (newest, ``latest`` or a unique prefix) or a CernVM release;
    ``domain`` names the new domain (default: the entry's domain, else the entry's name)."""
    name, at, _ = request.partition("@")
    if not at and name not in store.entry_names():
        try:
            version = parse_version(name)
        except InvalidRequest:
            raise NotFound(f"no entry {name!r}, and it is not a CernVM release either") from None
        return Target(domain_name(domain or f"cernvm-{version.text}"), version.text)
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
    return Target(domain_name(domain or cfg.domain or cfg.name), bootloader.text, cfg, chosen)


def guest_account(store: StoreLayout, entry: str, ts: str, user: str, home: str, env: bytes) -> contextualize.Account | None:
    """The account to create for ``user`` (None for root): uid and gid of the backed-up home's top
    directory, its group's name, and the login shell the backup's environment ``env`` names."""
    if user == "root":
        return None
    manifest = store.open_manifest(entry, ts)
    try:
        top = manifest.root()
    finally:
        manifest.close()
    return contextualize.Account(user, top.uid, top.gid, top.gname or user, environment.login_shell(env), home)


def backup_environment(store: StoreLayout, entry: str, ts: str) -> bytes:
    """The backup's env.txt (empty for a backup that has none)."""
    try:
        return store.read_backup_file(entry, ts, "env.txt")
    except NotFound:
        return b""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _forward_port(settings: VmSettings, uri: str) -> int | None:
    """The 127.0.0.1 port forwarded to the guest's sshd with ``user`` networking (None otherwise)."""
    if settings.network != "user":
        return None
    if urllib.parse.urlsplit(uri).hostname not in (None, "", "localhost", "127.0.0.1"):
        raise InvalidRequest(f"--vm-network user forwards SSH to 127.0.0.1 of the hypervisor at {uri}, which this host cannot reach",
                             hint="use --vm-network nat with a remote hypervisor")
    if settings.ssh is None:
        return _free_port()
    host, port = ssh_endpoint(settings.ssh)
    if host not in ("127.0.0.1", "localhost"):
        raise InvalidRequest(f"with --vm-network user the guest's SSH is forwarded to 127.0.0.1, not {host}",
                             hint="set --vm-ssh 127.0.0.1:PORT, or leave it unset for a free port")
    return port


def wait_for_ssh(locate: Callable[[], tuple[str, int]], timeout: float,
                 watch: Callable[[], None] = lambda: None) -> tuple[str, int]:
    """Poll until an SSH server greets at the located address; ConnectionFailed after ``timeout`` s.
    ``watch`` runs before each attempt and raises to stop waiting (a domain that is no longer running)."""
    deadline = time.monotonic() + timeout
    why = "no attempt made"
    while True:
        watch()
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
    recorded: str | None = None
    """What was recorded of the new guest, in words (``entry e1 now ...``), None without an entry."""


def provision(session: Session, target: Target, *, strict_release: bool = False, ssh_timeout: float = SSH_TIMEOUT,
              report: Report = log.info, locate: Locate | None = None, as_new_entry: str | None = None,
              with_cvmfs_cache: bool | None = None) -> Provisioned:
    """Create, start and fill a domain for ``target`` (see the module docstring for the steps),
    through the session's libvirt connection and image repository."""
    store = session.store()
    if as_new_entry is not None and (target.entry is None or as_new_entry in store.entry_names()):
        raise (AlreadyExists(f"entry {as_new_entry!r} already exists") if target.entry else
               InvalidRequest("--as-new-entry needs an entry to copy, not a bare release"))
    settings = VmSettings.from_entry(target.entry.vm if target.entry else {})
    conn = session.libvirt().connection()
    try:
        hv.lookup_domain(conn, target.domain)
        raise AlreadyExists(f"domain {target.domain!r} already exists at {session.libvirt_uri}",
                            hint="name another domain with --domain, or remove it")
    except NotFound:
        pass
    pool = hv.open_pool(conn, settings.pool)
    for stale in hv.domain_volumes(pool, target.domain):
        report(f"removing {stale.name()}, left in pool {settings.pool} by an earlier provisioning of {target.domain}")
        hv.delete_volume(stale)
    forward = _forward_port(settings, session.libvirt_uri)
    user, path = "root", "/root"
    if target.entry is not None and is_ssh(target.entry.guest):
        old = parse_guest_url(target.entry.guest)
        user, path = old.user or "root", old.path or "/root"
    env, account = b"", None
    if target.entry is not None and target.ts is not None:
        env = backup_environment(store, target.entry.name, target.ts)
        account = guest_account(store, target.entry.name, target.ts, user, path, env)
    with_cache = _wants_cache(store, target, with_cvmfs_cache)
    report(f"fetching CernVM {target.release}")
    image = images.fetch(target.release, repo=session.image_repo)
    dom = None
    try:
        report(f"creating the disks of {target.domain} in storage pool {settings.pool}")
        base = hv.base_volume(pool, image.path.resolve())
        iso = image.release.files[0].format == "iso" if image.release.files else image.path.suffix == ".iso"
        disk = hv.overlay_volume(pool, f"{target.domain}-disk.qcow2", DISK_GIB,
                                 None if iso else hv.Disk(base.path(), hv.format_of(image.path)))
        host_private, host_public = contextualize.new_host_key()
        user_key = contextualize.user_public_key()
        uuid = str(uuid_module.uuid4())
        data = contextualize.user_data(target.domain, user_key, host_private, host_public, account,
                                       environment.profile_script(env, user) if env else None)
        with tempfile.TemporaryDirectory(prefix="vmlfs-provision-") as tmp:
            contextualize.write_config_drive(Path(tmp) / "config.iso", target.domain, uuid, data, user_key)
            config = hv.upload_volume(pool, f"{target.domain}-config.iso", Path(tmp) / "config.iso")
        xml = hv.build_domain_xml(target.domain, disk.path(), memory_mib=settings.memory, vcpus=settings.cpus,
                                  cdrom=base.path() if iso else None, config_drive=config.path(),
                                  network=settings.network,  # type: ignore[arg-type]
                                  ssh_forward=forward, uuid=uuid, console_log=hv.console_log_path(pool, target.domain),
                                  virt_type=hv.detect_virt_type(conn.getCapabilities()))
        report(f"defining and starting domain {target.domain}")
        dom = hv.define_and_start(conn, xml, target.domain)
        report(f"waiting for SSH on {target.domain} (up to {ssh_timeout:.0f} s)")
        find = ((lambda: locate(dom)) if locate else (lambda: ("127.0.0.1", forward)) if forward
                else (lambda: ssh_endpoint(settings.ssh)) if settings.ssh else (lambda: hv.domain_address(dom)))
        console = f"{target.domain}-console.log"
        host, port = wait_for_ssh(find, ssh_timeout, lambda: hv.watch_running(dom, lambda: hv.volume_tail(pool, console)))
        done = _fill(store, target, host, port, host_public, user, path, strict_release, report, with_cache)
        recorded = _record(store, target, as_new_entry, host, port, user, path, forward)
        trusted = known_hosts.trust(host, port, host_public)
        report(f"{target.domain}'s host key (the one vmlfs gave it) is now trusted in {trusted}")
    except BaseException:
        _remove(dom, pool, target.domain, report)
        raise
    if recorded:
        report(recorded)
    return replace(done, recorded=recorded)


def _wants_cache(store: StoreLayout, target: Target, asked: bool | None) -> bool:
    """Whether to put the backup's CernVM-FS cache into the new VM; asked for a cache it lacks: refused before anything starts."""
    part = store.meta(target.entry.name, target.ts).cvmfs if target.entry and target.ts else None
    if asked and part is None:
        what = f"{target.entry.name}@{target.ts} has no CernVM-FS cache part" if target.entry and target.ts else \
            "there is no backup to take a CernVM-FS cache from"
        raise NotFound(what, hint="provision without --with-cvmfs-cache, or from a backup taken with it")
    return part is not None and asked is not False


def _fill(store: StoreLayout, target: Target, host: str, port: int, host_public: str, user: str, path: str,
          strict_release: bool, report: Report, with_cache: bool) -> Provisioned:
    """Restore the backup (if there is one) into the new guest, as its user, trusting only the injected key."""
    if target.entry is None or target.ts is None:
        report(f"{target.domain} is up at {host}:{port}; no backup to restore")
        return Provisioned(target.domain, f"{host}:{port}", None, None)
    url = f"ssh://{user}@{'[' + host + ']' if ':' in host else host}:{port}{path}"
    report(f"restoring {target.entry.name}@{target.ts} into {url}")
    recorded = store.meta(target.entry.name, target.ts).release or target.entry.release
    with tempfile.TemporaryDirectory(prefix="vmlfs-provision-") as tmp:
        trusted = known_hosts.trust(host, port, host_public, Path(tmp) / "known_hosts")
        # The home is new: only the account's skeleton files (.bashrc, .profile) are there to replace.
        restored, warning = restore_into_ssh(store, target.entry.name, target.ts, url, HostKeys(known_hosts=str(trusted)),
                                             recorded=recorded, strict_release=strict_release, overwrite=True)
        if with_cache:
            root = f"ssh://root@{'[' + host + ']' if ':' in host else host}:{port}"
            report(f"putting the CernVM-FS cache of {target.entry.name}@{target.ts} into {root}")
            cache = put_cache(store, target.entry.name, target.ts, root, HostKeys(known_hosts=str(trusted)))
            for note in cache.notes:
                report(f"warning: {note}")
            report(f"CernVM-FS cache restored into {cache.where}: {cache.report.files} files")
    if warning:
        report(f"warning: {warning}")
    report(f"{target.domain} is up at {host}:{port} with {target.entry.name}@{target.ts}: {restored.files} files restored")
    return Provisioned(target.domain, f"{host}:{port}", restored, warning)


def _record(store: StoreLayout, target: Target, as_new_entry: str | None, host: str, port: int, user: str, path: str,
            forward: int | None) -> str | None:
    """Point the entry (or a new copy of it) at the new guest, so its next backup reads that one."""
    if target.entry is None:
        return None
    vm = {**target.entry.vm, **({"ssh": f"127.0.0.1:{forward}"} if forward else {})}
    url = f"ssh://{user}@{'[' + host + ']' if ':' in host else host}:{port}{path}"
    cfg = replace(target.entry, guest=url, domain=target.domain, vm=vm)
    if as_new_entry is not None:
        store.add_entry(replace(cfg, name=as_new_entry))
        return f"created entry {as_new_entry} for the new guest ({url}, domain {target.domain}); entry {target.entry.name} is unchanged"
    store.save_entry(cfg)
    return f"entry {target.entry.name} now backs up the new guest ({url}, domain {target.domain})"


def _remove(dom: Any, pool: Any, domain: str, report: Report) -> None:
    """Undo a provisioning that failed: the domain (stopped, undefined) and the volumes made for it."""
    try:
        if dom is not None:
            hv.remove_domain(dom)
        for vol in hv.domain_volumes(pool, domain):
            hv.delete_volume(vol)
        report(f"provisioning failed; domain {domain} and its volumes were removed")
    except VmlfsError as exc:
        report(f"provisioning failed, and cleaning up after it failed too: {exc}")
