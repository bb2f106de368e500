"""Format 2 through the real CLI: shared trees, forget, protect, gc (repack, two-step deletion), crashes, anomalies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Vmlfs, one_file_guest, snapshot_copy, tree_listing

KINDS = ["full", "incremental", "incremental", "differential", "incremental", "full",
         "incremental", "differential", "differential", "incremental", "full", "incremental"]


def store_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


def change(home: Path, step: int) -> None:
    """A different edit each step: new, changed, deleted, renamed files and a directory."""
    (home / f"new-{step}.txt").write_text(f"step {step}\n" * 50)
    (home / "data" / f"f{step % 10}.bin").write_bytes(os.urandom(30_000))
    if step % 3 == 0 and (home / f"new-{step - 2}.txt").exists():
        (home / f"new-{step - 2}.txt").unlink()
    if step == 4:
        (home / "data" / "f9.bin").rename(home / "moved.bin")
    if step == 7:
        shutil.rmtree(home / "sub")
    if step == 9:
        (home / "sub").mkdir()
        (home / "sub" / "back").write_text("a new directory where an old one was")


@pytest.fixture(scope="module")
def twelve_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Vmlfs, dict[str, Path]]:
    """12 backups of a changing guest, each with a cp -a copy of the guest at its time: made once for
    the module, since backups a second apart (their names are timestamps) take 12 s of waiting."""
    tmp_path = tmp_path_factory.mktemp("twelve")
    vmlfs = Vmlfs(tmp_path / "store", dict(os.environ, VMLFS_STORE=str(tmp_path / "store"), PYTHONUNBUFFERED="1"))
    home = tmp_path / "g"
    (home / "data").mkdir(parents=True)
    (home / "sub" / "deep").mkdir(parents=True)
    for i in range(10):
        (home / "data" / f"f{i}.bin").write_bytes(os.urandom(30_000))
    (home / "sub" / "deep" / "x.txt").write_text("x")
    os.link(home / "data" / "f0.bin", home / "hard-f0")
    os.symlink("data/f1.bin", home / "link")
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    copies: dict[str, Path] = {}
    for step, kind in enumerate(KINDS):
        if step:
            change(home, step)
            time.sleep(1.05)
        vmlfs.run("-q", "backup", "e", "--kind", kind)
        copies[vmlfs.backups("e")[-1]] = snapshot_copy(home, tmp_path / f"copy{step}")
    return vmlfs, copies


@pytest.fixture
def twelve(twelve_once: tuple[Vmlfs, dict[str, Path]], tmp_path: Path) -> tuple[Vmlfs, dict[str, Path]]:
    """A copy of the module's twelve backups, the test's own to forget, collect and kill in
    (the guest copies are only read)."""
    made, copies = twelve_once
    store = tmp_path / "store"
    shutil.copytree(made.store, store, symlinks=True)
    return Vmlfs(store, made.env | {"VMLFS_STORE": str(store)}), copies


def check_all(v: Vmlfs, copies: dict[str, Path], tmp_path: Path, tag: str) -> None:
    """verify is clean and every remaining backup restores exactly as the guest was."""
    v.run("-q", "verify")
    for ts in v.backups("e"):
        target = tmp_path / f"r-{tag}-{ts}"
        v.run("-q", "restore", f"e@{ts}", str(target))
        assert tree_listing(target) == tree_listing(copies[ts]), (tag, ts)
        shutil.rmtree(target)


@pytest.mark.slow
def test_forget_in_several_orders_keeps_every_other_backup_exact(twelve: tuple[Vmlfs, dict[str, Path]], tmp_path: Path) -> None:
    v, copies = twelve
    stamps = v.backups("e")
    check_all(v, copies, tmp_path, "all")
    orders = {
        "oldest-first": [stamps[0], stamps[1], stamps[2]],
        "the-fulls": [stamps[0], stamps[5], stamps[10]],
        "middles": [stamps[3], stamps[7], stamps[8], stamps[4]],
        "all-but-one": stamps[:-1],
    }
    pristine = tmp_path / "pristine"
    shutil.copytree(v.store, pristine, symlinks=True)
    for tag, doomed in orders.items():
        shutil.rmtree(v.store)
        shutil.copytree(pristine, v.store, symlinks=True)
        for i in range(0, len(doomed), 2):  # several forget calls, gc between some of them
            v.run("-q", "forget", *(f"e@{ts}" for ts in doomed[i:i + 2]))
            if i % 4 == 0:
                v.run("-q", "gc", "--grace", "0")
        out = v.run("gc", "--grace", "0").stdout.decode()
        assert "gc:" in out
        assert v.backups("e") == [ts for ts in stamps if ts not in doomed]
        assert not list((v.store / "objects" / "garbage").iterdir()), "no mount holds anything: all purged"
        check_all(v, copies, tmp_path, tag)
        v.run("-q", "backup", "e")  # the history goes on
        v.run("-q", "verify")


def test_protect_newest_and_refusals(vmlfs: Vmlfs, tmp_path: Path) -> None:
    one_file_guest(vmlfs, tmp_path / "g", "e", "a", "a")
    time.sleep(1.05)
    vmlfs.run("-q", "backup", "e")
    first, second = vmlfs.backups("e")
    vmlfs.run("protect", f"e@{first}")
    assert "protected" in vmlfs.run("list", "e").stdout.decode().splitlines()[0]
    refused = vmlfs.run("forget", f"e@{first}", f"e@{second}", check=False)
    assert refused.returncode == 6 and b"protected" in refused.stderr
    assert vmlfs.backups("e") == [first, second], "a refused forget removes nothing"
    for vague in ("e@latest", "e", f"e@{second[:8]}"):
        proc = vmlfs.run("forget", vague, check=False)
        assert proc.returncode == 2 and b"full timestamp" in proc.stderr, vague
    assert vmlfs.run("forget", "e@20000101T000000Z", check=False).returncode == 3
    vmlfs.run("forget", f"e@{second}")  # the newest, named explicitly
    assert vmlfs.backups("e") == [first]
    vmlfs.run("unprotect", f"e@{first}")
    vmlfs.run("forget", f"e@{first}")
    vmlfs.run("gc", "--grace", "0")
    assert vmlfs.layer_files() == [] and not list((vmlfs.store / "objects" / "trees").iterdir())


def test_no_change_backup_adds_only_its_record(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "g"
    (home / "d").mkdir(parents=True)
    for i in range(2000):
        (home / "d" / f"f{i}").write_text(str(i))
    env = tmp_path / "env"
    env.write_text("A=1\n")
    vmlfs.run("entry", "add", "e", "--guest", str(home), "--env-file", str(env))
    vmlfs.run("-q", "backup", "e")
    (home / "d" / "f1").write_text("changed")
    time.sleep(1.05)
    vmlfs.run("-q", "backup", "e")
    before = store_bytes(vmlfs.store / "objects")
    time.sleep(1.05)
    vmlfs.run("-q", "backup", "e")
    second, third = vmlfs.backups("e")[1:]
    assert vmlfs.record("e", third)["manifest"] == vmlfs.record("e", second)["manifest"], "the same tree object"
    assert vmlfs.record("e", second)["manifest"]["base"] is not None, "stored as a delta"
    assert store_bytes(vmlfs.store / "objects") - before < 1024, "at most an empty layer, shared by later no-change backups"
    assert vmlfs.tree_file("e", second).stat().st_size < 64 << 10


def test_gc_repacks_a_mostly_dead_layer_and_frees_the_dead_bytes(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "g"
    home.mkdir()
    for i in range(10):
        (home / f"f{i}.bin").write_bytes(os.urandom(100_000))
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("-q", "backup", "e")
    full = vmlfs.backups("e")[0]
    full_layer = vmlfs.layer_file("e", full)
    for i in range(7):
        (home / f"f{i}.bin").write_bytes(os.urandom(100_000))
    time.sleep(1.05)
    vmlfs.run("-q", "backup", "e")
    copy = snapshot_copy(home, tmp_path / "copy")
    vmlfs.run("-q", "forget", f"e@{full}")
    kept = vmlfs.run("gc", "--grace", "0", "--repack-threshold", "0.8").stdout.decode()
    assert "repacked 0 layers" in kept and full_layer.exists(), "70 % dead is under an 80 % threshold"
    before = sum(p.stat().st_size for p in vmlfs.layer_files())
    out = vmlfs.run("gc", "--grace", "0").stdout.decode()
    assert "repacking layer" in out and "repacked 1 layers" in out
    assert not full_layer.exists()
    after = sum(p.stat().st_size for p in vmlfs.layer_files())
    assert 650_000 < before - after < 750_000, "the 7 dead files (random, incompressible) are freed"
    vmlfs.run("-q", "verify")
    vmlfs.run("-q", "restore", "e", str(tmp_path / "r"))
    assert tree_listing(tmp_path / "r") == tree_listing(copy)
    again = vmlfs.run("gc", "--grace", "0").stdout.decode()
    assert "moved aside nothing" in again and "repacked 0 layers" in again


def test_garbage_waits_for_the_grace_period(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "g"
    home.mkdir()
    (home / "a").write_bytes(os.urandom(10_000))
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("-q", "backup", "e")
    (home / "a").write_bytes(os.urandom(10_000))
    time.sleep(1.05)
    vmlfs.run("-q", "backup", "e")
    vmlfs.run("-q", "forget", f"e@{vmlfs.backups('e')[0]}")
    leftover = vmlfs.store / "objects" / "layers" / f"{'0' * 64}.tar.zst.4242.tmp"
    leftover.write_bytes(b"an upload a crash interrupted")
    out = vmlfs.run("gc").stdout.decode()
    assert not leftover.exists()
    assert "deleted 0 objects" in out and "kept for the grace period" in out
    assert list((vmlfs.store / "objects" / "garbage").iterdir())
    assert "deleted 2 objects" in vmlfs.run("gc", "--grace", "0").stdout.decode()


def test_backups_with_impossible_times_are_listed_as_such(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "g"
    home.mkdir()
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("-q", "backup", "e")
    ts = vmlfs.backups("e")[0]
    record = vmlfs.record("e", ts)
    path = vmlfs.store / "entries" / "e" / "backups" / f"{ts}.json"
    path.write_text(json.dumps(record | {"completed": "2001-01-01T00:00:00+00:00"}))
    assert "TIMES? completed" in vmlfs.run("list", "e").stdout.decode()
    future = "20991231T000000Z"
    (path.with_name(f"{future}.json")).write_text(json.dumps(record | {"timestamp": future}))
    lines = vmlfs.run("list", "e").stdout.decode().splitlines()
    assert "TIMES? completed" in lines[0], "the backup with impossible times is still listed as such"
    assert future in lines[1] and "lies in the future" in lines[1], "a far-future name is one damaged backup, with its reason"


@pytest.mark.slow
@pytest.mark.parametrize("point", ["forget-record#2", "gc-repoint", "gc-discard#2", "gc-purge#2"])
def test_sigkill_in_forget_or_gc_leaves_every_remaining_backup_whole(
        twelve: tuple[Vmlfs, dict[str, Path]], tmp_path: Path, point: str) -> None:
    v, copies = twelve
    stamps = v.backups("e")
    doomed = [stamps[0], stamps[2], stamps[3]]
    killed = Vmlfs(v.store, v.env | {"VMLFS_KILL_AT": point})
    if point.startswith("forget"):
        proc = killed.run("forget", *(f"e@{ts}" for ts in doomed), check=False)
    else:
        v.run("-q", "forget", *(f"e@{ts}" for ts in doomed))
        proc = killed.run("gc", "--grace", "0", "--repack-threshold", "0.01", check=False)
    assert proc.returncode == -9, proc
    check_all(v, copies, tmp_path, point)
    left = [f"e@{ts}" for ts in doomed if ts in v.backups("e")]
    if left:
        v.run("-q", "forget", *left)
    v.run("-q", "gc", "--grace", "0")
    assert "moved aside nothing" in v.run("gc", "--grace", "0").stdout.decode(), "the next gc finished the work"
    assert not list((v.store / "objects" / "garbage").iterdir())
    check_all(v, copies, tmp_path, point + "-after")


def golden(tmp_path: Path) -> tuple[Path, dict]:
    """The format-1 store of tests/data, written by the format-1 code, and what each backup restores to."""
    data = Path(__file__).resolve().parents[1] / "data"
    subprocess.run(["tar", "-C", str(tmp_path), "-xzf", str(data / "format1-store.tar.gz")], check=True)
    return tmp_path / "store", json.loads((data / "format1-store.json").read_text())


def restored(v: Vmlfs, ts: str, target: Path) -> dict:
    v.run("-q", "restore", f"golden@{ts}", str(target))
    out = {}
    for dirpath, dirnames, filenames in os.walk(target):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel, st = os.path.relpath(p, target), os.lstat(p)
            if os.path.islink(p):
                out[rel] = ["l", os.readlink(p)]
            elif os.path.isdir(p):
                out[rel] = ["d", oct(st.st_mode & 0o7777)]
            else:
                import hashlib

                out[rel] = ["f", hashlib.sha256(Path(p).read_bytes()).hexdigest(), st.st_mtime_ns, st.st_nlink]
    shutil.rmtree(target)
    return out


def check_golden(v: Vmlfs, expected: dict, tmp_path: Path) -> None:
    listing = v.run("list", "golden").stdout.decode()
    assert [line[:16] for line in listing.splitlines()] == sorted(expected)
    v.run("-q", "verify")
    for ts, tree in expected.items():
        assert restored(v, ts, tmp_path / f"r-{ts}") == tree, ts


def test_format1_store_is_read_then_upgraded_in_place(vmlfs: Vmlfs, tmp_path: Path) -> None:
    store, expected = golden(tmp_path)
    v = Vmlfs(store, vmlfs.env | {"VMLFS_STORE": str(store)})
    check_golden(v, expected, tmp_path)
    refused = v.run("forget", f"golden@{sorted(expected)[0]}", check=False)
    assert refused.returncode == 2 and b"store upgrade" in refused.stderr
    dry = v.run("store", "upgrade", "--dry-run").stdout.decode()
    assert "would convert 3 backups" in dry and not (store / "objects").exists()
    out = v.run("store", "upgrade").stdout.decode()
    assert "converted 3 backups" in out and "verified: 3 backups" in out
    assert json.loads((store / "vmlfs-store.json").read_text())["version"] == "2.0"
    assert not [p for p in (store / "entries" / "golden" / "backups").iterdir() if p.is_dir()]
    check_golden(v, expected, tmp_path)
    (store / "entries" / "golden" / "entry.json").write_text(
        (store / "entries" / "golden" / "entry.json").read_text().replace('"/guest"', json.dumps(str(tmp_path))))
    v.run("-q", "forget", f"golden@{sorted(expected)[0]}")
    v.run("-q", "gc", "--grace", "0")
    v.run("-q", "verify")


@pytest.mark.parametrize("point", ["upgrade-backup#1", "upgrade-backup#3", "upgrade-commit", "upgrade-cleanup#2"])
def test_sigkill_during_upgrade_leaves_format_1_or_format_2(vmlfs: Vmlfs, tmp_path: Path, point: str) -> None:
    store, expected = golden(tmp_path)
    v = Vmlfs(store, vmlfs.env | {"VMLFS_STORE": str(store)})
    proc = Vmlfs(store, v.env | {"VMLFS_KILL_AT": point}).run("store", "upgrade", check=False)
    assert proc.returncode == -9
    version = json.loads((store / "vmlfs-store.json").read_text())["version"]
    assert version == ("2.0" if point == "upgrade-cleanup#2" else "1.0")
    check_golden(v, expected, tmp_path)
    assert "converted" in v.run("store", "upgrade").stdout.decode() or version == "2.0"
    check_golden(v, expected, tmp_path)
    assert not [p for p in (store / "entries" / "golden" / "backups").iterdir() if p.is_dir()]
