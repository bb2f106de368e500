"""SSH guest URLs that smuggle options or shell text into user or host are refused when they are written:
at ``entry add`` and at ``entry edit`` (vmlfs/app/entries.py check_entry), before any backup runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Vmlfs

HOSTILE = [
    "ssh://-oProxyCommand=touch${IFS}pwned/x",
    "ssh://-oProxyCommand=id@h/x",
    "ssh://u@h;touch pwned/x",
    "ssh://u;id@h/x",
    "ssh://u@`touch pwned`/x",
    "ssh://`id`@h/x",
    "ssh://u@$(touch pwned)/x",
    "ssh://$(id)@h/x",
    "ssh://u@h\nProxyCommand touch pwned/x",
    "ssh://u\nid@h/x",
    "ssh://u@-h/x",
    "ssh://u@h x/p",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_ssh_urls_are_refused_at_entry_add_and_edit(vmlfs: Vmlfs, tmp_path: Path, url: str) -> None:
    added = vmlfs.run("entry", "add", "bad", "--guest", url, check=False, timeout=60)
    assert added.returncode == 2 and b"Traceback" not in added.stderr, added.stderr
    assert not (vmlfs.store / "entries" / "bad").exists()
    home = tmp_path / "g"
    home.mkdir(exist_ok=True)
    vmlfs.run("entry", "add", "good", "--guest", str(home))
    before = (vmlfs.store / "entries" / "good" / "entry.json").read_bytes()
    edited = vmlfs.run("entry", "edit", "good", "--guest", url, check=False, timeout=60)
    assert edited.returncode == 2 and b"Traceback" not in edited.stderr, edited.stderr
    assert (vmlfs.store / "entries" / "good" / "entry.json").read_bytes() == before
    assert json.loads(before)["guest"] == str(home)
    assert not list(Path.cwd().glob("pwned")) and not (tmp_path / "pwned").exists()
