"""Hypervisor fixtures: a libvirt test-driver node with a snapshot tree, and a real libvirtd.

The test driver keeps its state per connection (a file URI re-reads the file
on every open), so the node file seeds the snapshot tree every CLI call sees:

    base (running, "fresh install")
    ├── child (shut off)
    │   └── grandchild (running, current)
    └── sibling (running)
"""

from __future__ import annotations

import os
import shutil
import subprocess
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


# --- a real libvirtd -------------------------------------------------------------------------

SYSTEM_URI = "qemu:///system"
RUN_DIR = Path("/run/libvirt")


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
    for path in (Path("/var/log/libvirt"), RUN_DIR):
        path.mkdir(parents=True, exist_ok=True)


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
    lines = [line for line in path.read_text(errors="replace").splitlines() if " error : " in line or "rror" in line]
    return " | ".join(lines[-3:]) or "no output"


@pytest.fixture(scope="session")
def libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI of a running system libvirtd with QEMU: an existing one, or one started here.

    Started here means virtlogd first (QEMU's logs go through it), then
    libvirtd, both stopped at the end. libvirtd gets a private mount namespace
    in which /etc/libvirt is a copy with ``user = "root"`` in qemu.conf: QEMU
    can then open the test's disk and /dev/kvm whatever the host's group
    setup, and libvirt does not re-probe QEMU's capabilities on every define
    (it did, 40 s each, where /dev/kvm was root-only). The host's /etc is
    never changed.
    """
    if _alive(SYSTEM_URI):
        yield SYSTEM_URI
        return
    if os.geteuid() != 0:
        pytest.skip("starting a system libvirtd needs root")
    missing = [tool for tool in ("libvirtd", "virtlogd", "unshare", "qemu-img", "qemu-system-x86_64") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (apt install libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils)")
    _ensure_system_account()
    work = tmp_path_factory.mktemp("libvirtd")
    etc = work / "etc-libvirt"
    shutil.copytree("/etc/libvirt", etc, symlinks=True)
    (etc / "qemu.conf").write_text('user = "root"\ngroup = "root"\n')
    started: list[subprocess.Popen] = []
    try:
        log = work / "virtlogd.log"
        if not (RUN_DIR / "virtlogd-sock").exists():
            virtlogd = subprocess.Popen(["virtlogd"], stdout=open(log, "wb"), stderr=subprocess.STDOUT)
            started.append(virtlogd)
            if not _wait(lambda: (RUN_DIR / "virtlogd-sock").exists(), virtlogd, 10):
                pytest.skip(f"virtlogd did not start: {_tail(log)}")
        log = work / "libvirtd.log"
        daemon = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount --bind "$1" /etc/libvirt && exec libvirtd', "sh", str(etc)],
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
        )
        started.append(daemon)
        if not _wait(lambda: _alive(SYSTEM_URI), daemon, 30):
            pytest.skip(f"libvirtd did not start: {_tail(log)}")
        yield SYSTEM_URI
    finally:
        if started and _alive(SYSTEM_URI):
            _destroy_test_domains(SYSTEM_URI)  # libvirtd leaves running QEMUs behind when it stops
        for proc in reversed(started):
            _stop(proc)


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
def qemu_domain(libvirtd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(uri, name) of a running domain with a 16 MiB qcow2 disk and nothing to boot.

    SeaBIOS finds no bootable disk and waits; that is enough to run, pause,
    snapshot and revert. KVM when /dev/kvm is usable, TCG otherwise (and TCG
    again if KVM refuses to start, as under some nested setups).
    """
    import libvirt

    from vmlfs.hypervisor import build_domain_xml, detect_virt_type, open_connection

    work = tmp_path_factory.mktemp("domain")
    work.chmod(0o755)  # QEMU may run as libvirt-qemu on a pre-existing daemon
    disk = work / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    name = f"vmlfs-test-{os.getpid()}-{work.name}"[:64]
    with open_connection(libvirtd) as conn:
        dom = None
        for virt_type in dict.fromkeys([detect_virt_type(), "qemu"]):
            dom = conn.defineXML(build_domain_xml(name, disk, memory_mib=64, network="none", virt_type=virt_type))
            try:
                dom.create()
                break
            except libvirt.libvirtError:
                dom.undefine()
                if virt_type == "qemu":
                    raise
        try:
            yield libvirtd, name
        finally:
            if dom.isActive():
                dom.destroy()
            for snap in dom.listAllSnapshots(0):
                snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
            dom.undefine()
            shutil.rmtree(work, ignore_errors=True)
