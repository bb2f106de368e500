"""A real ``vmlfs serve`` process on a free loopback port, and small HTTP helpers.

The server is started with ``--listen 127.0.0.1:0`` so the kernel picks the
port; the fixture reads the URL from the "serving" line of its log, waits
until it answers an HTTP request, and stops the process (SIGTERM, then SIGKILL) at teardown even when the test
failed.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fs.conftest import VMLFS


class Served:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def path(self, rel: str) -> str:
        return self.url + rel.lstrip("/")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def answers(url: str) -> bool:
    """Whether the server answers HTTP at all (any status: a 401 is an answer)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="OPTIONS"), timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_server(store: Path, log: Path, *args: str, timeout: float = 30.0) -> Served:
    with open(log, "wb") as out:
        proc = subprocess.Popen([*VMLFS, "--store", str(store), "serve", *args], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"serving (\S+)", log.read_text(errors="replace"))
        if found and answers(found.group(1)):
            return Served(proc, found.group(1), log)
        if proc.poll() is not None:
            raise AssertionError(f"vmlfs serve exited {proc.returncode}: {log.read_text(errors='replace')}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"vmlfs serve did not answer in {timeout} s: {log.read_text(errors='replace')}")


@pytest.fixture
def serve_factory(tmp_path):
    servers: list[Served] = []

    def factory(store: Path, *args: str) -> Served:
        served = start_server(store, tmp_path / f"serve{len(servers)}.log", *(args or ("--webdav", "--listen", "127.0.0.1:0")))
        servers.append(served)
        return served

    yield factory
    for served in servers:
        served.stop()


def curl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """curl, returning the body on stdout; ``-w '%{http_code}'`` callers read the code from the end."""
    done = subprocess.run(["curl", "-sS", "--max-time", "60", *args], capture_output=True)
    if check and done.returncode != 0:
        raise AssertionError(f"curl {' '.join(args)}: {done.stderr.decode(errors='replace')}")
    return done


def code(*args: str) -> int:
    """The HTTP status of one curl request (body discarded; a body cut short does not matter here)."""
    return int(curl("-o", "/dev/null", "-w", "%{http_code}", *args, check=False).stdout)
