"""A bundle between a local store and an S3 store (SeaweedFS on 127.0.0.1), both ways: every backup restores exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_backup_cycle import build_guest, change_guest
from tests.conftest import Vmlfs, snapshot_copy, tree_listing

pytestmark = pytest.mark.s3


def test_local_to_s3_and_back(vmlfs: Vmlfs, s3vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "guest"
    home.mkdir()
    build_guest(home)
    vmlfs.run("entry", "add", "physics", "--guest", str(home))
    copies = {}
    for step in range(2):
        if step:
            change_guest(home, step)
        vmlfs.run("-q", "backup", "physics")
        copies[vmlfs.backups("physics")[-1]] = snapshot_copy(home, tmp_path / f"copy{step}")
    out, back = tmp_path / "to-s3.vmlfs", tmp_path / "from-s3.vmlfs"
    vmlfs.run("-q", "export", "physics", str(out))
    assert s3vmlfs.run("import", str(out)).stdout.decode().startswith("created entry physics, added 2 backups")
    s3vmlfs.run("-q", "verify")
    s3vmlfs.run("-q", "export", "physics", str(back))
    vmlfs.run("-q", "import", str(back), "--as", "returned")
    for ts, copy in copies.items():
        for v, entry in ((s3vmlfs, "physics"), (vmlfs, "returned")):
            target = tmp_path / f"r-{entry}-{ts}"
            v.run("-q", "restore", f"{entry}@{ts}", str(target))
            assert tree_listing(target) == tree_listing(copy)
