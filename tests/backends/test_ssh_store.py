"""A store kept on another machine over SSH (a real sshd on 127.0.0.1): every command against it,
manifests cached by content hash, layers read by range, the remote entry lock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.archive.test_lying_seek_table import one_frame_of, rewrite
from tests.backends.conftest import KillOnFirstFile, Sshd
from tests.cli.test_backup_cycle import build_guest, change_guest
from tests.conftest import Vmlfs, as_mounted, peak_rss_kib, snapshot_copy, tree_listing
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.ssh_runner import ConnectionLost
from vmlfs.backends.ssh_store import SshStore
from vmlfs.engine.backup import run_backup
from vmlfs.errors import Busy, CorruptData

pytestmark = pytest.mark.sshd


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return tmp_path / "remote store; it's"


@pytest.fixture
def cli(vmlfs: Vmlfs, sshd: Sshd, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Vmlfs:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    vmlfs.env = sshd.env(vmlfs.env) | {"VMLFS_STORE": sshd.url(str(remote)), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    vmlfs.store = remote
    return vmlfs


def test_every_command_against_an_ssh_store(cli: Vmlfs, sshd: Sshd, remote: Path, tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    build_guest(guest)
    cli.run("entry", "add", "e", "--guest", sshd.url(str(guest)))  # SSH guest into an SSH store
    copies = []
    for step, kind in enumerate(["full", "incremental", "differential"]):
        if step:
            change_guest(guest, step)
        cli.run("backup", "e", "--kind", kind)
        copies.append(snapshot_copy(guest, tmp_path / f"copy{step}"))
    assert [line.split()[1] for line in cli.run("list", "e").stdout.decode().splitlines()] == ["full", "incremental", "differential"]
    assert "run.C" in cli.run("ls", "e", "analysis").stdout.decode()
    for step, ts in enumerate(cli.backups("e")):
        cli.run("restore", f"e@{ts}", str(tmp_path / f"r{step}"))
        assert tree_listing(tmp_path / f"r{step}") == tree_listing(copies[step])
    assert "ok: 3 backups" in cli.run("verify").stdout.decode()
    assert not list(remote.rglob("*.tmp")), "no upload is left under a temporary name"
    assert (remote / "vmlfs-store.json").exists() and "e" in cli.run("entry", "list").stdout.decode()
    cli.run("entry", "remove", "e", "--yes")
    assert not (remote / "entries" / "e").exists()


def test_damage_on_the_host_is_found_and_the_cache_never_serves_stale_data(cli: Vmlfs, sshd: Sshd, remote: Path, tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    (guest / "a.txt").write_text("first")
    cli.run("entry", "add", "e", "--guest", str(guest))
    cli.run("backup", "e")
    ts = cli.backups("e")[0]
    assert "a.txt" in cli.run("ls", "e").stdout.decode()
    cached = list((tmp_path / "cache").rglob("*.sqlite"))
    assert [p.name for p in cached] == [f"{cli.record('e', ts)['manifest']['sha256']}.sqlite"]
    cached[0].unlink()
    manifest = cli.tree_file("e", ts)
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0x01
    manifest.write_bytes(bytes(data))
    proc = cli.run("verify", check=False)
    assert proc.returncode == 7 and b"tree differs" in proc.stdout
    data[len(data) // 2] ^= 0x01
    manifest.write_bytes(bytes(data))
    # A backup replaced on the host under the same name: a new record, a new tree hash, a new cache key.
    (guest / "b.txt").write_text("second")
    cli.run("backup", "e")
    newer = remote / "entries" / "e" / "backups" / f"{cli.backups('e')[1]}.json"
    record = json.loads(newer.read_text()) | {"timestamp": ts}
    (remote / "entries" / "e" / "backups" / f"{ts}.json").write_text(json.dumps(record))
    newer.unlink()
    assert "b.txt" in cli.run("ls", f"e@{ts}").stdout.decode()


def test_layers_are_read_by_range(sshd: Sshd, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Vmlfs) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    (guest / "big.bin").write_bytes(os.urandom(12 << 20))
    (guest / "small.txt").write_text("needle")
    cli.run("entry", "add", "e", "--guest", str(guest))
    cli.run("backup", "e")
    store = SshStore(sshd.url(str(remote)), create=False)
    try:
        ts = cli.backups("e")[0]
        manifest = store.open_manifest("e", ts)
        node = manifest.lookup(b"small.txt")
        layer = store.open_layer("e", node.layer)
        assert layer.read(node.data_offset, node.size) == b"needle"  # type: ignore[arg-type]
        assert layer.frames_decompressed == 1, "one frame of a 12 MiB layer"
        manifest.close()
    finally:
        store.close()


def test_the_entry_lock_is_held_on_the_store_host(sshd: Sshd, remote: Path, cli: Vmlfs, tmp_path: Path) -> None:
    cli.run("entry", "add", "e", "--guest", str(tmp_path))
    first, second = SshStore(sshd.url(str(remote))), SshStore(sshd.url(str(remote)))
    try:
        with first.lock("e"):
            with pytest.raises(Busy, match="locked by pid [0-9]+"):
                second.lock("e").acquire()
            proc = cli.run("backup", "e", check=False)
            assert proc.returncode == 5 and b"locked by pid" in proc.stderr
        with second.lock("e"):
            pass
    finally:
        first.close()
        second.close()
    store = SshStore(sshd.url(str(remote)))
    try:
        with pytest.raises(CorruptData, match="layer file is missing"):
            store.open_layer("e", "0" * 64)
    finally:
        store.close()


def test_store_connection_dropped_mid_backup_commits_nothing(sshd: Sshd, remote: Path, cli: Vmlfs, tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    for i in range(8):
        (guest / f"f{i}").write_bytes(os.urandom(1 << 20))
    cli.run("entry", "add", "e", "--guest", str(guest))
    store = SshStore(sshd.url(str(remote)))
    cfg = store.load_entry("e")

    with pytest.raises(ConnectionLost):
        run_backup(store, cfg, LocalGuest(guest), progress=KillOnFirstFile(sshd))
    assert cli.backups("e") == [] and not list(Path(tempfile.gettempdir()).glob("vmlfs-e-*"))
    cli.run("backup", "e")
    assert len(cli.backups("e")) == 1
    cli.run("verify")


@pytest.mark.fuse
def test_an_ssh_store_mounted_and_read_with_cp_a(cli: Vmlfs, sshd: Sshd, remote: Path, tmp_path: Path) -> None:
    if not (os.path.exists("/dev/fuse") and shutil.which("fusermount3")):
        pytest.skip("needs /dev/fuse and fusermount3")
    guest = tmp_path / "guest"
    guest.mkdir()
    build_guest(guest)
    cli.run("entry", "add", "e", "--guest", str(guest))
    cli.run("backup", "e")
    copy = snapshot_copy(guest, tmp_path / "copy")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cli.run("mount", str(mnt))  # in the background: the store connection is opened after the fork
    try:
        ts = cli.backups("e")[0]
        home = mnt / "entries" / "e" / ts / "home"
        subprocess.run(["cp", "-a", str(home), str(tmp_path / "out")], check=True)
        assert tree_listing(tmp_path / "out") == as_mounted(tree_listing(copy))
        assert os.readlink(mnt / "entries" / "e" / "latest") == ts
        (guest / "new-after-mount.txt").write_text("appears without remounting")
        cli.run("backup", "e")
        newest = cli.backups("e")[-1]
        assert (mnt / "entries" / "e" / newest / "home" / "new-after-mount.txt").read_text() == "appears without remounting"
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)])


def test_retries_reopen_a_dropped_store_connection(sshd: Sshd, remote: Path, cli: Vmlfs, tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    for i in range(40):
        (guest / f"f{i}").write_bytes(os.urandom(1 << 20))
    cli.run("entry", "add", "e", "--guest", str(guest))
    proc = cli.popen("backup", "e", "--retries", "3")
    for _ in range(200):  # kill the sessions once the backup is under way
        if (remote / "entries" / "e" / ".lock").exists() and sshd.drop_connections():
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"retrying (1/3)" in err, "the connection was dropped while the backup ran"
    assert len(cli.backups("e")) == 1
    cli.run("verify")


def test_store_host_key_has_its_own_option_on_every_command(cli: Vmlfs, sshd: Sshd, tmp_path: Path) -> None:
    """An unknown store host key is refused with a hint naming the store's option, which every command
    takes (it is global); trusting a new guest key never trusts a new store key."""
    guest = tmp_path / "guest"
    guest.mkdir()
    (guest / "f").write_text("x")
    cli.run("entry", "add", "e", "--guest", str(guest))
    sshd.known_hosts.write_text("")
    for args in (["list", "e"], ["verify"], ["entry", "list"], ["backup", "e", "--accept-new-host-key"]):
        refused = cli.run(*args, check=False)
        assert refused.returncode == 10, (args, refused.stderr)
        assert b"pass --accept-new-store-host-key to trust it" in refused.stderr, (args, refused.stderr)
    cli.run("--accept-new-store-host-key", "backup", "e")
    assert "127.0.0.1" in sshd.known_hosts.read_text()
    assert len(cli.run("list", "e").stdout.decode().splitlines()) == 1  # trusted from now on


def test_an_unknown_store_url_scheme_is_refused(vmlfs: Vmlfs, tmp_path: Path) -> None:
    refused = vmlfs.run("--store", "ftp://bucket/prefix", "entry", "list", check=False)
    assert refused.returncode == 2 and b"unknown URL scheme 'ftp'" in refused.stderr
    assert not (Path.cwd() / "ftp:").exists()


def test_forget_and_gc_over_ssh(cli: Vmlfs, remote: Path, tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    guest.mkdir()
    for i in range(5):
        (guest / f"f{i}").write_bytes(os.urandom(50_000))
    cli.run("entry", "add", "e", "--guest", str(guest))
    cli.run("-q", "backup", "e")
    for i in range(4):
        (guest / f"f{i}").write_bytes(os.urandom(50_000))
    time.sleep(1.05)
    cli.run("-q", "backup", "e")
    copy = snapshot_copy(guest, tmp_path / "copy")
    first = cli.backups("e")[0]
    cli.run("protect", f"e@{first}")
    assert cli.run("forget", f"e@{first}", check=False).returncode == 6
    cli.run("unprotect", f"e@{first}")
    cli.run("forget", f"e@{first}")
    out = cli.run("gc", "--grace", "0").stdout.decode()
    assert "repacked 1 layers" in out and "deleted" in out
    assert not list((remote / "objects" / "garbage").iterdir()) and not list(remote.rglob("*.tmp"))
    cli.run("-q", "verify")
    cli.run("-q", "restore", "e", str(tmp_path / "r"))
    assert tree_listing(tmp_path / "r") == tree_listing(copy)


def test_a_1_gib_frame_in_an_ssh_store_costs_bounded_memory(cli: Vmlfs, remote: Path, tmp_path: Path) -> None:
    """SFTP range reads go through the same frame checks: a layer bomb is a named damaged file."""
    guest = tmp_path / "g"
    guest.mkdir()
    (guest / "notes.txt").write_text("hello\n")
    cli.run("entry", "add", "e", "--guest", str(guest))
    cli.run("backup", "e")
    record = json.loads((remote / "entries" / "e" / "backups" / f"{cli.backups('e')[0]}.json").read_text())
    layer = remote / "objects" / "layers" / f"{record['layer']['sha256']}.tar.zst"
    frame = one_frame_of(1 << 30)
    rewrite(layer, frame, [(len(frame), 1 << 20)])  # the object keeps its name: restore reads it frame by frame
    code, rss, text = peak_rss_kib("restore", "e", str(tmp_path / "r"), env=cli.env)
    assert code == 7 and "notes.txt" in text and "Traceback" not in text, text
    assert rss < 150_000, f"peak RSS {rss} KiB for a 1 GiB frame"
