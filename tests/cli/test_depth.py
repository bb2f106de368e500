"""Trees deeper than Python's recursion limit, and the longest path Linux allows, through the real CLI:
backup, verify and a whole-tree restore must give back exactly the guest."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import pytest

from tests.conftest import Vmlfs, deep_tree, remove_tree, tree_listing

DEPTH = 1500  # above sys.getrecursionlimit()
PATH_MAX = 4096  # Linux, with the terminating NUL


def longest_path_tree(home: Path) -> bytes:
    """Directories of long names below ``home`` until the absolute path of the file at the bottom is
    exactly PATH_MAX - 1 bytes; returns that file's path relative to ``home``."""
    room = PATH_MAX - 1 - len(os.fsencode(home)) - 1  # the relative path's budget, after home and '/'
    parts: list[bytes] = []
    while room - sum(len(p) + 1 for p in parts) > 511:
        parts.append(b"n" * 255)
    rest = room - sum(len(p) + 1 for p in parts)  # 256..511: a directory and a file name of at most 255 each
    parts.append(b"m" * ((rest - 1) // 2))
    parts.append(b"f" * (rest - 1 - (rest - 1) // 2))
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            os.mkdir(part, dir_fd=fd)
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        leaf = os.open(parts[-1], os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd)
        os.write(leaf, b"x" * 1000)
        os.close(leaf)
    finally:
        os.close(fd)
    rel = b"/".join(parts)
    assert len(os.fsencode(home)) + 1 + len(rel) == PATH_MAX - 1
    return rel


@pytest.fixture
def homes(tmp_path: Path):
    """The guest home and the restore target: paths of equal length, so whatever fits in one fits in the other."""
    home, target = tmp_path / "g", tmp_path / "r"
    home.mkdir()
    yield home, target
    remove_tree(home)
    remove_tree(target)


@pytest.mark.parametrize("shape", ["deep", "longest-path"])
def test_deep_tree_backs_up_verifies_and_restores(vmlfs: Vmlfs, homes: tuple[Path, Path], shape: str) -> None:
    home, target = homes
    assert DEPTH > sys.getrecursionlimit()
    if shape == "deep":
        changed = deep_tree(home, DEPTH) + b"/f"
    else:
        changed = longest_path_tree(home)
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("backup", "e")
    with open(os.path.join(os.fsencode(home), changed), "ab") as f:  # the incremental's diff reaches the bottom too
        f.write(b"changed")
    vmlfs.run("backup", "e")
    vmlfs.run("verify")
    first, second = vmlfs.backups("e")
    diff = vmlfs.run("-q", "diff", f"e@{first}", f"e@{second}").stdout
    modified = [changed] if shape == "longest-path" else [changed, changed[:-1] + b"h"]  # h: a hardlink of f
    assert diff == b"".join(b"M    " + path + b"\n" for path in modified)  # both walks reach the bottom, iteratively
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited: fewer fds than levels
    try:
        proc = vmlfs.run("restore", "e", str(target))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert b"Traceback" not in proc.stderr
    assert tree_listing(target) == tree_listing(home)
