"""``vmlfs provision`` and ``/control/provision`` end to end against libvirt's test driver.

The image comes from the fake release repository on 127.0.0.1, the domain is
defined and started on ``test:///default``, and the "guest" is
conftest.FakeBoot's sshd, started with the keys our config drive carries; the
environment must really land in the guest directory over SSH.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tree_listing
from tests.fs.conftest import make_guest, needs_fuse
from tests.provision.conftest import RELEASE, FakeBoot
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.engine.backup import run_backup

pytestmark = pytest.mark.sshd


def setup_entry(tmp_path: Path, boot: FakeBoot) -> tuple[Path, Path, str]:
    """A store whose entry e1 (release 2020.07-1) has one backup; returns (store, restore target, ts)."""
    home = make_guest(tmp_path / "src", big_mib=1)
    target = tmp_path / "new guest" / "home"
    store = tmp_path / "store"
    vmlfs(store, "entry", "add", "e1", "--guest", f"ssh://root@cvm-old.invalid{target}", "--release", RELEASE,
          "--vm-memory", "1024", "--vm-cpus", "2", "--vm-ssh", f"127.0.0.1:{boot.port}")
    opened = LocalStore(store)
    ts = run_backup(opened, opened.load_entry("e1"), LocalGuest(home, release=RELEASE)).timestamp
    return store, target, ts


def vmlfs(store: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vmlfs", "--store", str(store), *args], capture_output=True, text=True,
                          timeout=120)
    assert not check or done.returncode == 0, done.stderr
    return done


def disk_dir() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "vmlfs" / "disks" / "e1"


def test_provision_restores_into_the_new_guest(tmp_path, client_home, fake_boot, release_repo) -> None:
    store, target, ts = setup_entry(tmp_path, fake_boot)
    fake_boot.watch(disk_dir() / "config.iso")
    done = vmlfs(store, "provision", f"e1@{ts}", "--libvirt-uri", "test:///default", "--repo", release_repo.url,
                 "--ssh-timeout", "30")
    assert done.stdout == f"e1 127.0.0.1:{fake_boot.port}\n"
    assert tree_listing(target) == tree_listing(tmp_path / "src" / "home")
    # the release check ran against the detected guest (this host is no CernVM): a warning, not a refusal
    assert "warning: the guest runs release distro=" in done.stderr and RELEASE in done.stderr
    # the guest got the user's key and the host key vmlfs trusts, from the config drive
    assert fake_boot.user_data["ssh_authorized_keys"] == [(client_home / ".ssh/id_ed25519.pub").read_text().strip()]
    assert (disk_dir() / "known_hosts").read_text().split()[1:] == (disk_dir() / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    qemu = subprocess.run(["qemu-img", "info", str(disk_dir() / "disk.qcow2")], capture_output=True, text=True).stdout
    assert "backing file: " in qemu and RELEASE in qemu and "virtual size: 20 GiB" in qemu
    assert LocalStore(store).load_entry("e1").domain == "e1"  # recorded for later --vm-snapshot backups


def test_strict_release_refuses_before_writing(tmp_path, client_home, fake_boot, release_repo) -> None:
    store, target, ts = setup_entry(tmp_path, fake_boot)
    fake_boot.watch(disk_dir() / "config.iso")
    done = vmlfs(store, "provision", "e1", "--strict-release", "--libvirt-uri", "test:///default",
                 "--repo", release_repo.url, "--ssh-timeout", "30", check=False)
    assert done.returncode == 2, done.stderr
    assert "error: the guest runs release distro=" in done.stderr and "--strict-release" in done.stderr
    assert not target.exists()


def test_ssh_timeout_is_a_clear_error(tmp_path, client_home, fake_boot, release_repo) -> None:
    store, _target, _ts = setup_entry(tmp_path, fake_boot)  # nothing boots: no watch()
    done = vmlfs(store, "provision", "e1", "--libvirt-uri", "test:///default", "--repo", release_repo.url,
                 "--ssh-timeout", "1", check=False)
    assert done.returncode == 10
    assert "the guest's SSH did not answer within 1 s" in done.stderr


@needs_fuse
def test_control_provision_through_the_mount(tmp_path, client_home, fake_boot, release_repo, mount_factory,
                                             monkeypatch) -> None:
    store, target, ts = setup_entry(tmp_path, fake_boot)
    monkeypatch.setenv("VMLFS_CERNVM_REPO", release_repo.url)
    mnt = mount_factory(store, "--libvirt-uri", "test:///default")
    control = mnt.path / "control"
    assert sorted(os.listdir(control)) == ["provision", "snapshot", "status"]
    with pytest.raises(OSError) as refused:
        (control / "provision").write_text("e1; rm -rf /\n")
    assert refused.value.errno == 22
    assert "refused provision request 'e1;" in (control / "status").read_text()
    (control / "provision").write_text(f"e1@{ts[:8]}\n")
    deadline = time.monotonic() + 60
    while "running: provisioning" not in (control / "status").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(OSError) as busy:  # the guest has not booted yet: refused at open, not at close
        open(control / "provision", "w").close()
    assert busy.value.errno == errno.EBUSY
    fake_boot.watch(disk_dir() / "config.iso")
    while "provisioned e1@" not in (status := (control / "status").read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"provisioned e1@{ts[:8]}: domain e1 at 127.0.0.1:{fake_boot.port}" in status, status
    assert tree_listing(target) == tree_listing(tmp_path / "src" / "home")
