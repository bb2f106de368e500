"""Provisioning fixtures: a client HOME with an SSH key, and a "guest" that boots from our config drive.

libvirt's test driver defines and "starts" domains without running them, so
:class:`FakeBoot` plays the booting CernVM: it waits for the domain's
ConfigDrive ISO, reads it as cloud-init would (Rock Ridge names, the
``#cloud-config`` user-data) and starts a real OpenSSH sshd on 127.0.0.1 with
the host key and authorized key found there. A provisioning that logs in
therefore proves the contextualization works; one that injected the wrong
keys fails host-key or key authentication.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.backends.conftest import SSHD, _free_port, stop_sshd
from tests.cernvm.conftest import release_repo  # noqa: F401  (the fixture, shared)
from tests.fs.conftest import mount_factory  # noqa: F401  (the fixture, shared)
from tests.hypervisor.conftest import libvirtd, pool  # noqa: F401  (the fixtures, shared)
from vmlfs.cernvm.contextualize import read_config_drive

RELEASE = "2020.07-1"  # in the fake repository as a raw .hdd image


class FakeBoot:
    def __init__(self, base: Path) -> None:
        self.base, self.port = base, _free_port()
        self.proc: subprocess.Popen | None = None
        self.user_data: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, iso: Path) -> None:
        """Boot (start sshd) as soon as ``iso`` is complete."""
        self._thread = threading.Thread(target=self._boot, args=(iso,), daemon=True)
        self._thread.start()

    def _boot(self, iso: Path) -> None:
        while not self._stop.is_set():
            try:
                files = read_config_drive(iso)
                break
            except Exception:  # not there yet, or still being written
                time.sleep(0.1)
        else:
            return
        text = files["openstack/latest/user_data"].decode()
        assert text.startswith("#cloud-config\n") and files["ec2/latest/user-data"].decode() == text
        self.user_data = doc = json.loads(text.split("\n", 1)[1])
        host_key = self.base / "host_key"
        host_key.write_text(doc["ssh_keys"]["ed25519_private"])
        host_key.chmod(0o600)
        (self.base / "authorized_keys").write_text("\n".join(doc["ssh_authorized_keys"]) + "\n")
        cfg = self.base / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {self.base}/authorized_keys\n"
            f"PidFile {self.base}/sshd.pid\nStrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
        )
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=open(self.base / "sshd.log", "wb"))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.proc is not None:
            stop_sshd(self.proc)


@pytest.fixture
def client_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME with ~/.ssh/id_ed25519 (the key provisioning injects and logs in with), and private XDG dirs."""
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None or shutil.which("qemu-img") is None:
        pytest.skip("needs OpenSSH sshd, ssh-keygen and qemu-img")
    home = tmp_path / "client"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id_ed25519")], check=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("VMLFS_CERNVM_IMAGE_DIRS", raising=False)
    return home


@pytest.fixture
def fake_boot(tmp_path: Path) -> Iterator[FakeBoot]:
    boot = FakeBoot(tmp_path / "guest-boot")
    boot.base.mkdir()
    try:
        yield boot
    finally:
        boot.stop()
