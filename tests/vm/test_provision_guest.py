"""``vmlfs provision`` of a guest that really boots: the test image served as a release from 127.0.0.1.

The backup comes from a home owned by uid 1000 whose environment names
/bin/bash; the entry's guest is ``ssh://physicist@...``, a CernVM image has
no such user, so provisioning must create it (from the ConfigDrive) and
restore the home as that user; its env.txt is applied to that user's login
shells (with one session's values left out). Afterwards the entry points at the new VM,
whose host key is trusted: the next backup, consistent (guest agent), needs
no ``--accept-new-host-key``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.cernvm.conftest import PREFIX, FakeRepo, _handler
from tests.fs.conftest import make_guest
from tests.vm.conftest import GID, RELEASE, UID, USER, destroy, make_client
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.engine.backup import run_backup

pytestmark = [pytest.mark.vm, pytest.mark.slow]


@pytest.fixture(scope="module")
def image_repo(guest_image: Path, tmp_path_factory) -> str:
    """A release repository on 127.0.0.1 whose 2021.05-1 qcow2 is the test guest image."""
    repo = FakeRepo(tmp_path_factory.mktemp("repo") / "served")
    directory = f"ucernvm-images.{RELEASE}.cernvm.x86_64"
    (repo.root / directory).mkdir(parents=True)
    (repo.root / directory / guest_image.name).symlink_to(guest_image)
    digest = hashlib.sha256(guest_image.read_bytes()).hexdigest()
    repo.write(f"{directory}/{guest_image.name}.sha256", f"{digest}  {directory}/{guest_image.name}\n".encode())
    repo.write("latest", f"{RELEASE}\n".encode())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(repo))
    server.daemon_threads = True
    repo.url = f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    repo.write_root_listing()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield repo.url
    server.shutdown()


def test_provision_as_the_entrys_user_then_back_up_the_new_vm(libvirtd, pool, image_repo, tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the backed-up home must be owned by uid 1000")
    home = make_guest(tmp_path / "old", big_mib=8)
    (home / ".bash_history").write_text("root -l\n")
    subprocess.run(["chown", "-hR", f"{UID}:{GID}", str(home)], check=True)
    env_file = tmp_path / "env.txt"
    env_file.write_text(f"SHELL=/bin/bash\nHOME=/home/{USER}\nUSER={USER}\nSSH_CONNECTION=10.1.1.1 22 10.1.1.2 22\n"
                        "ATLAS_LOCAL_ROOT_BASE=/cvmfs/atlas.cern.ch/repo/ATLASLocalRootBase\nQUOTED=it's $HOME `id`\n")
    client = make_client(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "VMLFS_CERNVM_IMAGE_DIRS")}
    env.update(HOME=str(client), XDG_CACHE_HOME=str(client / ".cache"), VMLFS_LIBVIRT_URI=libvirtd)
    store = tmp_path / "store"

    def vmlfs(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "vmlfs", "--store", str(store), *args], env=env, capture_output=True,
                              text=True, timeout=900)
        assert not check or done.returncode == 0, f"vmlfs {' '.join(args)}: {done.stderr}"
        return done

    vmlfs("entry", "add", "old", "--guest", f"ssh://{USER}@old-cvm.invalid/home/{USER}", "--release", RELEASE,
          "--vm-network", "user", "--vm-memory", "768", "--vm-pool", pool)
    opened = LocalStore(store)
    run_backup(opened, opened.load_entry("old"), LocalGuest(home, env_file=str(env_file), release=RELEASE))
    domain = f"vmlfs-guest-{os.getpid()}-prov"
    try:
        started = time.monotonic()
        done = vmlfs("provision", "old", "--domain", domain, "--repo", image_repo, "--ssh-timeout", "400")
        print(f"\n[timing] vmlfs provision end to end (download, upload, boot, restore): {time.monotonic() - started:.1f} s")
        first, recorded = done.stdout.splitlines()
        port = int(first.split(":")[-1])
        url = f"ssh://{USER}@127.0.0.1:{port}/home/{USER}"
        assert first == f"{domain} 127.0.0.1:{port}"
        assert recorded == f"entry old now backs up the new guest ({url}, domain {domain})"
        entry = LocalStore(store).load_entry("old")
        assert (entry.guest, entry.domain, entry.vm["ssh"]) == (url, domain, f"127.0.0.1:{port}")

        known = (client / ".ssh" / "known_hosts").read_text()
        hashes = "hashknownhosts yes" in subprocess.run(["ssh", "-G", "127.0.0.1"], capture_output=True, text=True).stdout
        assert known.startswith("|1|") == hashes
        ssh = ["ssh", "-F", "none", "-p", str(port), "-i", str(client / ".ssh/id_ed25519"), "-o", "BatchMode=yes",
               "-o", f"UserKnownHostsFile={client / '.ssh/known_hosts'}", "-o", "StrictHostKeyChecking=yes", f"{USER}@127.0.0.1"]
        said = subprocess.run([*ssh, "id -u; id -g; getent passwd physicist | cut -d: -f7; stat -c '%u:%g %n' data/big.bin src/main.py; "
                               "cat .bash_history"], capture_output=True, text=True, timeout=60, check=True).stdout
        assert said == f"{UID}\n{GID}\n/bin/bash\n{UID}:{GID} data/big.bin\n{UID}:{GID} src/main.py\nroot -l\n"

        # env.txt is applied to the user's login shells, byte-exact, but for one session's values
        login = subprocess.run([*ssh, "bash -lc 'printf \"%s|\" \"$ATLAS_LOCAL_ROOT_BASE\" \"$QUOTED\" \"$SSH_CONNECTION\"'"],
                               capture_output=True, text=True, timeout=60, check=True).stdout
        assert login.startswith("/cvmfs/atlas.cern.ch/repo/ATLASLocalRootBase|it's $HOME `id`|") and "10.1.1.1" not in login

        # the next backup reads the new VM, trusts its key without --accept-new-host-key, and can freeze it
        subprocess.run([*ssh, "echo new > written-in-the-new-vm"], check=True, timeout=60)
        vmlfs("backup", "old", "--consistent")
        assert "written-in-the-new-vm" in vmlfs("ls", "old", "").stdout
    finally:
        destroy(libvirtd, pool, domain)
