"""``vmlfs diff``: every kind of change, from the trees alone (the mount's changes.txt: tests/fs/test_mount_changes.py).

The layers are removed before diffing: an answer then proves no layer was read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import Vmlfs, one_file_guest

CHANGES = [
    "U    .",  # the home's mtime: entries were added and removed
    "U    analysis/",
    "U    analysis/cuts.C",
    "M    analysis/fit.C",
    "-    analysis/old.C",
    "+    analysis/plots/",
    "+    analysis/plots/h1.png",
    "+    caf\\xe9.txt",
    "T    data",
    "-    data/run1.root",
    "M    latest.root",
]


def two_backups(vmlfs: Vmlfs, tmp_path: Path) -> tuple[str, str]:
    home = tmp_path / "home"
    (home / "analysis").mkdir(parents=True)
    (home / "data").mkdir()
    for name, text in (("fit.C", "void fit() {}\n"), ("cuts.C", "cut\n"), ("old.C", "old\n")):
        (home / "analysis" / name).write_text(text)
    (home / "data" / "run1.root").write_bytes(b"\0" * 1000)
    (home / "latest.root").symlink_to("data/run1.root")
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("-q", "backup", "e")
    (home / "analysis" / "fit.C").write_text("void fit() { return; }\n")  # content
    (home / "analysis" / "cuts.C").chmod(0o600)  # metadata only
    (home / "analysis" / "old.C").unlink()
    (home / "analysis" / "plots").mkdir()
    (home / "analysis" / "plots" / "h1.png").write_bytes(b"png")
    shutil.rmtree(home / "data")
    (home / "data").write_text("now a file\n")  # type
    (home / "latest.root").unlink()
    (home / "latest.root").symlink_to("elsewhere.root")  # a symlink's target is its content
    (home / os.fsdecode(b"caf\xe9.txt")).write_text("non-UTF-8 name\n")
    vmlfs.run("-q", "backup", "e")
    first, second = vmlfs.backups("e")
    return first, second


def test_diff_names_every_kind_of_change_without_reading_a_layer(vmlfs: Vmlfs, tmp_path: Path) -> None:
    first, second = two_backups(vmlfs, tmp_path)
    for ts in (first, second):
        vmlfs.layer_file("e", ts).unlink()
    done = vmlfs.run("diff", f"e@{first}", f"e@{second}")
    assert done.stdout.decode().splitlines() == CHANGES
    assert done.stderr.decode().strip() == (f"e@{first} -> e@{second}: 3 added, 2 removed, 2 modified, 1 changed type,"
                                            " 3 metadata only")
    below = vmlfs.run("-q", "diff", f"e@{first}", "e@latest", "analysis").stdout.decode().splitlines()
    assert below == ["U    analysis/", "U    analysis/cuts.C", "M    analysis/fit.C", "-    analysis/old.C",
                     "+    analysis/plots/", "+    analysis/plots/h1.png"]
    back = vmlfs.run("-q", "diff", f"e@{second}", f"e@{first}", "analysis/plots").stdout.decode().splitlines()
    assert back == ["-    analysis/plots/", "-    analysis/plots/h1.png"]
    assert vmlfs.run("-q", "diff", f"e@{first}", f"e@{first}").stdout == b""
    missing = vmlfs.run("diff", f"e@{first}", "e@29990101", check=False)
    assert missing.returncode != 0 and b"no backup matching" in missing.stderr and b"Traceback" not in missing.stderr


def test_an_extended_attribute_alone_is_a_metadata_change(vmlfs: Vmlfs, tmp_path: Path) -> None:
    fit = one_file_guest(vmlfs, tmp_path / "home", "x", "fit.C", "v1\n")
    try:
        os.setxattr(fit, "user.comment", b"tuned")
    except OSError as exc:
        pytest.skip(f"this file system takes no user attributes: {exc.strerror}")
    vmlfs.run("-q", "backup", "x")
    first, second = vmlfs.backups("x")
    assert vmlfs.run("-q", "diff", f"x@{first}", f"x@{second}").stdout.decode().splitlines() == ["U    fit.C"]
    listed = json.loads(vmlfs.run("ls", f"x@{second}", "--json").stdout)["entries"]
    assert listed[0]["xattrs"] == {"user.comment": b"tuned".hex()}
