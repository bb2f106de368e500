"""Entries, env.txt and metadata, listing and backup references, through the real CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import Vmlfs


def test_entry_lifecycle_and_default(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "g"
    home.mkdir()
    vmlfs.run("entry", "add", "alpha", "--guest", str(home), "--exclude", "*.root", "--include", "keep.root",
              "--release", "2021.05-1")
    shown = json.loads(vmlfs.run("entry", "show", "alpha").stdout)
    assert shown["exclude"] == ["*.root"] and shown["include"] == ["keep.root"] and shown["release"] == "2021.05-1"
    assert vmlfs.run("entry", "add", "alpha", "--guest", str(home), check=False).returncode == 4
    assert vmlfs.run("entry", "list").stdout.decode().startswith("* alpha"), "a single entry is the default"
    vmlfs.run("entry", "add", "beta", "--guest", str(home))
    assert "* " not in vmlfs.run("entry", "list").stdout.decode()
    vmlfs.run("entry", "default", "beta")
    assert "* beta" in vmlfs.run("entry", "list").stdout.decode()
    refused = vmlfs.run("entry", "remove", "beta", input=b"n\n", check=False)
    assert refused.returncode == 130 and (vmlfs.store / "entries" / "beta").exists()
    vmlfs.run("entry", "remove", "beta", input=b"y\n")
    vmlfs.run("entry", "remove", "alpha", "--yes")
    assert vmlfs.run("entry", "list").stdout == b""
    missing = vmlfs.run("entry", "show", "alpha", check=False)
    assert missing.returncode == 3 and b"no entry 'alpha'" in missing.stderr


def test_env_txt_and_metadata(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "g"
    home.mkdir()
    (home / ".bash_history").write_text("root -l\n")
    (home / "a").write_text("a")
    env_file = tmp_path / "env"
    env_file.write_bytes(b"HOME=/home/x\nODD=$(rm -rf ~)\n")
    vmlfs.run("entry", "add", "e", "--guest", str(home), "--release", "2021.05-1")
    vmlfs.run("backup", "e", "--env-file", str(env_file))
    env = dict(vmlfs.env, VMLFS_MARKER="from-the-process")
    Vmlfs(vmlfs.store, env).run("backup", "e")
    first, second = vmlfs.backups("e")
    meta = vmlfs.record("e", first)

    def blob(record: dict, name: str) -> bytes:
        return (vmlfs.store / "objects" / "blobs" / record["files"][name]["sha256"]).read_bytes()

    assert blob(meta, "env.txt") == env_file.read_bytes()
    assert b"VMLFS_MARKER=from-the-process\n" in blob(vmlfs.record("e", second), "env.txt")
    assert blob(meta, "history.txt") == b"root -l\n"
    assert meta["kind"] == "full" and meta["base"] is None and meta["release"] == "2021.05-1"
    assert meta["stats"]["files"] == 2 and meta["started"] <= meta["completed"]
    assert meta["layer"]["size"] == vmlfs.layer_file("e", first).stat().st_size


def test_backup_references(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "g"
    home.mkdir()
    (home / "f").write_text("1")
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("backup", "e")
    os.unlink(home / "f")
    vmlfs.run("backup", "e")
    first, second = vmlfs.backups("e")
    assert b" f\n" in vmlfs.run("ls", f"e@{first}").stdout
    assert vmlfs.run("ls", "e@latest").stdout == vmlfs.run("ls", f"e@{second}").stdout == b""
    assert b" f\n" in vmlfs.run("ls", f"e@{first[:-1]}").stdout, "a unique timestamp prefix"
    ambiguous = vmlfs.run("ls", "e@2", check=False)
    assert ambiguous.returncode == 2 and b"matches 2 backups" in ambiguous.stderr
    assert vmlfs.run("ls", "e@1999", check=False).returncode == 3
    assert vmlfs.run("ls", f"e@{first}", "nope", check=False).returncode == 3
    listing = vmlfs.run("list", "e").stdout.decode().splitlines()
    assert len(listing) == 2 and "files" in listing[0] and ("ms" in listing[0] or " s" in listing[0])
