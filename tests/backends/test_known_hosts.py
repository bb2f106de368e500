"""The provisioned guest's host key in known_hosts: found by OpenSSH, hashed or not, one line per address."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vmlfs.backends import known_hosts

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq5B1h6m1iQbWmC1jZ7gQk0l3gD3u9qk2Yc3i3sXl1A"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbqKk0X0c3B2xW9F6Kc0E3k1m8YQzv6hJ5wJm4T1pQb"

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")


def found(path: Path, pattern: str) -> list[str]:
    done = subprocess.run(["ssh-keygen", "-F", pattern, "-f", str(path)], capture_output=True, text=True)
    return [line.split(None, 1)[1] for line in done.stdout.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("hashing", [True, False])
def test_a_new_key_replaces_the_old_one_for_that_address(tmp_path: Path, monkeypatch, hashing: bool) -> None:
    monkeypatch.setattr(known_hosts, "hashes_known_hosts", lambda host, port: hashing)
    path = tmp_path / "known_hosts"
    path.write_text("other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther\n")
    known_hosts.trust("127.0.0.1", 2222, KEY_A + " vmlfs", path)
    known_hosts.trust("127.0.0.1", 2222, KEY_B, path)
    assert found(path, "[127.0.0.1]:2222") == [KEY_B]
    assert found(path, "other.example") == ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther"]
    assert ("[127.0.0.1]:2222" in path.read_text()) is not hashing
    assert path.stat().st_mode & 0o777 == 0o600


def test_port_22_is_the_bare_host_name() -> None:
    assert known_hosts.host_pattern("cvm.example", 22) == "cvm.example"
    assert known_hosts.host_pattern("::1", 2222) == "[::1]:2222"
