"""The backup engine on a local guest, without the CLI: files changing while read, dedup, hardlinks."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import snapshot_copy, tree_listing
from vmlfs.archive.trees import materialize, write_delta
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore, file_sha256
from vmlfs.engine import backup, throughput
from vmlfs.engine.backup import BackupOptions, run_backup
from vmlfs.engine.guest import ScanEntry, ScanReport
from vmlfs.engine.model import EntryConfig
from vmlfs.engine.restore import restore_tree
from vmlfs.engine.rules import Rules
from vmlfs.engine.verify import verify_store
from vmlfs.errors import GuestError


class MutatingGuest(LocalGuest):
    """Rewrites chosen files right after the scan has seen them: they change before or while being read."""

    def __init__(self, home: Path, victims: dict[bytes, bytes]) -> None:
        super().__init__(home)
        self.victims = victims

    def scan(self, rules: Rules, report: ScanReport, xattrs_since: int | None = None) -> Iterator[ScanEntry]:
        for entry in super().scan(rules, report, xattrs_since):
            yield entry
            if entry.path in self.victims:
                with open(os.path.join(self.home, entry.path), "ab") as f:
                    f.write(self.victims[entry.path])


def setup(tmp_path: Path) -> tuple[LocalStore, EntryConfig, Path]:
    home = tmp_path / "g"
    home.mkdir()
    store = LocalStore(tmp_path / "s")
    cfg = EntryConfig("e", str(home))
    store.add_entry(cfg)
    return store, cfg, home


def test_files_changing_while_read_are_reported_and_left_out(tmp_path: Path) -> None:
    store, cfg, home = setup(tmp_path)
    (home / "small.txt").write_text("before")
    (home / "big.bin").write_bytes(os.urandom(6 << 20))
    (home / "steady.txt").write_text("steady")
    meta = run_backup(store, cfg, MutatingGuest(home, {b"small.txt": b"more", b"big.bin": b"grown"}))
    assert meta.stats["changed_while_read"] == 2
    assert any("small.txt" in w for w in meta.warnings) and any("big.bin" in w for w in meta.warnings)
    manifest = store.open_manifest("e", meta.timestamp)
    assert [c.name for c in manifest.children(1)] == [b"steady.txt"]
    assert verify_store(store, [("e", meta.timestamp)]).ok
    layer = store.object_file("layers", meta.layer["sha256"])
    subprocess.run(["tar", "--zstd", "-tf", str(layer)], check=True, capture_output=True)
    again = run_backup(store, cfg, LocalGuest(home))
    assert {c.name for c in store.open_manifest("e", again.timestamp).children(1)} == {b"small.txt", b"big.bin", b"steady.txt"}


def test_a_guest_home_named_through_a_symlink_is_the_directory_it_names(tmp_path: Path) -> None:
    """As ``cd`` follows it; links below the home are still kept as links, never followed."""
    store, cfg, home = setup(tmp_path)
    (home / "notes.txt").write_text("through the link")
    (home / "outside").symlink_to(tmp_path)
    (tmp_path / "link-to-home").symlink_to(home)
    guest = LocalGuest(tmp_path / "link-to-home")
    assert guest.description == str(tmp_path / "link-to-home")
    meta = run_backup(store, cfg, guest)
    report = restore_tree(store.open_manifest("e", meta.timestamp), lambda layer: store.open_layer("e", layer),
                          str(tmp_path / "back"))
    assert not report.damaged
    assert tree_listing(tmp_path / "back") == tree_listing(home)
    assert (tmp_path / "back" / "outside").is_symlink()


def test_the_garbage_collector_is_left_as_it_was_found(tmp_path: Path) -> None:
    store, cfg, home = setup(tmp_path)
    (home / "f").write_text("x")
    before = gc.get_threshold()
    seen = []
    real_run = backup._Builder.run

    def run(self, rules, xattrs_since):  # type: ignore[no-untyped-def]
        seen.append(gc.get_threshold())
        real_run(self, rules, xattrs_since)
        raise GuestError("the guest went away")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backup._Builder, "run", run)
        with pytest.raises(GuestError):
            run_backup(store, cfg, LocalGuest(home))
    assert seen[0][0] == throughput.GC_YOUNG > before[0]
    assert gc.get_threshold() == before
    run_backup(store, cfg, LocalGuest(home))
    assert gc.get_threshold() == before


def test_copies_and_hardlinks_are_stored_once(tmp_path: Path) -> None:
    store, cfg, home = setup(tmp_path)
    payload = os.urandom(5 << 20)
    (home / "a.bin").write_bytes(payload)
    (home / "copy.bin").write_bytes(payload)
    os.link(home / "a.bin", home / "hard.bin")
    meta = run_backup(store, cfg, LocalGuest(home))
    assert meta.stats["packed_files"] == 1 and meta.stats["deduplicated_files"] == 1
    assert meta.layer["size"] < len(payload) * 1.1
    m = store.open_manifest("e", meta.timestamp)
    a, copy, hard = (m.lookup(n) for n in (b"a.bin", b"copy.bin", b"hard.bin"))
    assert a.link_group == hard.link_group and a.nlink == hard.nlink == 2
    assert copy.link_group is None and copy.nlink == 1
    assert a.data_offset == copy.data_offset == hard.data_offset
    os.rename(home / "copy.bin", home / "renamed.bin")
    inc = run_backup(store, cfg, LocalGuest(home))
    assert inc.stats["packed_files"] == 0 and inc.layer["size"] < 4096


def test_excluded_directories_are_not_descended(tmp_path: Path) -> None:
    store, cfg, home = setup(tmp_path)
    (home / "build" / "obj").mkdir(parents=True)
    (home / "build" / "obj" / "x.o").write_bytes(b"obj")
    (home / "keep.root").write_bytes(b"k")
    (home / "drop.root").write_bytes(b"d")
    cfg.exclude, cfg.include = ["build/", "*.root"], ["keep.root"]
    store.save_entry(cfg)
    meta = run_backup(store, cfg, LocalGuest(home))
    assert {c.name for c in store.open_manifest("e", meta.timestamp).children(1)} == {b"keep.root"}


def test_checksum_rereads_everything_but_stores_nothing_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, cfg, home = setup(tmp_path)
    for i in range(5):
        (home / f"f{i}").write_bytes(os.urandom(1000))
    run_backup(store, cfg, LocalGuest(home))
    monkeypatch.setattr(backup, "settled_before", lambda started: 1 << 62)  # as if the files were older
    plain = run_backup(store, cfg, LocalGuest(home))
    assert plain.stats["unchanged_files"] == 5
    checked = run_backup(store, cfg, LocalGuest(home), BackupOptions(checksum=True))
    assert checked.stats["unchanged_files"] == 0 and checked.stats["deduplicated_files"] == 5
    assert checked.stats["packed_files"] == 0


def test_patched_manifests_follow_type_changes_subtree_deletions_and_link_counts(tmp_path: Path) -> None:
    """Incremental manifests are the base patched: every kind of change must land exactly."""
    store, cfg, home = setup(tmp_path)
    (home / "gone" / "deep" / "deeper").mkdir(parents=True)
    (home / "gone" / "deep" / "deeper" / "f").write_text("x")
    (home / "was-file").write_text("file first")
    (home / "was-dir" / "inner").mkdir(parents=True)
    (home / "solo").write_text("one link")
    (home / "skip-later").mkdir()
    (home / "skip-later" / "data").write_text("d")
    steps = []

    def change(i: int) -> None:
        if i == 1:
            shutil.rmtree(home / "gone")
            (home / "was-file").unlink()
            (home / "was-file").mkdir()
            (home / "was-file" / "now-inside").write_text("dir now")
            shutil.rmtree(home / "was-dir")
            os.symlink("solo", home / "was-dir")
            os.link(home / "solo", home / "solo-link")  # the existing row's link count changes
            cfg.exclude = ["skip-later/"]
            store.save_entry(cfg)
        elif i == 2:
            (home / "solo-link").unlink()
            (home / "gone").mkdir()  # a new directory where a deleted one was

    for i in range(3):
        if i:
            change(i)
        meta = run_backup(store, cfg, LocalGuest(home), BackupOptions(kind="full" if i == 0 else "incremental"))
        copy = snapshot_copy(home, tmp_path / f"copy{i}")
        if i >= 1:  # excluded from then on
            shutil.rmtree(copy / "skip-later")
        steps.append((meta.timestamp, copy))
    for ts, copy in steps:
        m = store.open_manifest("e", ts)
        target = tmp_path / f"r-{ts}"
        report = restore_tree(m, lambda layer: store.open_layer("e", layer), str(target))
        assert not report.damaged
        assert tree_listing(target) == tree_listing(copy), ts
        assert m.count() == sum(1 for _ in m.walk()), "no orphaned rows survive in a patched manifest"
    assert verify_store(store, [("e", ts) for ts, _ in steps]).ok


def test_an_unchanged_tree_is_stored_as_its_base_and_any_change_is_not(tmp_path: Path) -> None:
    """A backup that changes no row of its base stores the base's tree object again: a whole base as
    its own bytes, a delta base as the delta its rows give, written from the base's own rows (not by
    comparing every row with the checkpoint). A change of any kind must still be seen as one."""
    store, cfg, home = setup(tmp_path)
    (home / "d").mkdir()
    for i in range(2000):  # a checkpoint large enough for small deltas over it
        (home / "d" / f"f{i}").write_text(str(i))
    (home / "g").write_text("y")
    full = run_backup(store, cfg, LocalGuest(home))

    def backup() -> dict:
        return run_backup(store, cfg, LocalGuest(home)).manifest

    assert backup() == full.manifest, "unchanged over a whole tree: that tree's object, not a new one"
    checkpoint = store.object_file("trees", full.manifest["sha256"])
    assert file_sha256(checkpoint) == (full.manifest["size"], full.manifest["sha256"]), "and that object intact"
    assert checkpoint.stat().st_nlink == 1, "no name of it is left in the backup's work directory"
    (home / "d" / "added").write_text("a")
    over_checkpoint = run_backup(store, cfg, LocalGuest(home))
    assert over_checkpoint.manifest["base"]["sha256"] == full.manifest["sha256"]
    assert backup() == over_checkpoint.manifest, "unchanged over a delta: the same delta"
    materialized, compared = tmp_path / "whole.sqlite", tmp_path / "compared.sqlite"
    materialize(store.open_manifest("e", over_checkpoint.timestamp), materialized)
    write_delta(materialized, str(checkpoint), full.manifest["sha256"], compared)
    tree = store.object_file("trees", over_checkpoint.manifest["sha256"])
    assert tree.read_bytes() == compared.read_bytes(), "the delta as the comparison writes it"
    changes = [
        lambda: os.chmod(home / "d" / "f1", 0o600),
        lambda: os.utime(home / "g", ns=(0, 10**9)),
        lambda: (home / "d" / "new").write_text("z"),
        lambda: (home / "g").unlink(),
        lambda: os.chmod(home / "d", 0o700),
    ]
    previous = over_checkpoint.manifest
    for i, change in enumerate(changes):
        same = backup()
        assert same["sha256"] == previous["sha256"], f"step {i}: nothing changed, the base's tree object again"
        change()
        changed = backup()
        assert changed["sha256"] != same["sha256"], f"step {i}: a change must give another tree"
        previous = changed


class RacyGuest(LocalGuest):
    """Reports one file with the ctime it had when the base backup read it, as a rewrite in the same
    tick of the kernel's coarse clock leaves it: size, mtime and ctime all as the base recorded them."""

    def __init__(self, home: Path, path: bytes, ctime_ns: int) -> None:
        super().__init__(home)
        self.path, self.ctime_ns = path, ctime_ns

    def scan(self, rules: Rules, report: ScanReport, xattrs_since: int | None = None) -> Iterator[ScanEntry]:
        for entry in super().scan(rules, report, xattrs_since):
            if entry.path == self.path:
                entry.ctime_ns = self.ctime_ns
            yield entry


def test_a_file_rewritten_as_the_base_read_it_is_read_again(tmp_path: Path) -> None:
    """A file whose ctime is not settled before its base began may have changed unseen: its bytes are read."""
    store, cfg, home = setup(tmp_path)
    f = home / "results.txt"
    f.write_bytes(b"fit: 1.00")
    base = run_backup(store, cfg, LocalGuest(home))
    st = os.stat(f)
    f.write_bytes(b"fit: 2.00")  # the same size, and the same mtime
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = run_backup(store, cfg, RacyGuest(home, b"results.txt", st.st_ctime_ns))
    target = tmp_path / "restored"
    restore_tree(store.open_manifest("e", again.timestamp), lambda layer: store.open_layer("e", layer), str(target))
    assert (target / "results.txt").read_bytes() == b"fit: 2.00"
    assert again.stats["unchanged_files"] == 0 and base.stats["files"] == 1
