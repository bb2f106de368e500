"""Faults a real server cannot be made to show, injected by a proxy in front of SeaweedFS: 503 storms and cut uploads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Vmlfs, tree_listing
from tests.fs.conftest import needs_fuse
from tests.s3.conftest import ACCESS, SECRET, S3Server, keys
from tests.s3.fault_proxy import FaultProxy

pytestmark = pytest.mark.s3


@pytest.fixture
def proxy(seaweedfs: S3Server):
    p = FaultProxy(seaweedfs.endpoint)
    yield p
    p.close()


@pytest.fixture
def faulty(seaweedfs: S3Server, proxy: FaultProxy, s3_store: str, tmp_path: Path) -> Vmlfs:
    """The CLI reaching the store through the proxy (three attempts per call, as the conftest sets)."""
    return Vmlfs(tmp_path / "unused", seaweedfs.env(tmp_path, VMLFS_STORE=s3_store, AWS_ENDPOINT_URL=proxy.endpoint))


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    home = tmp_path / "guest"
    (home / "sub").mkdir(parents=True)
    (home / "sub" / "data.bin").write_bytes(os.urandom(3 << 20))
    (home / "a.txt").write_text("a\n")
    return home


def layer_get(method: str, path: str) -> bool:
    return method == "GET" and "/objects/layers/" in path


def one_clean_error(proc, code: int) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err and SECRET not in err and ACCESS not in err
    return err


@pytest.mark.slow
def test_a_503_storm_is_retried_then_reported(faulty: Vmlfs, proxy: FaultProxy, guest: Path, tmp_path: Path) -> None:
    faulty.run("entry", "add", "e", "--guest", str(guest))
    faulty.run("backup", "e")
    storm = proxy.add(layer_get, 2)  # fewer than the attempts a call makes: nobody notices
    faulty.run("restore", "e", str(tmp_path / "r1"))
    assert storm.hits == 2 and tree_listing(tmp_path / "r1") == tree_listing(guest)
    storm = proxy.add(layer_get, 10_000)
    failed = faulty.run("restore", "e", str(tmp_path / "r2"), check=False)
    err = one_clean_error(failed, 10)
    assert "503 SlowDown after 3 attempts" in err
    assert storm.hits >= 3
    proxy.clear()
    faulty.run("verify")


@pytest.mark.slow
def test_a_connection_cut_mid_upload_commits_nothing_and_a_retry_works(
        faulty: Vmlfs, proxy: FaultProxy, seaweedfs: S3Server, s3_store: str, guest: Path, tmp_path: Path) -> None:
    faulty.run("entry", "add", "e", "--guest", str(guest))
    cut = proxy.add(lambda m, p: m == "PUT" and "/objects/layers/" in p, 1, action="cut")
    faulty.run("backup", "e")  # one cut: botocore uploads again
    assert cut.hits == 1 and len(faulty.run("list", "e").stdout.splitlines()) == 1
    (guest / "b.txt").write_bytes(os.urandom(2 << 20))
    cut = proxy.add(lambda m, p: m == "PUT" and "/objects/trees/" in p, 10_000, action="cut")
    failed = faulty.run("backup", "e", check=False)
    one_clean_error(failed, 10)
    assert len(faulty.run("list", "e").stdout.splitlines()) == 1, "the broken backup is not listed"
    assert len(keys(seaweedfs, s3_store, "objects/layers/")) == 2, "its layer was uploaded before the cut"
    proxy.clear()
    faulty.run("gc", "--grace", "0")
    assert len(keys(seaweedfs, s3_store, "objects/layers/")) == 1, "gc removed what no record names"
    faulty.run("backup", "e")
    stamps = [line.split()[0] for line in faulty.run("list", "e").stdout.decode().splitlines()]
    faulty.run("restore", f"e@{stamps[-1]}", str(tmp_path / "r"))
    assert tree_listing(tmp_path / "r") == tree_listing(guest)


@pytest.mark.slow
@needs_fuse
def test_a_mount_answers_eio_for_the_file_the_storm_hits_and_recovers(
        faulty: Vmlfs, proxy: FaultProxy, guest: Path, mountpoint: Path, tmp_path: Path) -> None:
    faulty.run("entry", "add", "e", "--guest", str(guest))
    faulty.run("backup", "e")
    faulty.run("mount", str(mountpoint), "--log-file", str(tmp_path / "mount.log"))
    home = mountpoint / "entries" / "e" / "latest" / "home"
    assert sorted(os.listdir(home)) == ["a.txt", "sub"]
    proxy.add(layer_get, 10_000)
    with pytest.raises(OSError) as failed:
        (home / "sub" / "data.bin").read_bytes()
    assert failed.value.errno == 5  # EIO for this file; the mount stays up
    assert sorted(os.listdir(home / "sub")) == ["data.bin"]
    proxy.clear()
    assert (home / "sub" / "data.bin").read_bytes() == (guest / "sub" / "data.bin").read_bytes()


def test_an_entry_s_records_are_read_side_by_side(faulty: Vmlfs, proxy: FaultProxy, guest: Path) -> None:
    """Every backup, listing and mount reads all of an entry's records, one GET each: in turn, a
    long history cost a round trip per backup before anything else happened."""
    faulty.run("entry", "add", "e", "--guest", str(guest))
    for _ in range(4):
        faulty.run("backup", "e")
    slow = proxy.add(lambda method, path: method == "GET" and "/backups/" in path and path.endswith(".json"), 1000,
                     "slow", delay=0.2)
    listed = faulty.run("list", "e").stdout.decode()
    assert listed.count("incremental") == 3 and listed.count("full") == 1, listed
    assert slow.hits == 4 and slow.most_in_flight == 4, (slow.hits, slow.most_in_flight)


@needs_fuse
def test_a_path_walk_through_the_mount_lists_each_directory_once(
        faulty: Vmlfs, proxy: FaultProxy, guest: Path, mountpoint: Path, tmp_path: Path) -> None:
    """Every step of entries/e/latest/<ts>/home looked its name up with a fresh listing (13 requests
    before a file's first byte); a listing under a second old now answers the names it has."""
    import time

    faulty.run("entry", "add", "e", "--guest", str(guest))
    faulty.run("backup", "e")
    faulty.run("mount", str(mountpoint), "--log-file", str(tmp_path / "mount.log"))
    time.sleep(1.5)  # the warm-up's listings are done and over a second old
    count = lambda what: proxy.add(lambda method, path: method == "GET" and what(path), 1000, "slow")  # noqa: E731
    lists = count(lambda path: "list-type=2" in path)
    headers = count(lambda path: path.endswith("/vmlfs-store.json"))
    entries = count(lambda path: path.endswith("/entry.json"))
    assert (mountpoint / "entries" / "e" / "latest" / "home" / "a.txt").read_text() == "a\n"
    assert lists.hits == 2, "the entries once, the entry's backups once"
    assert headers.hits == 2 and entries.hits <= 1, (headers.hits, entries.hits)
