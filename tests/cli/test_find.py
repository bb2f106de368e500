"""``vmlfs find``: name and path patterns across backups, through the real CLI, from the trees alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Vmlfs, deep_tree, remove_tree


@pytest.fixture
def three(vmlfs: Vmlfs, tmp_path: Path) -> tuple[Vmlfs, list[str]]:
    home = tmp_path / "home"
    for rel in ("analysis/fit.C", "analysis/cuts/fit.C", "data/run1.root", "data/old/run0.root", "README"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(rel)
    (home / os.fsdecode(b"caf\xe9.root")).write_text("x")
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("-q", "backup", "e")
    (home / "data" / "run2.root").write_text("new")
    vmlfs.run("-q", "backup", "e")
    (home / "data" / "run1.root").unlink()
    vmlfs.run("-q", "backup", "e")
    stamps = vmlfs.backups("e")
    for ts in stamps:
        vmlfs.layer_file("e", ts).unlink(missing_ok=True)  # an answer proves no layer was read
    return vmlfs, stamps


def lines(v: Vmlfs, *args: str) -> list[str]:
    return v.run("-q", "find", "e", *args).stdout.decode().splitlines()


def test_name_patterns_match_names_anywhere_in_every_backup(three) -> None:
    v, (a, b, c) = three
    assert lines(v, "run*.root") == [f"{a}  data/old/run0.root", f"{a}  data/run1.root",
                                     f"{b}  data/old/run0.root", f"{b}  data/run1.root", f"{b}  data/run2.root",
                                     f"{c}  data/old/run0.root", f"{c}  data/run2.root"]
    assert lines(v, "fit.C", "--backups", "latest") == [f"{c}  analysis/cuts/fit.C", f"{c}  analysis/fit.C"]
    assert lines(v, "*.root", "--backups", a) == [f"{a}  caf\\xe9.root", f"{a}  data/old/run0.root", f"{a}  data/run1.root"]
    assert lines(v, "[cd]*", "--backups", "latest") == [f"{c}  analysis/cuts/", f"{c}  caf\\xe9.root", f"{c}  data/"]
    assert lines(v, "nothing-like-this") == []
    done = v.run("find", "e", "README", "--backups", b, "--backups", c)
    assert done.stderr.decode().strip() == "2 matches in 2 backups"


def test_path_patterns_match_whole_paths_component_by_component(three) -> None:
    v, (_, _, c) = three
    assert lines(v, "analysis/*.C", "--backups", "latest") == [f"{c}  analysis/fit.C"]  # * does not cross /
    assert lines(v, "/analysis/*/fit.C", "--backups", "latest") == [f"{c}  analysis/cuts/fit.C"]
    assert lines(v, "data/*", "--backups", "latest") == [f"{c}  data/old/", f"{c}  data/run2.root"]


@pytest.mark.parametrize("bad", ["", "a//b", "/"])
def test_a_malformed_pattern_is_one_clear_line(three, bad: str) -> None:
    v, _ = three
    done = v.run("find", "e", bad, check=False)
    assert done.returncode == 2 and b"is not a pattern" in done.stderr and b"Traceback" not in done.stderr


def test_find_reaches_the_bottom_of_a_tree_deeper_than_the_recursion_limit(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "deep"
    home.mkdir()
    try:
        bottom = deep_tree(home, 1500)
        vmlfs.run("entry", "add", "d", "--guest", str(home))
        vmlfs.run("-q", "backup", "d")
        (ts,) = vmlfs.backups("d")
        found = vmlfs.run("-q", "find", "d", "h").stdout.decode()
        assert found == f"{ts}  {bottom.decode()}/h\n"
    finally:
        remove_tree(home)  # pytest's own clean-up of old runs recurses per level
