"""The mount shows a backup's CernVM-FS cache part as one summary, ``cvmfs-cache.txt`` (objects,
bytes, repositories), never as its objects; ``info.json`` says the same; a backup without the
part has neither."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cvmfs_cache import make_cache, objects
from tests.fs.conftest import FUSE_MISSING, make_store
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.engine.backup import run_backup
from vmlfs.engine.cvmfs import CvmfsSource
from vmlfs.fs.layout import Kind, backup_layout

pytestmark = [pytest.mark.fuse, pytest.mark.skipif(FUSE_MISSING, reason="needs /dev/fuse and fusermount3")]


def test_cvmfs_cache_txt_summarizes_the_cache_part_only_where_there_is_one(tmp_path: Path, mount_factory) -> None:
    s = make_store(tmp_path)
    plain = s.backup()
    cache = objects(120)
    shared = make_cache(tmp_path / "guest-cvmfs", cache)
    store = s.store()
    meta = run_backup(store, store.load_entry("e1"), LocalGuest(s.home),
                      cvmfs=CvmfsSource(LocalGuest(shared), "/mnt/.rw/cvmfs-cache"))
    assert [slot.kind for slot in backup_layout(meta)].count(Kind.CVMFS_CACHE) == 1
    m = mount_factory(s.store_path)
    with_cache = m.entry() / meta.timestamp
    assert sorted(p.name for p in with_cache.iterdir()) == ["changes.txt", "cvmfs-cache.txt", "env.txt", "home", "info.json"]
    assert "cvmfs-cache.txt" not in [p.name for p in (m.entry() / plain).iterdir()]
    text = (with_cache / "cvmfs-cache.txt").read_text()
    assert text.splitlines() == [
        "cache base: /mnt/.rw/cvmfs-cache",
        "objects: 120",
        f"bytes: {sum(map(len, cache.values()))}",
        f"stored by this backup: 120 objects, {sum(map(len, cache.values()))} bytes (the rest was stored by earlier backups)",
        "repositories: atlas.cern.ch sft.cern.ch",
    ]
    assert (with_cache / "cvmfs-cache.txt").stat().st_size == len(text.encode())
    info = json.loads((with_cache / "info.json").read_text())
    assert info["cvmfs_cache"]["objects"] == 120 and info["cvmfs_cache"]["repositories"] == ["atlas.cern.ch", "sft.cern.ch"]
    assert "cvmfs_cache" not in json.loads((m.entry() / plain / "info.json").read_text())
    names = {name.split("/")[1] for name in cache}
    assert not [p for p in with_cache.rglob("*") if p.name in names], "the objects are never shown"
