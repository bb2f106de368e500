"""A real booted guest: a Debian 12 system dressed as a CernVM, under a real libvirtd, reached over loopback.

``guest_image`` builds the image once (``build-image.sh``, mmdebstrap) into
a cache CI keeps between runs, ``$VMLFS_TEST_IMAGE_CACHE`` or
``/var/cache/vmlfs-test-images/<hash of the recipe>/``: a changed recipe is a
new directory, so it is rebuilt. ``booted_guest`` boots it once per module
the way provisioning boots a CernVM (a volume in a storage pool backed by
the image, vmlfs's own ConfigDrive creating the user ``physicist`` with the
test's key and a host key the test knows), under TCG with QEMU user
networking: its sshd is reachable only as a forward on 127.0.0.1. Every
domain and volume is removed at the end. A test that cannot get there skips
and says why.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends.conftest import _free_port
from tests.hypervisor.conftest import libvirtd, pool  # noqa: F401  (the fixtures, shared)

RECIPE = Path(__file__).with_name("build-image.sh")
RELEASE = "2021.05-1"  # what the image's probe answers (/mnt/.rw/aux/ucernvm-version)
USER, UID, GID = "physicist", 1000, 1000
BOOT_TIMEOUT = 240.0


def image_cache() -> Path:
    return Path(os.environ.get("VMLFS_TEST_IMAGE_CACHE", "/var/cache/vmlfs-test-images"))


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """The guest's qcow2 image, built on first use (about 3 minutes) and cached by recipe hash."""
    digest = hashlib.sha256(RECIPE.read_bytes()).hexdigest()[:16]
    image = image_cache() / digest / f"ucernvm-prod.{RELEASE}.cernvm.x86_64.qcow2"
    if image.exists():
        return image
    missing = [t for t in ("mmdebstrap", "mke2fs", "mkfs.vfat", "mcopy", "syslinux", "sfdisk", "qemu-img") if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"building the guest image needs root and {', '.join(missing) or 'nothing else'} "
                    "(apt install mmdebstrap dosfstools mtools syslinux fdisk qemu-utils)")
    image.parent.mkdir(parents=True, exist_ok=True)
    image.parent.chmod(0o755)
    with open(image.parent / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building the same recipe
        if not image.exists():
            log = image.parent / "build.log"
            with open(log, "wb") as out:
                done = subprocess.run([str(RECIPE), str(image), str(image.parent / "work")], stdout=out,
                                      stderr=subprocess.STDOUT, timeout=1800)
            if done.returncode != 0:
                pytest.skip(f"building the guest image failed: {log.read_text(errors='replace')[-600:]}")
    return image


@dataclass
class Guest:
    uri: str
    pool: str
    domain: str
    port: int
    client: Path
    """A HOME with the SSH key the guest accepts and a known_hosts holding the guest's host key."""

    @property
    def url(self) -> str:
        return f"ssh://{USER}@127.0.0.1:{self.port}/home/{USER}"

    def ssh(self, command: str, *, user: str = USER, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["ssh", "-F", "none", "-p", str(self.port), "-i", str(self.client / ".ssh" / "id_ed25519"),
             "-o", f"UserKnownHostsFile={self.client / '.ssh' / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
             "-o", "BatchMode=yes", f"{user}@127.0.0.1", command], capture_output=True, timeout=timeout)
        assert not check or done.returncode == 0, done.stderr.decode(errors="replace")
        return done

    def env(self) -> dict[str, str]:
        """The environment for a vmlfs subprocess acting as this client."""
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "VMLFS_CERNVM_IMAGE_DIRS")}
        env.update(HOME=str(self.client), XDG_CACHE_HOME=str(self.client / ".cache"), VMLFS_LIBVIRT_URI=self.uri)
        return env


def make_client(base: Path) -> Path:
    home = base / "client"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id_ed25519")], check=True)
    return home


def boot(uri: str, pool_name: str, image: Path, name: str, client: Path) -> Guest:
    """Define and start ``name`` from ``image`` as provisioning would, and wait for its sshd."""
    import libvirt

    from vmlfs import hypervisor as hv
    from vmlfs.app.provision import wait_for_ssh
    from vmlfs.backends import known_hosts
    from vmlfs.cernvm import contextualize

    conn = libvirt.open(uri)
    try:
        pool = hv.open_pool(conn, pool_name)
        base = hv.base_volume(pool, image)
        disk = hv.overlay_volume(pool, f"{name}-disk.qcow2", 4, hv.Disk(base.path(), "qcow2"))
        private, public = contextualize.new_host_key()
        key = (client / ".ssh" / "id_ed25519.pub").read_text().strip()
        account = contextualize.Account(USER, UID, GID, USER, "/bin/bash", f"/home/{USER}")
        domain_uuid = str(uuid.uuid4())
        with tempfile.TemporaryDirectory() as tmp:
            iso = Path(tmp) / "config.iso"
            contextualize.write_config_drive(iso, name, domain_uuid, contextualize.user_data(name, key, private, public, account), key)
            config = hv.upload_volume(pool, f"{name}-config.iso", iso)
        port = _free_port()
        xml = hv.build_domain_xml(name, disk.path(), memory_mib=768, network="user", ssh_forward=port, uuid=domain_uuid,
                                  config_drive=config.path(), console_log=hv.console_log_path(pool, name), virt_type="qemu")
        dom = hv.define_and_start(conn, xml, name)
        guest = Guest(uri, pool_name, name, port, client)
        try:
            started = time.monotonic()
            wait_for_ssh(lambda: ("127.0.0.1", port), BOOT_TIMEOUT,
                         lambda: hv.watch_running(dom, lambda: hv.volume_tail(pool, f"{name}-console.log")))
            known_hosts.trust("127.0.0.1", port, public, client / ".ssh" / "known_hosts")
            # sshd answers before cloud-init has made the user: wait until it has finished.
            while (done := guest.ssh("cloud-init status --wait >/dev/null; id -u", user="root", check=False)).returncode:
                assert time.monotonic() - started < BOOT_TIMEOUT, (
                    f"cannot log in as root: {done.stderr.decode(errors='replace')}; console:\n"
                    + hv.volume_tail(pool, f"{name}-console.log", lines=60))
                time.sleep(2)
            print(f"\nguest {name} booted in {time.monotonic() - started:.0f} s")
        except BaseException:
            destroy(uri, pool_name, name)
            raise
        return guest
    finally:
        conn.close()


def destroy(uri: str, pool_name: str, name: str) -> None:
    import libvirt

    from vmlfs import hypervisor as hv

    conn = libvirt.open(uri)
    try:
        try:
            hv.remove_domain(conn.lookupByName(name))
        except libvirt.libvirtError:
            pass
        pool = hv.open_pool(conn, pool_name)
        for vol in hv.domain_volumes(pool, name):
            hv.delete_volume(vol)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def booted_guest(libvirtd: str, pool: str, guest_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:  # noqa: F811
    if shutil.which("ssh") is None:
        pytest.skip("needs the OpenSSH client")
    name = f"vmlfs-guest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    client = make_client(tmp_path_factory.mktemp("guest"))
    guest = boot(libvirtd, pool, guest_image, name, client)
    try:
        yield guest
    finally:
        destroy(libvirtd, pool, name)
