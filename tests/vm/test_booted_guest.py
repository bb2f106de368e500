"""Backups, restore and consistent VM snapshots of a real booted guest (see conftest.py), through the CLI.

The guest's home gets what a physicist's has (a 50 MB ROOT-like file,
dotfiles, history, links, a hardlink); the tests then run in order on the one
guest booted for this module. Timings are printed (``-s``) for the report:
vmlfs against ``ssh guest tar cf - .`` of the same home.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cvmfs_cache import make_cache
from tests.cvmfs_cache import objects as cache_objects
from tests.vm.conftest import USER, Guest

pytestmark = [pytest.mark.vm, pytest.mark.slow]

HOME_SETUP = r"""
set -e
cd ~
mkdir -p analysis/macros data .config/root
head -c 52428800 /dev/urandom > data/hsimple.root
for i in $(seq 1 200); do echo "void m$i() { printf(\"$i\\n\"); }" > analysis/macros/m$i.C; done
printf 'export ROOTSYS=/cvmfs/sft.cern.ch/lcg/releases/ROOT\nalias ll="ls -l"\n' >> .bashrc
printf 'root -l hsimple.root\nls -la\ncd analysis\n' > .bash_history
echo 'Rint.History: ~/.root_hist' > .config/root/rootrc
ln -s data/hsimple.root latest.root
ln -s /cvmfs/sft.cern.ch/nowhere dangling
ln analysis/macros/m1.C hardlinked.C
touch -d '2021-05-01 12:00:00.123456789' analysis/macros/m2.C
"""
# Everything a restore must reproduce, as the guest sees it (names, types, modes, owners, ns mtimes, sizes, targets,
# contents, hardlink counts).
LISTING = "cd {path} && find . -mindepth 1 -path ./restored -prune -o -printf '%p %y %m %u %g %T@ %s %l %n\\n' | LC_ALL=C sort && " \
          "find . -path ./restored -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum"


def vmlfs(guest: Guest, store, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vmlfs", "--store", str(store), *args], env=guest.env(),
                          capture_output=True, text=True, timeout=timeout)
    assert not check or done.returncode == 0, f"vmlfs {' '.join(args)}: {done.stderr}"
    return done


def timed(what: str, action):
    started = time.monotonic()
    result = action()
    print(f"\n[timing] {what}: {time.monotonic() - started:.1f} s")
    return result


@pytest.fixture(scope="module")
def store(booted_guest: Guest, tmp_path_factory):
    """A store with entry ``cvm`` for the guest's home (the home filled first)."""
    booted_guest.ssh(HOME_SETUP)
    path = tmp_path_factory.mktemp("store") / "store"
    vmlfs(booted_guest, path, "entry", "add", "cvm", "--guest", booted_guest.url, "--domain", booted_guest.domain,
          "--release", "2021.05-1")
    return path


def test_qemu_runs_as_the_distribution_configures_it(booted_guest: Guest) -> None:
    """On Debian that is libvirt-qemu: the disks are readable by it because they are pool volumes."""
    try:
        expected = pwd.getpwnam("libvirt-qemu").pw_uid
    except KeyError:
        pytest.skip("this distribution runs QEMU as no libvirt-qemu user")
    owners = [p.stat().st_uid for p in Path("/proc").iterdir()
              if p.name.isdigit() and f"guest={booted_guest.domain}".encode() in _cmdline(p)]
    assert owners == [expected]


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_backups_over_ssh_full_then_unchanged(booted_guest: Guest, store) -> None:
    timed("ssh guest tar cf - . (the same home, to /dev/null)",
          lambda: subprocess.run(["ssh", "-F", "none", "-p", str(booted_guest.port), "-i", str(booted_guest.client / ".ssh/id_ed25519"),
                                  "-o", f"UserKnownHostsFile={booted_guest.client / '.ssh/known_hosts'}", "-o", "BatchMode=yes",
                                  f"{USER}@127.0.0.1", "tar cf - ."], stdout=subprocess.DEVNULL, check=True, timeout=600))
    full = timed("vmlfs backup (full)", lambda: vmlfs(booted_guest, store, "backup", "cvm"))
    assert "full" in full.stdout + full.stderr
    again = timed("vmlfs backup (no change, incremental)", lambda: vmlfs(booted_guest, store, "backup", "cvm"))
    assert "incremental" in again.stdout + again.stderr
    listing = vmlfs(booted_guest, store, "ls", "cvm", "").stdout
    for name in ("data", "analysis", ".bash_history", "latest.root", "dangling", "hardlinked.C"):
        assert name in listing


def test_restore_into_the_running_guest(booted_guest: Guest, store) -> None:
    target = f"/home/{USER}/restored"
    full, incremental = (line.split()[0] for line in vmlfs(booted_guest, store, "list", "cvm").stdout.splitlines()[-2:])
    timed("vmlfs restore of the full backup into the guest over SSH",
          lambda: vmlfs(booted_guest, store, "restore", f"cvm@{full}", f"ssh://{USER}@127.0.0.1:{booted_guest.port}{target}"))
    booted_guest.ssh(f"rm -rf {target}")
    timed("vmlfs restore of the no-change incremental into the guest over SSH",
          lambda: vmlfs(booted_guest, store, "restore", f"cvm@{incremental}", f"ssh://{USER}@127.0.0.1:{booted_guest.port}{target}"))
    original = booted_guest.ssh(LISTING.format(path="~")).stdout
    restored = booted_guest.ssh(LISTING.format(path=target)).stdout
    assert restored == original and b"hsimple.root" in restored
    refused = vmlfs(booted_guest, store, "restore", "cvm", f"ssh://{USER}@127.0.0.1:{booted_guest.port}{target}", check=False)
    assert refused.returncode != 0 and "exist" in refused.stderr
    booted_guest.ssh(f"rm -rf {target}")


def _writable(guest: Guest) -> bool:
    """The guest's root file system takes a write (and a sync) within 20 s: not frozen. (On a frozen
    guest even the login hangs, writing its records.)"""
    try:
        return guest.ssh("timeout 20 sh -c 'date > ~/written && sync' && cat ~/written", check=False, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def test_consistent_snapshot_leaves_and_reverts_to_a_working_guest(booted_guest: Guest, store) -> None:
    done = timed("vmlfs backup --vm-snapshot --consistent",
                 lambda: vmlfs(booted_guest, store, "backup", "cvm", "--vm-snapshot", "--consistent"))
    assert "vmlfs-" in done.stdout + done.stderr
    state = vmlfs(booted_guest, store, "vm", "list").stdout
    assert f"{booted_guest.domain}" in state and "running" in state.split(booted_guest.domain, 1)[1].splitlines()[0]
    assert _writable(booted_guest), "the guest was left frozen after the backup"
    snapshot = vmlfs(booted_guest, store, "vm", "snapshots", booted_guest.domain).stdout.split()[0]
    booted_guest.ssh("echo after > ~/after-snapshot")
    reverted = timed("vmlfs vm revert", lambda: vmlfs(booted_guest, store, "vm", "revert", booted_guest.domain, snapshot))
    assert "now running" in reverted.stdout
    assert _writable(booted_guest), "the reverted guest cannot write: its file systems are frozen"
    assert booted_guest.ssh("test -e ~/after-snapshot", check=False).returncode == 1  # it really went back


def test_an_interrupted_consistent_backup_thaws_the_guest(booted_guest: Guest, store) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "vmlfs", "--store", str(store), "backup", "cvm", "--consistent", "--checksum"],
                            env=booted_guest.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not _frozen(booted_guest):
        assert proc.poll() is None and time.monotonic() < deadline, "the backup never froze the guest"
        time.sleep(0.2)
    proc.terminate()
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert _writable(booted_guest), "SIGTERM during a consistent backup left the guest frozen"


def _frozen(guest: Guest) -> bool:
    done = subprocess.run(["virsh", "-c", guest.uri, "qemu-agent-command", guest.domain, '{"execute":"guest-fsfreeze-status"}'],
                          capture_output=True, text=True, timeout=30)
    return '"frozen"' in done.stdout


def _wait_status(path: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while text not in (status := path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return status


def test_the_mounts_control_files_back_up_snapshot_and_revert_the_real_guest(booted_guest: Guest, store, tmp_path) -> None:
    """touch control/snapshot takes a consistent backup with a VM snapshot (the entry's defaults), as
    'vmlfs backup' does; echo NAME > control/vm-revert reverts to it; the guest works afterwards."""
    vmlfs(booted_guest, store, "entry", "edit", "cvm", "--vm-snapshot", "--consistent")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    vmlfs(booted_guest, store, "mount", str(mountpoint), "--log-file", str(tmp_path / "mount.log"))
    try:
        entry = mountpoint / "entries" / "cvm"
        before = {n for n in os.listdir(entry) if n[:1].isdigit()}
        started = time.monotonic()
        os.utime(entry / "control" / "snapshot")
        status = _wait_status(entry / "control" / "status", "backup: ", timeout=300)
        print(f"\n[timing] touch control/snapshot to the backup in status: {time.monotonic() - started:.1f} s")
        assert "VM snapshot vmlfs-" in status and "last error: none" in status, status
        (ts,) = {n for n in os.listdir(entry) if n[:1].isdigit()} - before
        assert (entry / ts / "home" / ".bashrc").read_bytes() == booted_guest.ssh("cat ~/.bashrc").stdout
        assert _writable(booted_guest), "the backup through the mount left the guest frozen"
        snapshot = json.loads((entry / ts / "info.json").read_text())["vm_snapshot"]
        assert f"{snapshot}.xml" in os.listdir(entry / "vm")

        booted_guest.ssh("echo after > ~/after-mount-snapshot")
        (entry / "control" / "vm-revert").write_text(f"{snapshot}\n")
        status = _wait_status(entry / "control" / "status", f"to snapshot {snapshot}", timeout=300)
        assert f"reverted domain {booted_guest.domain} to snapshot {snapshot}; it is now running" in status, status
        assert _writable(booted_guest), "the guest reverted through the mount cannot write"
        assert booted_guest.ssh("test -e ~/after-mount-snapshot", check=False).returncode == 1
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
        vmlfs(booted_guest, store, "entry", "edit", "cvm", "--no-vm-snapshot", "--no-consistent", check=False)


CACHE_BASE = "/mnt/.rw/cvmfs-cache"  # CernVM 4's default: the guest has no /etc/cvmfs that says otherwise


def test_the_cvmfs_cache_goes_back_into_the_guest_before_cvmfs_mounts(booted_guest: Guest, store, tmp_path) -> None:
    """A client cache laid out as a real one, on the guest at CernVM 4's base: backed up with the home as
    root, removed, then put back by restore as root, owned by the cvmfs account, every object and
    checksum file byte-exact, nothing of what a backup must never take."""
    local = make_cache(tmp_path / "cache", cache_objects(300))
    packed = subprocess.run(["tar", "-C", str(local.parent), "-cf", "-", "--exclude=shared/cachemgr",
                             "--exclude=shared/cvmfs_io.atlas.cern.ch", "shared"], capture_output=True, check=True).stdout
    subprocess.run(["ssh", "-F", "none", "-p", str(booted_guest.port), "-i", str(booted_guest.client / ".ssh/id_ed25519"),
                    "-o", f"UserKnownHostsFile={booted_guest.client / '.ssh/known_hosts'}", "-o", "BatchMode=yes",
                    "root@127.0.0.1", f"mkdir -p {CACHE_BASE} && tar -C {CACHE_BASE} -xf - && mkfifo {CACHE_BASE}/shared/cachemgr"
                    " && (getent passwd cvmfs >/dev/null || useradd -r -M -s /usr/sbin/nologin cvmfs)"],
                   input=packed, check=True, timeout=120)  # a CernVM has the cvmfs account; this Debian guest gets one
    booted_guest.ssh(STAND_INS, user="root", timeout=120)
    url = f"ssh://root@127.0.0.1:{booted_guest.port}/home/{USER}"
    vmlfs(booted_guest, store, "entry", "add", "cvmroot", "--guest", url, "--release", "2021.05-1", "--with-cvmfs-cache")
    done = timed("vmlfs backup with the CernVM-FS cache (300 objects) as root",
                 lambda: vmlfs(booted_guest, store, "backup", "cvmroot"))
    assert "CernVM-FS cache /mnt/.rw/cvmfs-cache: 300 objects" in done.stdout + done.stderr, done.stdout + done.stderr
    want = booted_guest.ssh(CACHE_LISTING, user="root").stdout
    booted_guest.ssh(f"rm -rf {CACHE_BASE}/shared", user="root")

    target = f"ssh://root@127.0.0.1:{booted_guest.port}/home/{USER}/restored-with-cache"
    back = timed("vmlfs restore of the home and the CernVM-FS cache into the guest",
                 lambda: vmlfs(booted_guest, store, "restore", "cvmroot", target, "--with-cvmfs-cache"))
    assert "no cvmfs" not in back.stderr, back.stderr
    steps = booted_guest.ssh("cat /var/log/vmlfs-test-steps", user="root").stdout.decode().splitlines()
    objects = len([line for line in want.splitlines() if b"cvmfschecksum" not in line])
    assert steps == ["autofs started with 0 objects", "autofs stopped", "cvmfs_config umount",
                     f"autofs started with {objects} objects", "cvmfs_config reload"], steps  # the documented order
    assert booted_guest.ssh(CACHE_LISTING, user="root").stdout == want
    owners = booted_guest.ssh(f"find {CACHE_BASE}/shared -printf '%u\\n' | sort -u", user="root").stdout.split()
    assert owners == [b"cvmfs"]
    never = booted_guest.ssh(f"cd {CACHE_BASE}/shared && ls -d cachedb cachemgr txn quarantaine 2>/dev/null",
                             user="root", check=False).stdout
    assert never == b""
    booted_guest.ssh(f"systemctl stop autofs; rm -rf /home/{USER}/restored-with-cache {CACHE_BASE}"
                     " /etc/systemd/system/autofs.service /usr/local/bin/cvmfs_config; systemctl daemon-reload", user="root")


# The test image has no CernVM-FS client: autofs and cvmfs_config are stand-ins that log what they are asked,
# autofs with the number of objects in the cache when it starts (a CernVM-FS mount would read them then); a
# oneshot unit, so that systemctl start returns once it has logged.
STAND_INS = r"""set -e
: > /var/log/vmlfs-test-steps
printf '#!/bin/sh\necho "cvmfs_config $*" >> /var/log/vmlfs-test-steps\n' > /usr/local/bin/cvmfs_config
chmod 755 /usr/local/bin/cvmfs_config
printf '%s\n' '[Service]' Type=oneshot RemainAfterExit=yes \
  "ExecStart=/bin/sh -c 'echo \"autofs started with \$\$(find /mnt/.rw/cvmfs-cache/shared/?? -type f | wc -l) objects\" >> /var/log/vmlfs-test-steps'" \
  "ExecStopPost=/bin/sh -c 'echo autofs stopped >> /var/log/vmlfs-test-steps'" > /etc/systemd/system/autofs.service
systemctl daemon-reload
mv /mnt/.rw/cvmfs-cache/shared /mnt/.rw/cvmfs-cache/shared.hold
mkdir /mnt/.rw/cvmfs-cache/shared
systemctl start autofs
rmdir /mnt/.rw/cvmfs-cache/shared
mv /mnt/.rw/cvmfs-cache/shared.hold /mnt/.rw/cvmfs-cache/shared
"""
CACHE_LISTING = (f"cd {CACHE_BASE}/shared && find . -type f ! -name cachedb ! -path './txn/*' ! -path './quarantaine/*'"
                 " ! -name 'lock.*' ! -name 'running.*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum")
