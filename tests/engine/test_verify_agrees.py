"""verify and restore agree: every manifest restore refuses (or restores only in part), verify flags.

The attacker here also stored the tampered tree under its new sha256 and
pointed the backup's record at it, so the tree's own checks must find the
damage, not the object's sha256. Each case is
restored locally and over the SSH agent (run locally), and verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.backends.fake_runner import RecordingRunner
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.backends.ssh_restore import restore_to_guest
from vmlfs.engine.backup import run_backup
from vmlfs.engine.model import EntryConfig
from vmlfs.engine.restore import restore_tree
from vmlfs.engine.verify import verify_store
from vmlfs.errors import VmlfsError

ATTACKS = {
    "dir named ..": "UPDATE nodes SET name = X'2e2e' WHERE name = CAST('sub' AS BLOB)",
    "dir named a/b": "UPDATE nodes SET name = CAST('a/b' AS BLOB) WHERE name = CAST('sub' AS BLOB)",
    "dir named empty": "UPDATE nodes SET name = X'' WHERE name = CAST('sub' AS BLOB)",
    "dir name with NUL": "UPDATE nodes SET name = X'610062' WHERE name = CAST('sub' AS BLOB)",
    "dir name too long": "UPDATE nodes SET name = zeroblob(256) WHERE name = CAST('sub' AS BLOB)",
    "symlink named ..": "UPDATE nodes SET name = X'2e2e' WHERE type = 'l'",
    "climbing layer name": "UPDATE nodes SET layer = '../../x' WHERE name = CAST('a.txt' AS BLOB)",
    "short sha256": "UPDATE nodes SET sha256 = X'00' WHERE name = CAST('a.txt' AS BLOB)",
    "symlink without target": "UPDATE nodes SET target = NULL WHERE type = 'l'",
    "symlink target with NUL": "UPDATE nodes SET target = X'610062' WHERE type = 'l'",
    "empty symlink target": "UPDATE nodes SET target = X'' WHERE type = 'l'",
    "dir mode with type bits": "UPDATE nodes SET mode = 16877 WHERE name = CAST('sub' AS BLOB)",
    "dir owned by uid -1": "UPDATE nodes SET uid = 4294967295 WHERE name = CAST('sub' AS BLOB)",
    "negative gid": "UPDATE nodes SET gid = -5 WHERE type = 'l'",
    "negative size": "UPDATE nodes SET size = -1 WHERE name = CAST('a.txt' AS BLOB)",
    "unknown type": "UPDATE nodes SET type = 'p' WHERE name = CAST('sub' AS BLOB)",
    "dir in a hardlink group": "UPDATE nodes SET link_group = 1 WHERE name = CAST('sub' AS BLOB)",
    "hardlink member with other content": "UPDATE nodes SET sha256 = zeroblob(32), size = 3 WHERE name = CAST('h2' AS BLOB)",
}


def tampered_backup(tmp_path: Path, sql: str) -> tuple[LocalStore, str]:
    home = tmp_path / "g"
    (home / "sub").mkdir(parents=True)
    (home / "sub" / "a.txt").write_text("alpha")
    (home / "sub" / "h1").write_text("linked")
    os.link(home / "sub" / "h1", home / "sub" / "h2")
    (home / "ln").symlink_to("sub/a.txt")
    store = LocalStore(tmp_path / "s")
    cfg = EntryConfig("e", str(home))
    store.add_entry(cfg)
    ts = run_backup(store, cfg, LocalGuest(home)).timestamp
    root = tmp_path / "s"
    record_file = root / "entries" / "e" / "backups" / f"{ts}.json"
    record = json.loads(record_file.read_text())
    assert record["manifest"]["base"] is None, "the first backup's tree is a checkpoint: every row is in it"
    tree = root / "objects" / "trees" / f"{record['manifest']['sha256']}.sqlite"
    work = tmp_path / "tampered.sqlite"
    work.write_bytes(tree.read_bytes())
    db = sqlite3.connect(work)
    db.execute("PRAGMA ignore_check_constraints = 1")
    assert db.execute(sql).rowcount >= 1
    db.commit()
    db.close()
    data = work.read_bytes()  # the attacker stores the tree under its new sha256 and fixes the record
    digest = hashlib.sha256(data).hexdigest()
    tree.unlink()
    (tree.parent / f"{digest}.sqlite").write_bytes(data)
    record["manifest"].update(size=len(data), sha256=digest)
    record_file.write_text(json.dumps(record))
    return store, ts


def refused(restore) -> bool:
    try:
        report = restore()
    except VmlfsError:
        return True
    return bool(report.damaged)


@pytest.mark.parametrize("attack", ATTACKS)
def test_verify_flags_what_restore_refuses(tmp_path: Path, attack: str) -> None:
    store, ts = tampered_backup(tmp_path, ATTACKS[attack])
    def layer(layer_ts: str):
        return store.open_layer("e", layer_ts)

    manifest = store.open_manifest("e", ts)
    assert refused(lambda: restore_tree(manifest, layer, str(tmp_path / "local"))), "the local restore accepts it"
    assert refused(lambda: restore_to_guest(manifest, layer, RecordingRunner(), str(tmp_path / "remote"))), \
        "the SSH restore accepts it"
    report = verify_store(store, [("e", ts)])
    assert not report.ok, f"verify says ok for: {attack}"
    assert f"e@{ts}" in report.damaged_backups


def test_verify_flags_rows_no_restore_can_reach(tmp_path: Path) -> None:
    """A node planted below the symlink is never restored (only directories are descended), but it is damage."""
    store, ts = tampered_backup(tmp_path, "INSERT INTO nodes SELECT 10000, (SELECT id FROM nodes WHERE type = 'l'),"
                                " CAST('planted' AS BLOB), type, mode, uid, gid, uname, gname, size, mtime_ns, ctime_ns,"
                                " target, NULL, 1, sha256, layer, data_offset, xattrs FROM nodes WHERE name = CAST('a.txt' AS BLOB)")
    report = verify_store(store, [("e", ts)])
    assert any("not reachable from the root" in p for p in report.problems)
