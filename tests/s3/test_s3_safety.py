"""Commit safety on a real S3 server: concurrent backups, a crashed holder, the commit race, a lost lease."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Vmlfs
from tests.s3.conftest import BUCKET, S3Server, keys

pytestmark = pytest.mark.s3


def big_guest(tmp_path: Path, mib: int = 40) -> Path:
    home = tmp_path / "guest"
    home.mkdir()
    (home / "data.bin").write_bytes(os.urandom(mib << 20))
    (home / "notes.txt").write_text("logbook\n")
    return home


def records(server: S3Server, url: str, entry: str) -> list[str]:
    return [k for k in keys(server, url, f"entries/{entry}/backups/") if k.endswith(".json")]


def test_two_backups_of_one_entry_at_once_one_refuses_naming_the_holder(
        s3vmlfs: Vmlfs, seaweedfs: S3Server, s3_store: str, tmp_path: Path) -> None:
    s3vmlfs.run("entry", "add", "e", "--guest", str(big_guest(tmp_path)))
    procs = [s3vmlfs.popen("backup", "e") for _ in range(2)]
    results = [(p.pid, p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    codes = sorted(code for _, code, _ in results)
    assert codes == [0, 5], results
    winner = next(pid for pid, code, _ in results if code == 0)
    refusal = next(err for _, code, err in results if code == 5)
    assert f"locked by pid {winner} on " in refusal and "lease expires in" in refusal
    assert len(records(seaweedfs, s3_store, "e")) == 1
    assert not [k for k in keys(seaweedfs, s3_store, "entries/e/") if k.endswith(".lock")], "the lease was released"


def test_a_crashed_backup_commits_nothing_blocks_until_its_lease_expires_and_gc_removes_its_objects(
        s3vmlfs: Vmlfs, seaweedfs: S3Server, s3_store: str, tmp_path: Path) -> None:
    s3vmlfs.env["VMLFS_S3_LEASE_TTL"] = "3"
    s3vmlfs.run("entry", "add", "e", "--guest", str(big_guest(tmp_path, 2)))
    crashing = Vmlfs(s3vmlfs.store, dict(s3vmlfs.env, VMLFS_KILL_AT="commit-record"))
    crashed = crashing.popen("backup", "e")
    assert crashed.wait(timeout=120) == -9  # killed with every object uploaded, before its record
    assert records(seaweedfs, s3_store, "e") == [] and s3vmlfs.run("list", "e").stdout == b""
    assert keys(seaweedfs, s3_store, "objects/layers/"), "its layer was uploaded"
    busy = s3vmlfs.run("backup", "e", check=False)
    assert busy.returncode == 5 and f"locked by pid {crashed.pid} on ".encode() in busy.stderr
    time.sleep(3.5)
    work = list((tmp_path / "cache" / "vmlfs" / "s3").glob("*/work/e/*"))
    assert len(work) == 1, "the killed backup left its local work directory"
    retried = s3vmlfs.run("backup", "e")
    assert f"taking over the expired lease of pid {crashed.pid}".encode() in retried.stderr
    assert not work[0].exists(), "the next backup of the entry removed it"
    assert len(records(seaweedfs, s3_store, "e")) == 1
    s3vmlfs.run("forget", "e@" + records(seaweedfs, s3_store, "e")[0].rsplit("/", 1)[1][:-5])
    s3vmlfs.run("gc", "--grace", "0")
    assert keys(seaweedfs, s3_store, "objects/layers/") == [], "the crashed upload's objects are gone too"


def test_gc_aborts_the_store_s_interrupted_multipart_uploads_after_the_grace_period(
        s3vmlfs: Vmlfs, seaweedfs: S3Server, s3_store: str, tmp_path: Path) -> None:
    """What a process killed mid-upload leaves: a multipart upload, invisible to listings, whose
    parts take space. gc aborts those under the store's objects/ started before the grace period,
    and no upload of another prefix (here one whose name merely starts like the store's).
    SeaweedFS only: moto 5 lists every upload as started in 2010."""
    s3vmlfs.run("entry", "add", "e", "--guest", str(big_guest(tmp_path, 1)))
    client, prefix = seaweedfs.client(), s3_store[len(f"s3://{BUCKET}/"):]

    def start(key: str) -> str:
        upload = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=os.urandom(5 << 20))
        return upload

    def pending(under: str) -> list[str]:
        return [u["UploadId"] for u in client.list_multipart_uploads(Bucket=BUCKET, Prefix=under).get("Uploads", [])]

    ours = start(f"{prefix}/objects/layers/{'0' * 64}.tar.zst")
    other = start(f"{prefix}-other/objects/layers/{'1' * 64}.tar.zst")
    kept = s3vmlfs.run("gc")  # the default grace period (an hour): just started, so kept
    assert b"aborted" not in kept.stdout and pending(f"{prefix}/") == [ours]
    time.sleep(1)  # the server stamps an upload's start to the second
    done = s3vmlfs.run("gc", "--grace", "0")
    assert b"aborted 1 interrupted uploads" in done.stdout
    assert pending(f"{prefix}/") == [] and pending(f"{prefix}-other/") == [other]
    client.abort_multipart_upload(Bucket=BUCKET, Key=f"{prefix}-other/objects/layers/{'1' * 64}.tar.zst", UploadId=other)


def test_two_creates_of_one_record_exactly_one_wins(any_s3: S3Server, s3_store: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in any_s3.env(tmp_path).items():
        monkeypatch.setenv(name, value)
    from vmlfs.backends.s3_store import S3Store

    stores = [S3Store(s3_store) for _ in range(8)]
    rel = "entries/x/backups/20260101T000000Z.json"
    start = threading.Barrier(len(stores))
    outcome: list[str] = []

    def commit(i: int) -> None:
        start.wait()
        try:
            stores[i]._create(rel, f"record of host {i}".encode())
            outcome.append(f"won {i}")
        except FileExistsError:
            outcome.append("lost")

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcome if o.startswith("won")]
    assert len(winners) == 1 and outcome.count("lost") == len(stores) - 1
    assert stores[0]._read(rel) == f"record of host {winners[0].split()[1]}".encode()
    stores[1]._create(rel, stores[0]._read(rel))  # a retried create that finds its own bytes had succeeded


def test_a_backup_whose_lease_was_taken_over_does_not_commit(any_s3: S3Server, s3_store: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in any_s3.env(tmp_path).items():
        monkeypatch.setenv(name, value)
    from vmlfs.backends.s3_lease import LeaseLost
    from vmlfs.backends.s3_store import S3Store

    store = S3Store(s3_store)
    rel = "entries/x/backups/20260101T000000Z.json"
    with store.lock("x"):
        any_s3.client().put_object(Bucket="vmlfs-test", Key=store._key("entries/x/.lock"), Body=b'{"host": "other"}')
        with pytest.raises(LeaseLost):
            store._create(rel, b"too late")
    assert not store._exists(rel)
    assert store._read("entries/x/.lock") == b'{"host": "other"}', "release never deletes another holder's lease"


def test_a_server_that_ignores_conditional_writes_is_refused(moto_s3: S3Server, s3_store: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in moto_s3.env(tmp_path).items():
        monkeypatch.setenv(name, value)
    from vmlfs.backends.s3_store import S3Store
    from vmlfs.errors import ReadOnly

    store = S3Store(s3_store)
    honest = store.bucket.put
    monkeypatch.setattr(store.bucket, "put", lambda key, data, **kw: honest(key, data))  # drops If-None-Match
    with pytest.raises(ReadOnly, match="ignores conditional writes"):
        store._create("entries/x/backups/20260101T000000Z.json", b"{}")
    assert not store._exists("entries/x/backups/20260101T000000Z.json")
    with pytest.raises(ReadOnly, match="ignores conditional writes"), store.lock("x"):
        pytest.fail("a backup started on a server whose leases cannot work")
    assert not store._exists("entries/x/.lock"), "the lease it took is gone again"


def test_taking_a_lease_proves_conditional_writes_once(any_s3: S3Server, s3_store: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in any_s3.env(tmp_path).items():
        monkeypatch.setenv(name, value)
    from vmlfs.backends.s3_store import S3Store

    store = S3Store(s3_store)
    puts: list[str] = []
    put = store.bucket.put
    monkeypatch.setattr(store.bucket, "put", lambda key, data, **kw: puts.append(key) or put(key, data, **kw))
    with store.lock("x"):
        store._create("entries/x/backups/20260101T000000Z.json", b"{}")
    assert [k.rsplit("/", 1)[-1] for k in puts] == [".lock", ".lock", ".lock", "20260101T000000Z.json"], puts
    puts.clear()
    with store.lock("x"):
        pass
    assert len(puts) == 1, "proved once per process: one create of the lease"
