"""``entries/<e>/<ts>/changes.txt`` through a real mount: the diff against the backup before, as ``vmlfs diff`` shows it."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.test_diff import CHANGES, two_backups
from tests.conftest import Vmlfs
from tests.fs.conftest import needs_fuse


@needs_fuse
def test_changes_txt_in_the_mount_is_the_diff_against_the_backup_before(vmlfs: Vmlfs, tmp_path: Path, mount_factory) -> None:
    first, second = two_backups(vmlfs, tmp_path)
    mount = mount_factory(vmlfs.store)
    entry = mount.entry("e")
    assert (entry / first / "changes.txt").read_text() == f"e@{first} is the first backup of e: everything in it is new.\n"
    lines = (entry / second / "changes.txt").read_text().splitlines()
    assert lines[0].startswith(f"changes from e@{first} to e@{second} (")
    assert lines[1:-1] == CHANGES
    assert lines[-1] == "3 added, 2 removed, 2 modified, 1 changed type, 3 metadata only"
    assert os.stat(entry / second / "changes.txt").st_size == len((entry / second / "changes.txt").read_bytes())
