"""One bad object in a store costs only itself: it is reported once as damaged, with its reason, while
``entry list``, ``list``, ``verify``, ``restore`` and the next backup keep working for everything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Vmlfs

FUTURE = "99991231T235959Z"


def meta_edit(**fields):
    def damage(v: Vmlfs) -> None:
        path = v.store / "entries" / "good" / "backups" / f"{v.backups('good')[0]}.json"
        meta = json.loads(path.read_text())
        meta.update(fields)
        path.write_text(json.dumps(meta))
    return damage


def planted_record(ts: str):
    """A copy of a good backup's record under the name ``ts`` (naming the same objects)."""
    def plant(v: Vmlfs) -> None:
        record = v.record("good", v.backups("good")[0]) | {"timestamp": ts}
        (v.store / "entries" / "good" / "backups" / f"{ts}.json").write_text(json.dumps(record))
    return plant


def entry_json_is_a_directory(v: Vmlfs) -> None:
    path = v.store / "entries" / "other" / "entry.json"
    path.unlink()
    path.mkdir()


DAMAGE = {  # name -> (damage, the object named, a word of its reason)
    "stray directory": (lambda v: (v.store / "entries" / "junk").mkdir(), "junk", "missing"),
    "stray file": (lambda v: (v.store / "entries" / "notes.txt").write_text("hi"), "notes.txt", "entry.json"),
    "garbage entry.json": (lambda v: (v.store / "entries" / "other" / "entry.json").write_bytes(b"\xff{"), "other", "JSON"),
    "entry.json not a file": (entry_json_is_a_directory, "other", "directory"),
    "entry.json wrong types": (lambda v: (v.store / "entries" / "other" / "entry.json").write_text(
        json.dumps({"version": "1.1", "name": "other", "guest": "/x", "include": "abc"})), "other", "list"),
    "impossible timestamp": (planted_record("20261399T999999Z"), "20261399T999999Z", "invalid"),
    "files is a list": (meta_edit(files=[]), "good@", "files"),
    "duration is a word": (meta_edit(duration_s="slow"), "good@", "duration_s"),
    "stats of the wrong type": (meta_edit(stats={"files": "x"}), "good@", "stats"),
    "warnings not a list": (meta_edit(warnings=5), "good@", "warnings"),
    "far-future timestamp": (planted_record(FUTURE), FUTURE, "future"),
}


@pytest.fixture
def store(vmlfs: Vmlfs, tmp_path: Path) -> Vmlfs:
    for name in ("good", "other"):
        home = tmp_path / name
        home.mkdir()
        (home / "file.txt").write_text(f"{name}\n")
        vmlfs.run("entry", "add", name, "--guest", str(home))
        vmlfs.run("backup", name)
    vmlfs.run("backup", "good")  # two backups: one can be damaged, the other stays good
    return vmlfs


@pytest.mark.parametrize("case", DAMAGE)
def test_one_bad_object_costs_only_itself(store: Vmlfs, tmp_path: Path, case: str) -> None:
    damage, named, reason = DAMAGE[case]
    v = store
    damage(v)
    healthy = "other" if named.startswith(("good", "2", "9")) else "good"
    out = v.run("entry", "list").stdout.decode()  # exit 0: a listing still lists
    assert f" {healthy} " in out and "Traceback" not in out
    if named in ("junk", "notes.txt", "other"):
        [line] = [line for line in out.splitlines() if "DAMAGED" in line]
        assert named in line and reason in line
    listed = v.run("list", healthy).stdout.decode()
    assert "INVALID" not in listed
    if healthy == "other":
        lines = v.run("list", "good").stdout.decode().splitlines()
        assert sum("INVALID" in line for line in lines) == 1 and any(reason in line for line in lines)
    verify = v.run("verify", check=False)
    problems = [line for line in verify.stdout.decode().splitlines() if line.startswith("DAMAGED")]
    assert verify.returncode == 7 and problems and all(named in p or named.rstrip("@") in p for p in problems), problems
    assert "Traceback" not in verify.stderr.decode()
    assert len(problems) == 1, "each bad object is reported once"
    v.run("verify", healthy)  # the rest still verifies
    before = v.backups(healthy)
    v.run("backup", healthy)
    after = v.backups(healthy)
    assert len(after) == len(before) + 1
    v.run("restore", healthy, str(tmp_path / "r"))  # the newest readable backup
    assert (tmp_path / "r" / "file.txt").read_text() == f"{healthy}\n"
