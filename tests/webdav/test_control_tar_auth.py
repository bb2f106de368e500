"""Control files over HTTP (the same jobs and validation as the mount), ``?tar``, and who may connect."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time

import pytest

from tests.fs.conftest import make_store
from tests.webdav.conftest import code, curl


def wait_status(server, rel: str, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = curl(server.path(rel)).stdout.decode()
        if text in status:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def test_put_and_post_to_control_files_take_backups_with_the_mounts_validation(tmp_path, serve_factory, vmlfs):
    s = make_store(tmp_path)
    s.backup()
    server = serve_factory(s.store_path)
    snapshot = server.path("/entries/e1/control/snapshot")
    assert code("-X", "PUT", "--data-binary", "differential\n", snapshot) == 202
    wait_status(server, "/entries/e1/control/status", "Z differential backup")
    assert code("-X", "POST", snapshot) == 202, "an empty POST is a touch: the default kind"
    wait_status(server, "/entries/e1/control/status", "Z incremental backup")
    assert len(os.listdir(s.store_path / "entries" / "e1" / "backups")) == 3
    for evil in ("; rm -rf /", "$(id)", "../x", "full full", "FULL", "x" * 5000):
        assert code("-X", "PUT", "--data-binary", evil, snapshot) == 400, evil
    assert "refused control request" in curl(server.path("/entries/e1/control/status")).stdout.decode()
    with s.store().lock("e1"):
        assert code("-X", "PUT", "--data-binary", "full", snapshot) == 409
    assert "locked by pid" in curl(server.path("/entries/e1/control/status")).stdout.decode()
    assert code("-X", "PUT", "--data-binary", "full", server.path("/control/snapshot")) == 202, "the default entry"
    wait_status(server, "/control/status", "Z full backup")
    assert code("-X", "PUT", "--data-binary", "x", server.path("/entries/e1/control/vm-snapshot")) == 400
    assert code("-X", "PUT", "--data-binary", "full", server.path("/entries/e1/control/status")) == 403
    assert len(os.listdir(s.store_path / "entries" / "e1" / "backups")) == 4


def test_tar_of_a_directory_keeps_names_modes_and_links(tmp_path, serve_factory):
    s = make_store(tmp_path)
    ts = s.backup()
    server = serve_factory(s.store_path)
    data = curl(server.path(f"/entries/e1/{ts}/home/?tar")).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("home/src/main.py").read() == (s.home / "src" / "main.py").read_bytes()
        assert tar.extractfile("home/data/big.bin").read() == (s.home / "data" / "big.bin").read_bytes()
    assert members["home/link-to-main"].issym() and members["home/link-to-main"].linkname == "src/main.py"
    assert members["home/run.sh"].mode == 0o751 and members["home/secret"].mode == 0o600
    assert members["home/src/deep/er/leaf.txt"].mtime == pytest.approx(1_600_000_000.123456789, abs=1e-6)
    assert os.fsdecode(b"home/raw-\xff-name") in members, "raw guest names, not the Windows mapping"
    extract = tmp_path / "x"
    extract.mkdir()
    subprocess.run(["tar", "-xf", "-", "-C", str(extract)], input=data, check=True)
    assert subprocess.run(["diff", "-r", "--no-dereference", str(s.home), str(extract / "home")]).returncode == 0
    assert code(server.path(f"/entries/e1/{ts}/home/src/main.py?tar")) == 400


def test_credentials_are_required_when_given(tmp_path, serve_factory):
    s = make_store(tmp_path)
    s.backup()
    secret = tmp_path / "auth"
    secret.write_text("alice:s3cret-pass\n")
    secret.chmod(0o600)
    server = serve_factory(s.store_path, "--listen", "127.0.0.1:0", "--auth-file", str(secret))
    assert code("-X", "PROPFIND", "-H", "Depth: 1", server.url) == 401
    assert code(server.path("/web/")) == 401 and code("-X", "PUT", "--data", "full",
                                                       server.path("/entries/e1/control/snapshot")) == 401
    assert code("-u", "alice:s3cret-pass", server.path("/web/")) == 200
    assert code("-u", "alice:wrong", server.path("/entries/")) == 401
    assert code("-u", "alice:s3cret-pass", "-X", "PROPFIND", "-H", "Depth: 1", server.url) == 207
    assert "WWW-Authenticate: Basic" in curl("-i", server.url).stdout.decode()


def test_a_non_loopback_address_needs_a_password_and_tls(tmp_path, vmlfs):
    s = make_store(tmp_path)
    s.backup()
    for extra in ([], ["--auth-file", __file__], ["--tls-cert", __file__, "--tls-key", __file__]):
        done = vmlfs.run("--store", str(s.store_path), "serve", "--listen", "0.0.0.0:0", *extra, check=False)
        assert done.returncode == 2 and b"not loopback, needs" in done.stderr, done.stderr
    done = vmlfs.run("--store", str(s.store_path), "serve", "--listen", "localhost:80", check=False)
    assert done.returncode == 2 and b"not an IP address" in done.stderr


NETNS_SCRIPT = r"""
set -e
ip link set lo up
ip addr add 10.99.0.1/32 dev lo
"$@" > "$LOG" 2>&1 &
server=$!
trap 'kill $server; wait $server' EXIT
for i in $(seq 100); do grep -q serving "$LOG" && break; sleep 0.1; done
url=https://10.99.0.1:8765/
curl -sk -o /dev/null -w '%{http_code} ' -X PROPFIND -H 'Depth: 1' $url
curl -sk -o /dev/null -w '%{http_code} ' -u alice:pw -X PROPFIND -H 'Depth: 1' $url
curl -s -o /dev/null -w '%{http_code} ' --cacert "$CERT" --resolve vmlfs.test:8765:10.99.0.1 https://vmlfs.test:8765/
curl -s -o /dev/null -w '%{http_code} ' http://10.99.0.1:8765/ || true
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                    reason="needs root, unshare and ip for a private network namespace")
def test_401_over_tls_on_a_non_loopback_address(tmp_path):
    """In a network namespace of its own, the server listens on 10.99.0.1 (not a loopback address, though
    the namespace routes it over lo) with TLS and a password; curl trusting the certificate without
    credentials gets 401, and plain HTTP gets no answer at all (000)."""
    from tests.fs.conftest import VMLFS

    s = make_store(tmp_path)
    s.backup()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=vmlfs.test",
                    "-addext", "subjectAltName=DNS:vmlfs.test"], check=True, capture_output=True)
    secret = tmp_path / "auth"
    secret.write_text("alice:pw\n")
    env = dict(os.environ, LOG=str(tmp_path / "serve.log"), CERT=str(cert))
    done = subprocess.run(["unshare", "--net", "bash", "-c", NETNS_SCRIPT, "netns",
                           *VMLFS, "--store", str(s.store_path), "serve", "--webdav", "--listen", "10.99.0.1:8765",
                           "--auth-file", str(secret), "--tls-cert", str(cert), "--tls-key", str(key)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.split() == ["401", "207", "401", "000"], (done.stdout, done.stderr)
