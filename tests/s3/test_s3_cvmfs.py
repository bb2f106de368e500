"""The CernVM-FS cache part on an S3 store: captured, deduplicated across entries, verified,
restored, and kept by gc while another entry's listing needs it (the store interface only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Vmlfs
from tests.cvmfs_cache import cached_files, make_cache, objects
from tests.engine.test_cvmfs_cache import CERNVM4, guest_root
from tests.s3.conftest import S3Server, keys

pytestmark = pytest.mark.s3


def test_cache_parts_on_s3_share_objects_and_survive_gc(any_vmlfs: Vmlfs, any_s3: S3Server, s3_store: str,
                                                        tmp_path: Path) -> None:
    v = any_vmlfs
    common = objects(200)
    root1, home1 = guest_root(tmp_path, "vm1", CERNVM4)
    root2, home2 = guest_root(tmp_path, "vm2", CERNVM4)
    make_cache(root1 / "mnt/.rw/cvmfs-cache", common)
    shared2 = make_cache(root2 / "mnt/.rw/cvmfs-cache", common | objects(10, salt=b"vm2"))
    for name, root, home in (("vm1", root1, home1), ("vm2", root2, home2)):
        v.run("entry", "add", name, "--guest", str(home), "--cvmfs-root", str(root), "--with-cvmfs-cache")
        v.run("backup", name)
    out = v.run("backup", "vm2").stdout.decode()
    assert "210 objects" in out and "0 new" in out
    v.run("entry", "remove", "vm1", "--yes")
    v.run("gc", "--grace", "0")
    assert "ok: 2 backups, 426 files" in v.run("verify").stdout.decode()
    v.run("restore", "vm2", str(tmp_path / "home"), "--cvmfs-cache-into", str(tmp_path / "cache"))
    assert cached_files(tmp_path / "cache" / "shared") == cached_files(shared2)
    assert all(k.startswith(("objects/", "entries/", "leases/", "vmlfs-store.json")) for k in keys(any_s3, s3_store))
