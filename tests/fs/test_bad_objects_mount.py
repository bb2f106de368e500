"""The mount with bad objects in its store: their listings fail alone (EIO), everything else is served."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.fs.conftest import make_store, needs_fuse


@needs_fuse
def test_bad_objects_cost_only_themselves_in_the_mount(tmp_path: Path, mount_factory) -> None:
    setup = make_store(tmp_path, big_mib=1)
    good, bad = setup.backup(), setup.backup()
    backups = setup.store_path / "entries" / "e1" / "backups"
    meta = json.loads((backups / f"{bad}.json").read_text())
    (backups / f"{bad}.json").write_text(json.dumps({**meta, "files": [], "duration_s": "slow"}))
    (backups / "20261399T999999Z.json").write_text("{}")
    shutil.copyfile(backups / f"{good}.json", backups / "99991231T235959Z.json")
    (setup.store_path / "entries" / "junk").mkdir()
    mount = mount_factory(setup.store_path)
    assert {"e1", "junk"} <= set(os.listdir(mount.path / "entries"))
    listed = set(os.listdir(mount.entry()))
    assert {good, bad, "20261399T999999Z", "99991231T235959Z"} <= listed
    assert (mount.entry() / good / "home" / "src" / "main.py").read_text() == (setup.home / "src" / "main.py").read_text()
    for damaged in (bad, "20261399T999999Z", "99991231T235959Z"):
        with pytest.raises(OSError) as caught:
            os.listdir(mount.entry() / damaged)
        assert caught.value.errno == errno.EIO, damaged
