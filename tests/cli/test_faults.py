"""Damage, crashes, full disks and locks: detected, reported, nothing else lost."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Vmlfs, snapshot_copy, tree_listing


def make_guest(home: Path, files: int = 40, size: int = 200_000) -> None:
    home.mkdir()
    for i in range(files):
        (home / f"f{i:03d}.dat").write_bytes(os.urandom(size // 2) + b"t" * (size // 2))


@pytest.fixture
def two_backups(vmlfs: Vmlfs, tmp_path: Path) -> tuple[Vmlfs, Path]:
    home = tmp_path / "g"
    make_guest(home)
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("backup", "e")
    (home / "f000.dat").write_bytes(b"changed")
    vmlfs.run("backup", "e")
    return vmlfs, home




def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_flipped_byte_in_a_layer_is_named_by_verify(two_backups: tuple[Vmlfs, Path], tmp_path: Path) -> None:
    v, _ = two_backups
    layer = v.layer_file("e", v.backups("e")[0])
    flip(layer, layer.stat().st_size // 2)
    proc = v.run("verify", check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 7
    assert "layer " in out and "DAMAGED" in out and ".dat" in out  # the damaged file is named
    assert v.backups("e")[0] in proc.stderr.decode()
    # other files of the same backup restore fine; the damaged one is reported, not written
    target = tmp_path / "r"
    restore = v.run("restore", f"e@{v.backups('e')[0]}", str(target), check=False)
    assert restore.returncode == 7 and b"damaged" in restore.stderr
    assert 30 < len(list(target.iterdir())) < 40


def test_flipped_byte_in_a_manifest_is_found(two_backups: tuple[Vmlfs, Path]) -> None:
    v, _ = two_backups
    manifest = v.tree_file("e", v.backups("e")[1])
    flip(manifest, manifest.stat().st_size - 3000)
    proc = v.run("verify", check=False)
    assert proc.returncode == 7
    assert "tree differs" in proc.stdout.decode()
    listing = v.run("ls", f"e@{v.backups('e')[1]}", check=False)
    assert listing.returncode == 7 and b"differs from the sha256" in listing.stderr, "a damaged tree is never used"
    assert v.run("verify", f"e@{v.backups('e')[0]}").returncode == 0, "the other backup is unaffected"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_truncated_extended_or_missing_layer(two_backups: tuple[Vmlfs, Path], damage: str) -> None:
    v, _ = two_backups
    layer = v.layer_file("e", v.backups("e")[1])
    if damage == "truncate":
        os.truncate(layer, layer.stat().st_size - 100)
    elif damage == "garbage":
        with open(layer, "ab") as f:
            f.write(b"garbage after the seek table")
    else:
        layer.unlink()
    proc = v.run("verify", check=False)
    assert proc.returncode == 7, proc.stdout
    assert f"e@{v.backups('e')[1]}" in proc.stderr.decode()
    assert v.run("verify", f"e@{v.backups('e')[0]}").returncode == 0


def test_malformed_metadata_marks_only_that_backup_invalid(two_backups: tuple[Vmlfs, Path]) -> None:
    v, _ = two_backups
    (v.store / "entries" / "e" / "backups" / f"{v.backups('e')[1]}.json").write_bytes(b"\xff{not json")
    listing = v.run("list", "e").stdout.decode().splitlines()
    assert "INVALID" in listing[1] and "full" in listing[0]
    assert v.run("verify", "e", check=False).returncode == 7
    v.run("backup", "e")  # the next backup bases itself on the newest readable one


def test_newer_store_format_is_refused(vmlfs: Vmlfs, tmp_path: Path) -> None:
    vmlfs.run("entry", "list")
    header = vmlfs.store / "vmlfs-store.json"
    header.write_text(header.read_text().replace('"2.0"', '"3.0"'))
    proc = vmlfs.run("entry", "list", check=False)
    assert proc.returncode == 8 and b"newer than this vmlfs" in proc.stderr and b"Traceback" not in proc.stderr


def test_invalid_entry_names_are_refused(vmlfs: Vmlfs, tmp_path: Path) -> None:
    for bad in ["..", "a/b", "", "x" * 65, "bad\nname", "-rf"]:
        proc = vmlfs.run("entry", "add", bad, "--guest", str(tmp_path), check=False)
        if bad == "-rf":
            assert proc.returncode == 2  # click reads it as an option: refused either way
            continue
        assert proc.returncode == 2 and b"invalid entry name" in proc.stderr, bad
    assert not (vmlfs.store / "entries").exists() or list((vmlfs.store / "entries").iterdir()) == []


def test_sigkill_at_several_points_loses_nothing(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "g"
    make_guest(home, files=300, size=400_000)
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("-q", "backup", "e")
    first = vmlfs.backups("e")
    copy = snapshot_copy(home, tmp_path / "copy")
    for i in range(300):
        (home / f"f{i:03d}.dat").write_bytes(os.urandom(400_000))
    t0 = time.monotonic()
    vmlfs.run("-q", "backup", "e", "--kind", "full")
    duration = time.monotonic() - t0
    second = vmlfs.backups("e")
    kills = 0
    for fraction in (0.15, 0.35, 0.55, 0.75, 0.9):
        proc = vmlfs.popen("-q", "backup", "e", "--kind", "full")
        time.sleep(duration * fraction)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert vmlfs.backups("e")[: len(second)] == second
        if len(vmlfs.backups("e")) > len(second):  # the backup finished before the kill: fine, drop it from the count
            second = vmlfs.backups("e")
    assert kills >= 3
    vmlfs.run("verify")
    vmlfs.run("-q", "backup", "e")  # the next run works and cleans the leftovers
    assert not any((vmlfs.store / "entries" / "e" / ".tmp").iterdir())
    target = tmp_path / "r"
    vmlfs.run("restore", f"e@{first[0]}", str(target))
    assert tree_listing(target) == tree_listing(copy)


def test_second_backup_is_refused_while_one_runs_and_stale_lock_is_taken_over(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "g"
    make_guest(home, files=5)
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    lock = vmlfs.store / "entries" / "e" / ".lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"], start_new_session=True)
    try:
        for _ in range(50):
            if subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0:
                break
            time.sleep(0.05)
        lock.write_text(f"{holder.pid} {os.uname().nodename}\n")
        proc = vmlfs.run("backup", "e", check=False)
        assert proc.returncode == 5
        assert f"locked by pid {holder.pid}".encode() in proc.stderr
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(f"{dead.pid} {os.uname().nodename}\n")
    proc = vmlfs.run("backup", "e")
    assert f"stale lock left by dead pid {dead.pid}".encode() in proc.stderr
    assert len(vmlfs.backups("e")) == 1


def test_full_disk_fails_cleanly(vmlfs: Vmlfs, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        store = small / "store"
        v = Vmlfs(store, dict(vmlfs.env, VMLFS_STORE=str(store)))
        home = tmp_path / "g"
        make_guest(home, files=3, size=100_000)
        v.run("entry", "add", "e", "--guest", str(home))
        v.run("backup", "e")
        (home / "big.bin").write_bytes(os.urandom(5 << 20))
        proc = v.run("backup", "e", check=False)
        assert proc.returncode == 13, proc.stderr
        assert b"No space left" in proc.stderr or b"full" in proc.stderr
        assert b"Traceback" not in proc.stderr
        assert len(v.backups("e")) == 1
        assert not any((store / "entries" / "e" / ".tmp").iterdir())
        v.run("verify")
    finally:
        subprocess.run(["umount", "-l", str(small)])
