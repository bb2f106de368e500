"""``--json`` on entry list/show, list, ls, versions, diff, find and verify: documents a script can trust."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import Vmlfs

RAW = b"caf\xe9.C"  # not UTF-8: comes back byte-exact through os.fsencode


def doc(v: Vmlfs, *args: str, code: int = 0):
    done = v.run(*args, "--json", check=code == 0)
    assert done.returncode == code, done.stderr
    return json.loads(done.stdout)


def test_every_listing_command_speaks_json(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "analysis").mkdir(parents=True)
    (home / "analysis" / "fit.C").write_text("v1\n")
    (home / os.fsdecode(RAW)).write_text("raw\n")
    (home / "link").symlink_to("analysis/fit.C")
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("-q", "backup", "e")
    (home / "analysis" / "fit.C").write_text("v2, longer\n")
    vmlfs.run("-q", "backup", "e")
    a, b = vmlfs.backups("e")

    assert doc(vmlfs, "entry", "list") == [{"name": "e", "default": True, "guest": str(home), "backups": 2}]
    assert doc(vmlfs, "entry", "show", "e")["guest"] == str(home)
    listed = doc(vmlfs, "list", "e")
    assert [(r["timestamp"], r["kind"], r["protected"]) for r in listed] == [(a, "full", False), (b, "incremental", False)]
    assert listed[0]["counts"]["files"] == 2 and listed[1]["base"] == a

    top = doc(vmlfs, "ls", f"e@{a}")
    by_name = {entry["name"]: entry for entry in top["entries"]}
    assert os.fsencode(next(n for n in by_name if n.startswith("caf"))) == RAW
    assert by_name["link"]["type"] == "symlink" and by_name["link"]["target"] == "analysis/fit.C"
    assert by_name["analysis"]["type"] == "dir" and top["timestamp"] == a

    versions = doc(vmlfs, "versions", "e", "analysis/fit.C")["versions"]
    assert [(v["timestamp"], v["size"]) for v in versions] == [(a, 3), (b, 11)]
    assert all(len(v["sha256"]) == 64 for v in versions)

    diff = doc(vmlfs, "diff", f"e@{a}", f"e@{b}")
    assert [(c["kind"], c["path"]) for c in diff["changes"]] == [("M", "analysis/fit.C")]
    assert diff["changes"][0]["old"]["size"] == 3 and diff["changes"][0]["new"]["size"] == 11
    assert diff["counts"] == {"+": 0, "-": 0, "T": 0, "M": 1, "U": 0}

    found = doc(vmlfs, "find", "e", "*.C")
    assert sorted((m["timestamp"], os.fsencode(m["path"])) for m in found) == sorted(
        (ts, path) for ts in (a, b) for path in (b"analysis/fit.C", RAW))

    assert doc(vmlfs, "verify") == {"ok": True, "backups": 2, "files": 4, "bytes": 3 + 4 + 11, "problems": [],  # shared bytes once
                                    "damaged_backups": []}
    layer = vmlfs.layer_file("e", b)
    layer.write_bytes(layer.read_bytes()[:-100])
    damaged = doc(vmlfs, "verify", code=7)
    assert damaged["ok"] is False and damaged["damaged_backups"] == [f"e@{b}"] and damaged["problems"]
