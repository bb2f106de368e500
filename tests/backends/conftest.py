"""A real OpenSSH sshd on 127.0.0.1 with throw-away keys, and a client HOME that trusts it.

``sshd`` starts ``/usr/sbin/sshd -D -e`` on a free port with a fresh host key
and authorized user key, and stops it at teardown. ``ssh_home`` is a HOME
directory holding ``.ssh/{config,id_ed25519,known_hosts}`` the way a user's
would: tests point ``HOME`` at it, so vmlfs (asyncssh) and OpenSSH's ``ssh``
both pick them up without any test-only option.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    host: str
    port: int
    pid: int
    host_pub: Path
    user_key: Path
    home: Path  # the client HOME with .ssh/config and known_hosts
    dir: Path

    def url(self, path: str = "") -> str:
        return f"ssh://root@{self.host}:{self.port}{path}"

    @property
    def known_hosts(self) -> Path:
        return self.home / ".ssh" / "known_hosts"

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def drop_connections(self) -> int:
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(base if base is not None else os.environ, HOME=str(self.home))
        env.pop("SSH_AUTH_SOCK", None)
        return env


class KillOnFirstFile:
    """A backup progress sink that drops every SSH session once the first file is packed:
    a connection lost mid-backup, at a known point."""

    def __init__(self, sshd: Sshd) -> None:
        self.sshd = sshd
        self.killed = 0

    def scanned(self, count: int) -> None:
        pass

    def packed(self, files: int, nbytes: int) -> None:
        if not self.killed:
            self.killed = self.sshd.drop_connections()
            assert self.killed, "no sshd session to kill"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmlfs-test", "-f", str(path)], check=True)


def start_sshd(base: Path) -> tuple[subprocess.Popen, Sshd]:
    base.mkdir(parents=True, exist_ok=True)
    host_key, user_key = base / "host_ed25519", base / "user_ed25519"
    _keygen(host_key)
    _keygen(user_key)
    authorized = base / "authorized_keys"
    shutil.copy(f"{user_key}.pub", authorized)
    port = _free_port()
    cfg = base / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
        f"PidFile {base}/sshd.pid\nStrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nMaxStartups 50\nMaxSessions 50\nSubsystem sftp internal-sftp\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=open(base / "sshd.log", "wb"))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"sshd did not start: {(base / 'sshd.log').read_text()}")
            time.sleep(0.05)
    home = base / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    shutil.copy(user_key, home / ".ssh" / "id_ed25519")
    shutil.copy(f"{user_key}.pub", home / ".ssh" / "id_ed25519.pub")
    (home / ".ssh" / "config").write_text(
        f"Host vmlfs-test\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {home}/.ssh/id_ed25519\n"
    )
    host_pub = Path(f"{host_key}.pub")
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_pub.read_text().split()[:2])}\n")
    return proc, Sshd("127.0.0.1", port, proc.pid, host_pub, user_key, home, base)


def stop_sshd(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH sshd/ssh-keygen not installed (apt-get install openssh-server openssh-client)")
    proc, server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        stop_sshd(proc)


@pytest.fixture
def sshd(sshd_server: Sshd, monkeypatch: pytest.MonkeyPatch) -> Sshd:
    """The server, with this test's HOME pointing at the client files that trust it."""
    monkeypatch.setenv("HOME", str(sshd_server.home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    known = f"[127.0.0.1]:{sshd_server.port} {' '.join(sshd_server.host_pub.read_text().split()[:2])}\n"
    sshd_server.known_hosts.write_text(known)  # undo what a test may have changed
    return sshd_server
