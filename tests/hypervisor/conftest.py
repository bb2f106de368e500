"""Hypervisor fixtures: a libvirt test-driver node with a snapshot tree, and a real libvirtd.

The test driver keeps its state per connection (a file URI re-reads the file
on every open), so the node file seeds the snapshot tree every CLI call sees:

    base (running, "fresh install")
    ├── child (shut off)
    │   └── grandchild (running, current)
    └── sibling (running)
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_DOMAIN = "<domain type='test'><name>cvm</name><memory>1048576</memory><os><type arch='x86_64'>hvm</type></os></domain>"


def _snapshot(name: str, state: str, created: int, parent: str | None, *, current: bool = False, description: str = "") -> str:
    return (
        f"<test:domainsnapshot><name>{name}</name>"
        + (f"<description>{description}</description>" if description else "")
        + f"<state>{state}</state><creationTime>{created}</creationTime>"
        + (f"<parent><name>{parent}</name></parent>" if parent else "")
        + f"<active>{int(current)}</active>{_DOMAIN}</test:domainsnapshot>"
    )


NODE_XML = (
    "<node><domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
    "<name>cvm</name><memory>1048576</memory><os><type arch='x86_64'>hvm</type></os>"
    + _snapshot("base", "running", 1700000000, None, description="fresh install")
    + _snapshot("child", "shutoff", 1700000100, "base")
    + _snapshot("sibling", "running", 1700000200, "base")
    + _snapshot("grandchild", "running", 1700000300, "child", current=True)
    + "</domain></node>"
)


@pytest.fixture
def node_uri(tmp_path: Path) -> str:
    """A test-driver URI whose running domain ``cvm`` has the snapshot tree above."""
    path = tmp_path / "node.xml"
    path.write_text(NODE_XML)
    return f"test://{path}"


_COUNTER = itertools.count()

# --- a real libvirtd -------------------------------------------------------------------------

SYSTEM_URI = "qemu:///system"
# Directories a system libvirtd keeps state in; a daemon started here gets private ones.
PRIVATE_DIRS = ("/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")


def _alive(uri: str) -> bool:
    from vmlfs.errors import ConnectionFailed
    from vmlfs.hypervisor import open_connection

    try:
        with open_connection(uri) as conn:
            conn.getVersion()
    except ConnectionFailed:
        return False
    return True


def _ensure_system_account() -> None:
    """Debian's libvirt runs QEMU as libvirt-qemu by default and will not start without it."""
    if subprocess.run(["getent", "group", "libvirt-qemu"], capture_output=True).returncode != 0:
        subprocess.run(["groupadd", "--system", "libvirt-qemu"], check=True)
    if subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "-g", "libvirt-qemu", "-d", "/var/lib/libvirt", "-s", "/usr/sbin/nologin", "libvirt-qemu"],
            check=True,
        )


def _wait(check, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path) -> str:
    text = path.read_text(errors="replace").splitlines()
    lines = [line for line in text if " error : " in line or "rror" in line] or [line for line in text if line.strip()]
    return " | ".join(lines[-3:]) or "no output"


def _private_state(work: Path) -> list[str]:
    """Copies of libvirt's state directories (modes and owners kept) for a daemon of our own; returns
    the bind mounts that put them in place. Definitions are left out: the copy starts with no domains,
    pools or networks (so no bridge is ever made on this host), only the configuration as shipped."""
    mounts = []
    for path in PRIVATE_DIRS:
        copy = work / path.strip("/").replace("/", "-")
        if os.path.isdir(path):
            subprocess.run(["cp", "-a", path, str(copy)], check=True)
        else:
            # The mount point must exist: /run/libvirt is made by the service's first start, which a
            # machine that installed libvirt but never started it (no systemd) has not had.
            os.makedirs(path, exist_ok=True)
            copy.mkdir()
        mounts.append(f'mount --bind "{copy}" "{path}"')
    etc = work / "etc-libvirt"
    for definitions in ("qemu", "storage", "secrets", "nwfilter"):
        shutil.rmtree(etc / definitions, ignore_errors=True)
    for runtime in ("run-libvirt", "var-lib-libvirt-qemu"):
        for stale in (work / runtime).glob("*"):
            if stale.is_file() or stale.is_symlink():
                stale.unlink()
    return mounts


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[str]:
    """The URI of a running system-mode libvirtd with QEMU, started here when we may, else an existing one.

    Started here: a libvirtd and its virtlogd in a private mount namespace
    with private copies of libvirt's state directories, reached by its own
    socket (``qemu:///system?socket=...``). Other test sessions on this host
    neither see it nor disturb it, and its configuration is the one the
    distribution ships: on Debian, QEMU runs as ``libvirt-qemu``, so disks
    must be where that user can read them (:func:`pool`).
    """
    missing = [tool for tool in ("libvirtd", "virtlogd", "unshare", "qemu-img", "qemu-system-x86_64") if not shutil.which(tool)]
    if os.geteuid() != 0 or missing:
        if _alive(SYSTEM_URI):
            yield SYSTEM_URI
            return
        pytest.skip("starting a libvirtd needs root" if missing == [] else
                    f"missing {', '.join(missing)} (apt install libvirt-daemon-system qemu-system-x86 qemu-utils)")
    _ensure_system_account()
    work = Path(tempfile.mkdtemp(prefix="vmlfs-libvirtd-", dir="/var/tmp"))
    work.chmod(0o755)  # pools live below it: QEMU's user must traverse it
    mounts = _private_state(work)
    run = work / "run-libvirt"
    uri = f"{SYSTEM_URI}?socket={run}/libvirt-sock"
    log = work / "libvirtd.log"
    if os.path.exists("/dev/kvm") and not os.environ.get("VMLFS_TEST_KVM"):
        # The CI machines' /dev/kvm is a nested hypervisor on which guests do not boot, and one that
        # QEMU's user cannot open makes libvirt re-probe QEMU on every define (about a minute each).
        # The daemon's /dev/kvm is an empty file: it offers TCG only. VMLFS_TEST_KVM=1 keeps KVM.
        # (QEMU then runs in the daemon's mount namespace, not one per domain: libvirt cannot move
        # a file mounted over a device into a domain's /dev.)
        (work / "no-kvm").touch(mode=0o600)
        mounts.append(f'mount --bind "{work / "no-kvm"}" /dev/kvm')
        with open(work / "etc-libvirt" / "qemu.conf", "a") as conf:
            conf.write("\nnamespaces = []\n")
    script = " && ".join(mounts) + f' && (virtlogd -p "{run}/virtlogd.pid" &) && exec libvirtd -p "{run}/libvirtd.pid"'
    daemon = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        if not _wait(lambda: _alive(uri), daemon, 60):
            pytest.skip(f"libvirtd did not start: {_tail(log)}")
        yield uri
    finally:
        if _alive(uri):
            _destroy_test_domains(uri)  # libvirtd leaves running QEMUs behind when it stops
        _stop(daemon)
        pidfile = run / "virtlogd.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def pool(libvirtd: str) -> Iterator[str]:
    """The name of a storage pool of this session, made, started, and at the end emptied and removed
    through libvirt, as provisioning uses a pool: libvirt gives the directory the permissions QEMU
    needs, whichever user QEMU runs as."""
    import libvirt

    name = f"vmlfs-test-{os.getpid()}"
    target = Path(tempfile.mkdtemp(prefix="vmlfs-pool-", dir="/var/tmp"))
    target.chmod(0o755)
    conn = libvirt.open(libvirtd)
    try:
        made = conn.storagePoolDefineXML(
            f"<pool type='dir'><name>{name}</name><target><path>{target}</path></target></pool>", 0)
        try:
            made.build(0)
            made.create(0)
            yield name
        finally:
            if made.isActive():
                for vol in made.listAllVolumes(0):
                    vol.delete(0)
                made.destroy()
            made.undefine()
            shutil.rmtree(target, ignore_errors=True)
    finally:
        conn.close()


def _destroy_test_domains(uri: str) -> None:
    """Stop every domain a test of this suite left running on the daemon started here."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            if dom.name().startswith("vmlfs-test-"):
                dom.destroy()
    finally:
        conn.close()


@pytest.fixture
def qemu_domain(libvirtd: str, pool: str) -> Iterator[tuple[str, str]]:
    """(uri, name) of a running domain with a 16 MiB qcow2 disk and nothing to boot.

    SeaBIOS finds no bootable disk and waits; that is enough to run, pause,
    snapshot and revert. KVM when libvirt offers it, TCG otherwise (and TCG
    again if KVM refuses to start, as under some nested setups).
    """
    import libvirt

    from vmlfs.hypervisor import build_domain_xml, detect_virt_type, open_connection
    from vmlfs.hypervisor import storage

    name = f"vmlfs-test-{os.getpid()}-{next(_COUNTER)}"
    with open_connection(libvirtd) as conn:
        disk = storage.overlay(storage.open_pool(conn, pool), f"{name}-disk.qcow2", 1, None)
        dom = None
        try:
            for virt_type in dict.fromkeys([detect_virt_type(conn.getCapabilities()), "qemu"]):
                dom = conn.defineXML(build_domain_xml(name, disk.path(), memory_mib=64, network="none", virt_type=virt_type))
                try:
                    dom.create()
                    break
                except libvirt.libvirtError:
                    dom.undefine()
                    dom = None
                    if virt_type == "qemu":
                        raise
            yield libvirtd, name
        finally:
            if dom is not None:
                if dom.isActive():
                    dom.destroy()
                for snap in dom.listAllSnapshots(0):
                    snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
                dom.undefine()
            storage.delete(disk)
