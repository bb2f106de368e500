"""Every command against a real S3 server (SeaweedFS on 127.0.0.1): the fidelity cycle, entries, prune + gc, two backups at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_backup_cycle import build_guest, change_guest, fidelity_cycle
from tests.backends.conftest import Sshd
from tests.conftest import Vmlfs, snapshot_copy, tree_listing
from tests.s3.conftest import S3Server, keys

pytestmark = pytest.mark.s3


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    home = tmp_path / "guest"
    home.mkdir()
    build_guest(home)
    return home


def stamps(v: Vmlfs, entry: str) -> list[str]:
    return [line.split()[0] for line in v.run("list", entry).stdout.decode().splitlines()]


def test_full_incremental_differential_restore_exactly(any_vmlfs: Vmlfs, any_s3: S3Server, s3_store: str,
                                                       guest: Path, tmp_path: Path) -> None:
    s3vmlfs, seaweedfs = any_vmlfs, any_s3
    found = fidelity_cycle(s3vmlfs, guest, tmp_path)
    assert "data-moved.bin" in s3vmlfs.run("ls", "physics").stdout.decode()
    stored = keys(seaweedfs, s3_store)
    assert sorted(k for k in stored if k.startswith("entries/physics/backups/")) == \
        [f"entries/physics/backups/{ts}.json" for ts in found]
    assert sum(k.startswith("objects/layers/") and k.endswith(".tar.zst") for k in stored) == 3
    assert not (tmp_path / "not-the-store").exists() and not list(Path.cwd().glob("s3:*"))


def test_entries_and_the_endpoint_option(seaweedfs: S3Server, s3_store: str, guest: Path, tmp_path: Path) -> None:
    env = seaweedfs.env(tmp_path)
    del env["AWS_ENDPOINT_URL"]
    v = Vmlfs(tmp_path / "unused", env)
    store = ["--store", s3_store, "--s3-endpoint", seaweedfs.endpoint]
    v.run(*store, "entry", "add", "a", "--guest", str(guest), "--exclude", "*.bin")
    again = v.run(*store, "entry", "add", "a", "--guest", str(guest), check=False)
    assert again.returncode == 4
    v.run(*store, "entry", "add", "b", "--guest", str(guest))
    assert v.run(*store, "entry", "list").stdout.decode().split()[:1] == ["a"]
    v.run(*store, "entry", "edit", "a", "--exclude", "*.img")
    assert "*.img" in v.run(*store, "entry", "show", "a").stdout.decode()
    v.run(*store, "backup", "b")
    v.run(*store, "entry", "remove", "b", "--yes")
    assert "b" not in v.run(*store, "entry", "list").stdout.decode().split()
    assert not [k for k in keys(seaweedfs, s3_store) if k.startswith("entries/b")]
    secret = env["AWS_SECRET_ACCESS_KEY"].encode()
    bad = v.run("--store", "gs://bucket/x", "entry", "list", check=False)
    assert bad.returncode == 2 and b"unknown URL scheme 'gs'" in bad.stderr and b"gs://" not in bad.stderr
    leaked = v.run("--store", "s3://key:pass@bucket/x", "entry", "list", check=False)
    assert leaked.returncode == 2 and b"pass" not in leaked.stderr
    no_bucket = v.run("--store", "s3://no-such-bucket/x", "--s3-endpoint", seaweedfs.endpoint, "entry", "add", "c",
                      "--guest", str(guest), check=False)
    assert no_bucket.returncode == 3 and b"no bucket 'no-such-bucket'" in no_bucket.stderr
    anonymous = Vmlfs(v.store, {k: x for k, x in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    refused = anonymous.run(*store, "entry", "list", check=False)
    assert refused.returncode == 6 and b"no S3 credentials found" in refused.stderr
    wrong_key = Vmlfs(v.store, dict(env, AWS_SECRET_ACCESS_KEY="not-the-secret"))
    denied = wrong_key.run(*store, "entry", "list", check=False)
    assert denied.returncode == 6 and b"access denied" in denied.stderr and b"not-the-secret" not in denied.stderr
    for proc in (again, bad, leaked, no_bucket, refused, denied):
        assert secret not in proc.stderr + proc.stdout and b"Traceback" not in proc.stderr


def test_prune_and_gc_free_the_objects(any_vmlfs: Vmlfs, any_s3: S3Server, s3_store: str, guest: Path) -> None:
    s3vmlfs, seaweedfs = any_vmlfs, any_s3
    s3vmlfs.run("entry", "add", "e", "--guest", str(guest))
    for step in range(3):
        if step:
            change_guest(guest, step)
        s3vmlfs.run("backup", "e", "--kind", "full")
    before = keys(seaweedfs, s3_store, "objects/layers/")
    s3vmlfs.run("prune", "e", "--keep-last", "1", "--yes")
    assert len(stamps(s3vmlfs, "e")) == 1
    s3vmlfs.run("gc", "--grace", "0")
    after = keys(seaweedfs, s3_store, "objects/layers/")
    assert len([k for k in after if k.endswith(".tar.zst")]) == 1 < len(before)
    assert not keys(seaweedfs, s3_store, "objects/garbage/")
    s3vmlfs.run("verify")


@pytest.mark.sshd
def test_an_ssh_guest_backed_up_into_s3(s3vmlfs: Vmlfs, sshd: Sshd, guest: Path, tmp_path: Path) -> None:
    s3vmlfs.env = sshd.env(s3vmlfs.env)
    s3vmlfs.run("entry", "add", "remote", "--guest", sshd.url(str(guest)))
    s3vmlfs.run("backup", "remote")
    change_guest(guest, 1)
    s3vmlfs.run("backup", "remote")
    copy = snapshot_copy(guest, tmp_path / "copy")
    s3vmlfs.run("restore", "remote", str(tmp_path / "r"))
    assert tree_listing(tmp_path / "r") == tree_listing(copy)


def test_an_s3_store_is_opened_without_boto3_and_s3transfer() -> None:
    """A no-change backup makes no managed upload or copy, so what only those need (boto3 imports
    s3transfer: 85 ms) must not be imported by opening a bucket; botocore is enough."""
    code = ("import sys; from vmlfs.backends.s3_client import S3Bucket; S3Bucket('b', endpoint='http://127.0.0.1:9');"
            "print(sorted(m for m in ('boto3', 's3transfer') if m in sys.modules))")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="id", AWS_SECRET_ACCESS_KEY="secret")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
