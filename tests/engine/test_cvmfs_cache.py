"""The CernVM-FS cache part of a backup, from a local-directory guest laid out as a real client's
cache (tests/cvmfs_cache.py): what is captured and what never is, the cache base from the guest's
configuration, cross-entry deduplication measured in bytes, restore, GNU tar, verify, gc."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Vmlfs
from tests.cvmfs_cache import NEVER, cached_files, make_cache, objects
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.engine.backup import run_backup
from vmlfs.engine.cvmfs import CERNVM4_BASE, CvmfsSource, cache_base
from vmlfs.engine.guest import FileChanged
from vmlfs.engine.model import EntryConfig
from vmlfs.errors import GuestError, InvalidRequest


def guest_root(tmp_path: Path, name: str = "root", config: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A guest's file system: a home and /etc/cvmfs (``config``: relative name -> text); returns (root, home)."""
    root = tmp_path / name
    home = root / "home" / "physicist"
    home.mkdir(parents=True)
    (home / "analysis.C").write_text("void analysis() {}\n")
    for rel, text in (config or {}).items():
        (root / "etc" / "cvmfs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "etc" / "cvmfs" / rel).write_text(text)
    return root, home


CERNVM4 = {"default.conf": "CVMFS_CACHE_BASE=/var/lib/cvmfs\nCVMFS_QUOTA_LIMIT=4000\n",
           "default.d/50-cernvm.conf": "# place cvmfs cache on r/w layer\nCVMFS_CACHE_BASE=/mnt/.rw/cvmfs-cache\n"}


def cvmfs_part(v: Vmlfs, entry: str, ts: str | None = None) -> dict:
    return v.record(entry, ts or v.backups(entry)[-1])["cvmfs"]


def layer_path(v: Vmlfs, part: dict) -> Path:
    return v.store / "objects" / "layers" / f"{part['layer']['sha256']}.tar.zst"


def two_vms(v: Vmlfs, tmp_path: Path, common: dict[str, bytes], only1: dict[str, bytes], only2: dict[str, bytes],
            repositories2: tuple[str, ...] = ("atlas.cern.ch", "sft.cern.ch")) -> Path:
    """Entries vm1 and vm2 whose guests' caches share ``common``, each backed up once with its cache
    (vm1 first); returns vm2's ``shared/``."""
    root1, home1 = guest_root(tmp_path, "vm1", CERNVM4)
    root2, home2 = guest_root(tmp_path, "vm2", CERNVM4)
    make_cache(root1 / "mnt/.rw/cvmfs-cache", common | only1)
    shared2 = make_cache(root2 / "mnt/.rw/cvmfs-cache", common | only2, repositories=repositories2)
    for name, root, home in (("vm1", root1, home1), ("vm2", root2, home2)):
        v.run("entry", "add", name, "--guest", str(home), "--cvmfs-root", str(root), "--with-cvmfs-cache")
        v.run("backup", name)
    return shared2


def test_the_cache_base_comes_from_the_configuration_in_cvmfs_order() -> None:
    assert cache_base([]) == (CERNVM4_BASE, [])
    files = [("/etc/cvmfs/default.conf", b"CVMFS_CACHE_BASE=/var/lib/cvmfs\n"),
             ("/etc/cvmfs/default.d/50-cernvm.conf", b"CVMFS_CACHE_BASE=/mnt/.rw/cvmfs-cache\n")]
    assert cache_base(files)[0] == "/mnt/.rw/cvmfs-cache"
    local = files + [("/etc/cvmfs/default.local", b'export CVMFS_CACHE_BASE="/scratch/cache/"  # big disk\n')]
    assert cache_base(local)[0] == "/scratch/cache"
    base, notes = cache_base(files + [("/etc/cvmfs/default.local", b"CVMFS_SHARED_CACHE=no\n")])
    assert base == "/mnt/.rw/cvmfs-cache" and "per-repository caches are not" in notes[0]
    for bad in (b"CVMFS_CACHE_BASE=$HOME/cache", b"CVMFS_CACHE_BASE=relative", b"CVMFS_CACHE_BASE=/a/../etc"):
        with pytest.raises(InvalidRequest, match="not a plain absolute path"):
            cache_base([("/etc/cvmfs/default.local", bad)])


def test_backup_captures_objects_and_checksums_never_the_database_pipes_txn_or_quarantaine(vmlfs: Vmlfs, tmp_path: Path) -> None:
    root, home = guest_root(tmp_path, config=CERNVM4)
    cache = objects(1000)
    shared = make_cache(root / "mnt/.rw/cvmfs-cache", cache)
    vmlfs.run("entry", "add", "e1", "--guest", str(home), "--cvmfs-root", str(root))
    plain = vmlfs.run("backup", "e1")  # the entry's default: no cache
    assert "CernVM-FS" not in plain.stdout.decode() and "cvmfs" not in vmlfs.record("e1", vmlfs.backups("e1")[0])
    t0 = time.monotonic()
    out = vmlfs.run("backup", "e1", "--with-cvmfs-cache")
    took = time.monotonic() - t0
    assert "CernVM-FS cache /mnt/.rw/cvmfs-cache: 1000 objects" in out.stdout.decode(), out.stdout
    assert "warning" not in out.stderr.decode(), "pipes, sockets and the rest of shared/ are no news"
    part = cvmfs_part(vmlfs, "e1")
    assert part["base"] == "/mnt/.rw/cvmfs-cache" and part["objects"] == part["stored_objects"] == 1000
    assert part["bytes"] == part["stored_bytes"] == sum(map(len, cache.values()))
    assert part["repositories"] == ["atlas.cern.ch", "sft.cern.ch"]
    members = subprocess.run(["tar", "--zstd", "-tf", str(layer_path(vmlfs, part))], capture_output=True, text=True,
                             check=True).stdout.split()
    assert all(m.startswith("shared/") or m == "shared" for m in members)
    for never in NEVER:
        assert not any(m.rstrip("/").split("/")[1:2] == [never] for m in members), never
    print(f"captured 1000 objects ({part['bytes']} bytes) in {took:.2f} s (the whole vmlfs backup command)")
    # GNU tar alone gives the cache back: the layer is a standard .tar.zst, members relative to the cache base.
    untarred = tmp_path / "untarred"
    untarred.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(layer_path(vmlfs, part)), "-C", str(untarred)], check=True)
    assert cached_files(untarred / "shared") == cached_files(shared)
    assert sorted(p.name for p in (untarred / "shared").iterdir() if p.is_dir()) == [f"{i:02x}" for i in range(256)]
    assert vmlfs.run("verify").stdout.decode().startswith("ok: 2 backups, 1004 files")  # 2 homes, 1000 objects, 2 checksums


def test_an_entry_default_and_a_cache_base_named_instead_of_configured(vmlfs: Vmlfs, tmp_path: Path) -> None:
    root, home = guest_root(tmp_path)  # no /etc/cvmfs at all: CernVM 4's default would be used
    make_cache(root / "srv" / "cvmfs", objects(10))
    vmlfs.run("entry", "add", "e1", "--guest", str(home), "--cvmfs-root", str(root), "--with-cvmfs-cache")
    missing = vmlfs.run("backup", "e1", check=False)
    assert missing.returncode == 3 and f"no CernVM-FS cache at {root}/mnt/.rw/cvmfs-cache/shared" in missing.stderr.decode()
    assert len(missing.stderr.decode().strip().splitlines()) <= 2
    vmlfs.run("entry", "edit", "e1", "--cvmfs-cache-base", "/srv/cvmfs")
    assert json.loads(vmlfs.run("entry", "show", "e1").stdout)["cvmfs"] == {
        "cache": True, "root": str(root), "cache_base": "/srv/cvmfs"}
    vmlfs.run("backup", "e1")
    assert cvmfs_part(vmlfs, "e1")["objects"] == 10
    assert vmlfs.run("list", "e1").stdout.decode().rstrip().endswith("cvmfs:10")
    vmlfs.run("backup", "e1", "--without-cvmfs-cache")
    assert "cvmfs" not in vmlfs.record("e1", vmlfs.backups("e1")[-1])
    bad = vmlfs.run("entry", "edit", "e1", "--cvmfs-root", "relative/dir", check=False)
    assert bad.returncode == 2 and "must be an absolute path" in bad.stderr.decode()


def test_a_second_entry_stores_no_object_an_earlier_backup_stored(vmlfs: Vmlfs, tmp_path: Path) -> None:
    new = objects(100, salt=b"vm2")
    shared2 = two_vms(vmlfs, tmp_path, objects(900), objects(100, salt=b"vm1"), new, ("cms.cern.ch",))
    first, second = cvmfs_part(vmlfs, "vm1"), cvmfs_part(vmlfs, "vm2")
    new_bytes = sum(map(len, new.values()))
    assert second["objects"] == 1000 and second["stored_objects"] == 100 and second["stored_bytes"] == new_bytes
    # Measured on the store: vm2's layer holds the 100 new objects (incompressible) and little else.
    layer2 = layer_path(vmlfs, second).stat().st_size
    assert new_bytes < layer2 < new_bytes + 64 * 1024, (layer2, new_bytes)
    assert layer_path(vmlfs, first).stat().st_size > first["bytes"]
    print(f"second entry: {second['bytes']} bytes of cache, {layer2} bytes stored (new objects: {new_bytes} bytes)")
    # No change, no new object: the same tree object, a layer of the directories and checksum files only.
    vmlfs.run("backup", "vm2")
    again = cvmfs_part(vmlfs, "vm2")
    assert again["stored_objects"] == 0 and again["tree"] == second["tree"] and again["layer"]["size"] < 8192
    target = tmp_path / "restored-cache"
    vmlfs.run("restore", "vm2", str(tmp_path / "home2"), "--cvmfs-cache-into", str(target))
    assert cached_files(target / "shared") == cached_files(shared2)
    assert not any((target / "shared" / never).exists() for never in NEVER)


def test_gc_keeps_objects_a_kept_backup_of_another_entry_needs_and_frees_the_rest(vmlfs: Vmlfs, tmp_path: Path) -> None:
    shared2 = two_vms(vmlfs, tmp_path, objects(300), {}, objects(20, salt=b"vm2"))
    first, second = cvmfs_part(vmlfs, "vm1"), cvmfs_part(vmlfs, "vm2")
    assert second["stored_objects"] == 20  # the 300 common ones live in vm1's layer
    vmlfs.run("entry", "remove", "vm1", "--yes")
    vmlfs.run("gc", "--grace", "0")
    assert layer_path(vmlfs, first).exists(), "vm2's listing points into vm1's cache layer: it stays"
    assert "ok: 1 backups" in vmlfs.run("verify").stdout.decode()
    target = tmp_path / "restored"
    vmlfs.run("restore", "vm2", str(tmp_path / "home2"), "--cvmfs-cache-into", str(target))
    assert cached_files(target / "shared") == cached_files(shared2)
    vmlfs.run("backup", "vm2", "--without-cvmfs-cache")
    vmlfs.run("forget", f"vm2@{vmlfs.backups('vm2')[0]}")
    vmlfs.run("gc", "--grace", "0")
    assert not layer_path(vmlfs, first).exists() and not layer_path(vmlfs, second).exists()
    assert not (vmlfs.store / "objects" / "trees" / f"{second['tree']['sha256']}.sqlite").exists()


def test_gc_repacks_a_cache_layer_mostly_dead_keeping_only_the_objects_still_listed(vmlfs: Vmlfs, tmp_path: Path) -> None:
    kept, dropped = objects(60), objects(140, salt=b"evicted")
    shared2 = two_vms(vmlfs, tmp_path, kept, dropped, {})  # vm2 lists only what vm1 stored: all in vm1's layer
    first, second = cvmfs_part(vmlfs, "vm1"), cvmfs_part(vmlfs, "vm2")
    assert second["stored_objects"] == 0
    vmlfs.run("entry", "remove", "vm1", "--yes")
    vmlfs.run("gc", "--grace", "0")
    assert not layer_path(vmlfs, first).exists(), "70 % dead: repacked, the old layer freed"
    after = cvmfs_part(vmlfs, "vm2")
    assert after["tree"] != second["tree"] and after["layer"] == second["layer"]
    repacked = [p for p in (vmlfs.store / "objects" / "layers").iterdir()
                if p.name[:-8] not in (second["layer"]["sha256"], vmlfs.record("vm2", vmlfs.backups("vm2")[0])["layer"]["sha256"])]
    assert len(repacked) == 1 and sum(map(len, kept.values())) < repacked[0].stat().st_size < first["layer"]["size"] / 2
    members = subprocess.run(["tar", "--zstd", "-tf", str(repacked[0])], capture_output=True, text=True, check=True).stdout.split()
    checksums = ["shared/cvmfschecksum.atlas.cern.ch", "shared/cvmfschecksum.sft.cern.ch"]  # vm1's, the same bytes
    assert sorted(members) == sorted([f"shared/{name}" for name in kept] + checksums)
    assert "ok: 1 backups" in vmlfs.run("verify").stdout.decode()
    vmlfs.run("restore", "vm2", str(tmp_path / "home2"), "--cvmfs-cache-into", str(tmp_path / "cache"))
    assert cached_files(tmp_path / "cache" / "shared") == cached_files(shared2)


def test_names_from_the_guest_that_are_not_objects_are_refused_one_line_each(vmlfs: Vmlfs, tmp_path: Path) -> None:
    root, home = guest_root(tmp_path, config=CERNVM4)
    shared = make_cache(root / "mnt/.rw/cvmfs-cache", objects(5))
    (shared / "00" / "not-a-hash").write_bytes(b"x")
    (shared / "00" / ("A" * 38)).write_bytes(b"upper-case hex is no cvmfs name")
    (shared / "0a" / "deeper").mkdir()
    (shared / "0a" / "deeper" / ("b" * 38)).write_bytes(b"never looked at")
    os.symlink("/etc/shadow", shared / "0b" / ("c" * 38))
    (shared / "cvmfschecksum.bad name").write_bytes(b"x")
    (shared / "zz").mkdir()
    (shared / "zz" / ("d" * 38)).write_bytes(b"not an object directory: never descended into")
    vmlfs.run("entry", "add", "e1", "--guest", str(home), "--cvmfs-root", str(root), "--with-cvmfs-cache")
    out = vmlfs.run("backup", "e1")
    refused = [line for line in out.stderr.decode().splitlines() if "refused" in line]
    assert len(refused) == 5, out.stderr.decode()
    for name, why in (("00/not-a-hash", "not an object name"), ("00/" + "A" * 38, "not an object name"),
                      ("0a/deeper", "not a regular file"), ("0b/" + "c" * 38, "not a regular file"),
                      ("cvmfschecksum.bad name", "not an object name")):
        assert any(f"refused shared/{name} ({why}" in line for line in refused), name
    part = cvmfs_part(vmlfs, "e1")
    assert part["objects"] == 5 and part["repositories"] == ["atlas.cern.ch", "sft.cern.ch"]
    members = subprocess.run(["tar", "--zstd", "-tf", str(layer_path(vmlfs, part))], capture_output=True, text=True,
                             check=True).stdout
    assert "deeper" not in members and "zz" not in members and "not-a-hash" not in members


def test_a_cache_part_damaged_in_the_store_is_found_by_verify(vmlfs: Vmlfs, tmp_path: Path) -> None:
    root, home = guest_root(tmp_path, config=CERNVM4)
    make_cache(root / "mnt/.rw/cvmfs-cache", objects(50))
    vmlfs.run("entry", "add", "e1", "--guest", str(home), "--cvmfs-root", str(root), "--with-cvmfs-cache")
    vmlfs.run("backup", "e1")
    layer = layer_path(vmlfs, cvmfs_part(vmlfs, "e1"))
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0x40
    layer.write_bytes(bytes(data))
    out = vmlfs.run("verify", check=False)
    assert out.returncode == 7 and "(cvmfs cache): layer" in out.stdout.decode(), out.stdout.decode()


class _Unreadable(LocalGuest):
    """A cache as a backup user sees it who may not read some objects (as root every file is readable,
    so the EACCES an open() would give is played here, at the same place LocalGuest reports it)."""

    def __init__(self, shared: Path, unreadable: set[bytes], unlistable: bool = False) -> None:
        super().__init__(shared)
        self.unreadable, self.unlistable = unreadable, unlistable

    def _open(self, entry):  # type: ignore[no-untyped-def]
        if entry.path in self.unreadable:
            raise FileChanged(f"{entry.path.decode()}: cannot open (Permission denied)")
        return super()._open(entry)

    def _children(self, rel, rules, report, unread):  # type: ignore[no-untyped-def]
        if self.unlistable and rel == b"":
            report.unreadable += 1
            report.warn("cannot list .: Permission denied; its contents are left out")
            return iter(())
        return super()._children(rel, rules, report, unread)


def test_files_the_backup_user_cannot_read_are_one_warning_and_an_unlistable_cache_an_error(tmp_path: Path) -> None:
    cache = objects(30)
    shared = make_cache(tmp_path / "cvmfs", cache)
    home = tmp_path / "home"
    home.mkdir()
    store = LocalStore(tmp_path / "store")
    store.add_entry(EntryConfig("e", str(home)))
    locked = sorted(name.encode() for name in cache)[:3]
    meta = run_backup(store, store.load_entry("e"), LocalGuest(home),
                      cvmfs=CvmfsSource(_Unreadable(shared, set(locked)), "/var/lib/cvmfs"))
    said = [w for w in meta.warnings if w.startswith("cvmfs cache:")]
    assert said == [f"cvmfs cache: 3 paths the backup user cannot read were left out (first: {locked[0].decode()}:"
                    " cannot open (Permission denied)); the cache belongs to the cvmfs user: back up as root"
                    " or give the backup user read access"], said
    assert meta.cvmfs is not None and meta.cvmfs["objects"] == 27
    with pytest.raises(GuestError, match=r"cannot read the CernVM-FS cache /var/lib/cvmfs/shared on .*: Permission denied$") as err:
        run_backup(store, store.load_entry("e"), LocalGuest(home),
                   cvmfs=CvmfsSource(_Unreadable(shared, set(), unlistable=True), "/var/lib/cvmfs"))
    assert "back up as root" in (err.value.hint or "")
    assert len(store.backups("e")) == 1, "nothing committed"
