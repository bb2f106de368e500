"""Deep trees over SSH: a backup from an SSH guest and a restore into one (the agent's walk and its
restore mode, the sender's walk) with a tree deeper than Python's recursion limit and the longest path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends.conftest import Sshd
from tests.cli.test_depth import DEPTH, longest_path_tree
from tests.conftest import Vmlfs, deep_tree, remove_tree, tree_listing

pytestmark = pytest.mark.sshd


@pytest.mark.parametrize("shape", ["deep", "longest-path"])
def test_deep_tree_over_ssh(vmlfs: Vmlfs, sshd: Sshd, tmp_path: Path, shape: str) -> None:
    vmlfs.env = sshd.env(vmlfs.env)
    home, target = tmp_path / "g", tmp_path / "r"
    home.mkdir()
    try:
        if shape == "deep":
            deep_tree(home, DEPTH)
        else:
            longest_path_tree(home)
        vmlfs.run("entry", "add", "e", "--guest", sshd.url(str(home)))
        vmlfs.run("backup", "e")
        vmlfs.run("verify")
        proc = vmlfs.run("restore", "e", sshd.url(str(target)))
        assert b"Traceback" not in proc.stderr
        assert tree_listing(target) == tree_listing(home)
    finally:
        remove_tree(home)
        remove_tree(target)
