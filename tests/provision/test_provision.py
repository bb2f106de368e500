"""``vmlfs provision`` and ``/control/provision`` end to end against a real libvirtd, with a stand-in guest.

The image comes from the fake release repository on 127.0.0.1 (a few hundred
KiB that boot nothing); the domain's volumes are made in the session's
storage pool and the domain is defined and started for real (SeaBIOS waits);
the "guest" is conftest.FakeBoot's sshd, started with the keys the
ConfigDrive volume carries. The environment must really land in the guest
directory over SSH. (tests/vm provisions a guest that boots.)
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import tree_listing
from tests.cvmfs_cache import cached_files, make_cache, objects
from tests.fs.conftest import make_guest, needs_fuse
from tests.provision.conftest import RELEASE, FakeBoot
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.engine.backup import run_backup
from vmlfs.engine.cvmfs import CvmfsSource

pytestmark = [pytest.mark.sshd, pytest.mark.libvirtd, pytest.mark.slow]


@pytest.fixture
def hypervisor(libvirtd: str, pool: str, monkeypatch) -> Iterator[tuple[str, Path]]:
    """(URI, pool directory) for VMLFS_LIBVIRT_URI; whatever a test provisioned is removed afterwards."""
    import libvirt

    from vmlfs import hypervisor as hv

    monkeypatch.setenv("VMLFS_LIBVIRT_URI", libvirtd)
    with hv.open_connection(libvirtd) as conn:
        directory = Path(hv.console_log_path(hv.open_pool(conn, pool), "x")).parent
    yield libvirtd, directory
    with hv.open_connection(libvirtd) as conn:
        for name in ("e1", "e2"):
            try:
                hv.remove_domain(conn.lookupByName(name))
            except libvirt.libvirtError:
                pass
            for vol in hv.domain_volumes(hv.open_pool(conn, pool), name):
                hv.delete_volume(vol)


def setup_entry(tmp_path: Path, boot: FakeBoot, pool: str) -> tuple[Path, Path, str]:
    """A store whose entry e1 (release 2020.07-1) has one backup; returns (store, restore target, ts)."""
    home = make_guest(tmp_path / "src", big_mib=1)
    target = tmp_path / "new guest" / "home"
    store = tmp_path / "store"
    vmlfs(store, "entry", "add", "e1", "--guest", f"ssh://root@cvm-old.invalid{target}", "--release", RELEASE,
          "--vm-memory", "128", "--vm-cpus", "1", "--vm-ssh", f"127.0.0.1:{boot.port}", "--vm-network", "none",
          "--vm-pool", pool)
    opened = LocalStore(store)
    ts = run_backup(opened, opened.load_entry("e1"), LocalGuest(home, release=RELEASE)).timestamp
    return store, target, ts


def vmlfs(store: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vmlfs", "--store", str(store), *args], capture_output=True, text=True,
                          timeout=120)
    assert not check or done.returncode == 0, done.stderr
    return done


def test_provision_restores_into_the_new_guest(tmp_path, client_home, fake_boot, release_repo, hypervisor, pool) -> None:
    store, target, ts = setup_entry(tmp_path, fake_boot, pool)
    fake_boot.watch(hypervisor[1] / "e1-config.iso")
    done = vmlfs(store, "provision", f"e1@{ts}", "--repo", release_repo.url, "--ssh-timeout", "60")
    url = f"ssh://root@127.0.0.1:{fake_boot.port}{target}"
    assert done.stdout == (f"e1 127.0.0.1:{fake_boot.port}\n"
                           f"entry e1 now backs up the new guest ({url}, domain e1)\n")
    assert tree_listing(target) == tree_listing(tmp_path / "src" / "home")
    # the release check ran against the detected guest (this host is no CernVM): a warning, not a refusal
    assert "warning: the guest runs release distro=" in done.stderr and RELEASE in done.stderr
    # the guest got the user's key and the host key vmlfs trusts, from the config drive ...
    assert fake_boot.user_data["ssh_authorized_keys"] == [(client_home / ".ssh/id_ed25519.pub").read_text().strip()]
    # ... which is now in the user's known_hosts, the one line for that address
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{fake_boot.port}", "-f", str(client_home / ".ssh/known_hosts")],
                           capture_output=True, text=True).stdout
    assert fake_boot.user_data["ssh_keys"]["ed25519_public"].split()[1] in found
    qemu = subprocess.run(["qemu-img", "info", "-U", str(hypervisor[1] / "e1-disk.qcow2")], capture_output=True, text=True).stdout
    assert "backing file: " in qemu and RELEASE in qemu and "virtual size: 20 GiB" in qemu
    entry = LocalStore(store).load_entry("e1")
    assert (entry.domain, entry.guest) == ("e1", url)  # the next backup reads the new guest


def test_provision_puts_the_cvmfs_cache_back_as_root(tmp_path, client_home, fake_boot, release_repo, hypervisor,
                                                    pool) -> None:
    store, target, _ = setup_entry(tmp_path, fake_boot, pool)
    base = tmp_path / "new guest" / "cvmfs-cache"  # the base the backup records: the stand-in guest is this host
    shared = make_cache(tmp_path / "old-cvmfs", objects(40))
    opened = LocalStore(store)
    ts = run_backup(opened, opened.load_entry("e1"), LocalGuest(tmp_path / "src" / "home", release=RELEASE),
                    cvmfs=CvmfsSource(LocalGuest(shared), str(base))).timestamp
    fake_boot.watch(hypervisor[1] / "e1-config.iso")
    done = vmlfs(store, "provision", f"e1@{ts}", "--repo", release_repo.url, "--ssh-timeout", "60")
    assert f"CernVM-FS cache restored into ssh://root@127.0.0.1:{fake_boot.port}{base}: 42 files" in done.stderr, done.stderr
    assert "the guest has no cvmfs user" in done.stderr  # this host is no CernVM-FS client: said, not failed
    assert cached_files(base / "shared") == cached_files(shared)


def test_as_new_entry_leaves_the_entry_as_it_was(tmp_path, client_home, fake_boot, release_repo, hypervisor, pool) -> None:
    store, target, ts = setup_entry(tmp_path, fake_boot, pool)
    before = LocalStore(store).load_entry("e1")
    fake_boot.watch(hypervisor[1] / "e2-config.iso")  # the new entry's name names the domain
    done = vmlfs(store, "provision", "e1", "--as-new-entry", "e2", "--repo", release_repo.url, "--ssh-timeout", "60")
    url = f"ssh://root@127.0.0.1:{fake_boot.port}{target}"
    assert done.stdout.splitlines()[1] == f"created entry e2 for the new guest ({url}, domain e2); entry e1 is unchanged"
    assert LocalStore(store).load_entry("e1") == before
    new = LocalStore(store).load_entry("e2")
    assert (new.guest, new.domain, new.release, new.vm) == (url, "e2", before.release, before.vm)
    refused = vmlfs(store, "provision", "e1", "--as-new-entry", "e2", "--repo", release_repo.url, check=False)
    assert refused.returncode != 0 and "entry 'e2' already exists" in refused.stderr


def test_a_missing_pool_fails_before_anything_is_fetched(tmp_path, client_home, fake_boot, release_repo, hypervisor) -> None:
    store, _target, _ts = setup_entry(tmp_path, fake_boot, "no-such-pool")
    done = vmlfs(store, "provision", "e1", "--repo", release_repo.url, check=False)
    assert done.returncode != 0
    assert "libvirt has no storage pool 'no-such-pool'" in done.stderr and "virsh pool-define-as" in done.stderr
    assert not release_repo.gets(".hdd")


def test_strict_release_refuses_before_writing(tmp_path, client_home, fake_boot, release_repo, hypervisor, pool) -> None:
    store, target, ts = setup_entry(tmp_path, fake_boot, pool)
    fake_boot.watch(hypervisor[1] / "e1-config.iso")
    done = vmlfs(store, "provision", "e1", "--strict-release", "--repo", release_repo.url, "--ssh-timeout", "60", check=False)
    assert done.returncode == 2, done.stderr
    assert "error: the guest runs release distro=" in done.stderr and "--strict-release" in done.stderr
    assert not target.exists()


def test_a_failed_provisioning_leaves_nothing_and_can_be_retried(tmp_path, client_home, fake_boot, release_repo,
                                                                 hypervisor, pool) -> None:
    store, target, _ts = setup_entry(tmp_path, fake_boot, pool)  # nothing boots: no watch()
    before = LocalStore(store).load_entry("e1")
    done = vmlfs(store, "provision", "e1", "--repo", release_repo.url, "--ssh-timeout", "1", check=False)
    assert done.returncode == 10
    assert "the guest's SSH did not answer within 1 s" in done.stderr
    assert "domain e1 and its volumes were removed" in done.stderr
    assert not list(hypervisor[1].glob("e1-*"))
    assert LocalStore(store).load_entry("e1") == before
    fake_boot.watch(hypervisor[1] / "e1-config.iso")
    vmlfs(store, "provision", "e1", "--repo", release_repo.url, "--ssh-timeout", "60")
    assert tree_listing(target) == tree_listing(tmp_path / "src" / "home")


def test_a_domain_that_stops_fails_the_wait_at_once(tmp_path, client_home, fake_boot, release_repo, hypervisor,
                                                    pool) -> None:
    store, _target, _ts = setup_entry(tmp_path, fake_boot, pool)
    proc = subprocess.Popen([sys.executable, "-m", "vmlfs", "--store", str(store), "provision", "e1", "--repo",
                             release_repo.url, "--ssh-timeout", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while subprocess.run(["virsh", "-c", hypervisor[0], "suspend", "e1"], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline and proc.poll() is None, "the domain never started"
        time.sleep(0.5)
    started = time.monotonic()
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.monotonic() - started < 30
    assert "domain 'e1' is paused" in err and "console" in err


@needs_fuse
def test_control_provision_through_the_mount(tmp_path, client_home, fake_boot, release_repo, mount_factory,
                                             monkeypatch, hypervisor, pool) -> None:
    store, target, ts = setup_entry(tmp_path, fake_boot, pool)
    monkeypatch.setenv("VMLFS_CERNVM_REPO", release_repo.url)
    mnt = mount_factory(store, "--libvirt-uri", hypervisor[0])
    control = mnt.path / "control"
    assert sorted(os.listdir(control)) == ["provision", "snapshot", "status"]
    with pytest.raises(OSError) as refused:
        (control / "provision").write_text("e1; rm -rf /\n")
    assert refused.value.errno == 22
    assert "refused provision request 'e1;" in (control / "status").read_text()
    (control / "provision").write_text(f"e1@{ts[:8]}\n")
    deadline = time.monotonic() + 120
    while "running: provisioning" not in (control / "status").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(OSError) as busy:  # the guest has not booted yet: refused at open, not at close
        open(control / "provision", "w").close()
    assert busy.value.errno == errno.EBUSY
    fake_boot.watch(hypervisor[1] / "e1-config.iso")
    while "provisioned e1@" not in (status := (control / "status").read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"provisioned e1@{ts[:8]}: domain e1 at 127.0.0.1:{fake_boot.port}" in status, status
    assert tree_listing(target) == tree_listing(tmp_path / "src" / "home")
