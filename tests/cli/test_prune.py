"""``vmlfs prune`` through the real CLI: the dry run's lines, asking, protection, stored keep rules, prune after backup.

The keep rules themselves are tested against hand-checked histories and a
reference in tests/engine/test_retention.py; here, that the command applies
them to a store: what it removes is gone, everything else restores as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Vmlfs, snapshot_copy, tree_listing


@pytest.fixture
def six(vmlfs: Vmlfs, tmp_path: Path) -> tuple[Vmlfs, Path, dict[str, Path]]:
    home = tmp_path / "g"
    home.mkdir()
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    copies: dict[str, Path] = {}
    for step in range(6):
        (home / f"f{step}.bin").write_bytes(os.urandom(40_000))
        if step:
            (home / f"f{step - 1}.bin").unlink()  # each backup alone holds one file's bytes
        vmlfs.run("-q", "backup", "e")
        copies[vmlfs.backups("e")[-1]] = snapshot_copy(home, tmp_path / f"copy{step}")
    return vmlfs, home, copies


def test_dry_run_then_prune_keeps_exactly_what_the_rules_say(six, tmp_path: Path) -> None:
    v, _, copies = six
    stamps = v.backups("e")
    v.run("protect", f"e@{stamps[0]}")
    dry = v.run("prune", "e", "--keep-last", "2", "--dry-run").stdout.decode().splitlines()
    assert dry[:6] == [
        f"keep  e@{stamps[5]}  (newest, last #1)",
        f"keep  e@{stamps[4]}  (last #2)",
        f"remove e@{stamps[3]}",
        f"remove e@{stamps[2]}",
        f"remove e@{stamps[1]}",
        f"keep  e@{stamps[0]}  (protected)",
    ], dry
    assert dry[6].startswith("3 backups to remove; gc would free at least ") and not dry[6].endswith(" 0 B")
    assert v.backups("e") == stamps, "a dry run changes nothing"
    refused = v.run("prune", "e", "--keep-last", "2", check=False)  # no terminal, no --yes
    assert refused.returncode == 2 and b"--yes" in refused.stderr and v.backups("e") == stamps
    done = v.run("prune", "e", "--keep-last", "2", "--yes", "--grace", "0").stdout.decode()
    assert "forgot 3 backups" in done and "gc: " in done
    assert v.backups("e") == [stamps[0], stamps[4], stamps[5]]
    for ts in v.backups("e"):
        v.run("-q", "restore", f"e@{ts}", str(tmp_path / f"r-{ts}"))
        assert tree_listing(tmp_path / f"r-{ts}") == tree_listing(copies[ts])
    assert b"ok: 3 backups" in v.run("verify").stdout
    one = v.run("prune", "e", "--keep-last", "1", "--yes", "--grace", "0").stdout.decode().splitlines()
    assert one[-2:-1] == ["forgot 1 backup"] and any(line.startswith("1 backup to remove;") for line in one), one


def test_stored_rules_and_prune_after_every_backup(six) -> None:
    v, home, _ = six
    empty = v.run("prune", "e", check=False)
    assert empty.returncode == 2 and b"stores no prune policy" in empty.stderr
    refused = v.run("entry", "edit", "e", "--prune-after", check=False)
    assert refused.returncode == 2 and b"needs keep rules" in refused.stderr
    v.run("entry", "edit", "e", "--keep-last", "2", "--prune-after")
    assert '"prune_after": true' in v.run("entry", "show", "e").stdout.decode()
    (home / "late.txt").write_text("one more\n")
    out = v.run("backup", "e")
    assert b"pruned by the entry's keep rules: forgot" in out.stderr
    assert len(v.backups("e")) == 2
    v.run("entry", "edit", "e", "--no-keep-rules")
    assert '"prune": null' in v.run("entry", "show", "e").stdout.decode()


def test_an_empty_policy_and_both_names_and_all_are_refused(six) -> None:
    v, _, _ = six
    assert v.run("prune", "--all", "e", "--keep-last", "1", check=False).returncode == 2
    bad = v.run("prune", "e", "--unit-interval", "4d", check=False)
    assert bad.returncode == 2 and b"dyadic" in bad.stderr
