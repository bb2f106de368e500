"""The CernVM-FS cache part on an S3 store: captured, deduplicated across entries, verified,
restored, and kept by gc while another entry's listing needs it (the store interface only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Vmlfs
from tests.cvmfs_cache import cached_files, objects
from tests.engine.test_cvmfs_cache import two_vms
from tests.s3.conftest import S3Server, keys

pytestmark = pytest.mark.s3


def test_cache_parts_on_s3_share_objects_and_survive_gc(any_vmlfs: Vmlfs, any_s3: S3Server, s3_store: str,
                                                        tmp_path: Path) -> None:
    v = any_vmlfs
    shared2 = two_vms(v, tmp_path, objects(200), {}, objects(10, salt=b"vm2"))
    out = v.run("backup", "vm2").stdout.decode()
    assert "210 objects" in out and "0 new" in out
    v.run("entry", "remove", "vm1", "--yes")
    v.run("gc", "--grace", "0")
    assert "ok: 2 backups, 426 files" in v.run("verify").stdout.decode()
    v.run("restore", "vm2", str(tmp_path / "home"), "--cvmfs-cache-into", str(tmp_path / "cache"))
    assert cached_files(tmp_path / "cache" / "shared") == cached_files(shared2)
    assert all(k.startswith(("objects/", "entries/", "leases/", "vmlfs-store.json")) for k in keys(any_s3, s3_store))
