"""Entries, env.txt and metadata, listing and backup references, through the real CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

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


def test_entry_edit_changes_only_what_is_given_and_validates_like_add(vmlfs: Vmlfs, tmp_path: Path) -> None:
    vmlfs.run("entry", "add", "e", "--guest", str(tmp_path), "--exclude", "*.root", "--vm-memory", "4096")
    vmlfs.run("entry", "edit", "e", "--vm-snapshot", "--consistent", "--retries", "3", "--domain", "cvm", "--vm-cpus", "2")
    shown = json.loads(vmlfs.run("entry", "show", "e").stdout)
    assert shown["backup"] == {"vm_snapshot": True, "consistent": True, "retries": 3}
    assert shown["domain"] == "cvm" and shown["exclude"] == ["*.root"] and shown["vm"] == {"memory": 4096, "cpus": 2}
    vmlfs.run("entry", "edit", "e", "--no-consistent")
    assert json.loads(vmlfs.run("entry", "show", "e").stdout)["backup"]["consistent"] is False
    for bad in (["--domain", "-x"], ["--release", "not a release"], ["--vm-ssh", "nohostport"],
                ["--guest", "ssh://-oProxyCommand=sh/x"], ["--guest", "s3://bucket/x"]):
        refused = vmlfs.run("entry", "edit", "e", *bad, check=False)
        assert refused.returncode == 2, (bad, refused.stderr)
    assert json.loads(vmlfs.run("entry", "show", "e").stdout)["domain"] == "cvm"  # nothing was written
    missing = vmlfs.run("entry", "edit", "nope", "--retries", "1", check=False)
    assert missing.returncode == 3


def test_entry_names_a_windows_file_system_can_hold(vmlfs: Vmlfs, tmp_path: Path) -> None:
    """Guest names live only inside archives, so a store works on a Windows file system: the names vmlfs
    chooses (entries) must be ones Windows can hold, and must not differ only in case."""
    for bad in ("CON", "con", "aux.txt", "NUL", "nul.tar.gz", "COM1", "com9.x", "LPT3", "Lpt1.log", "trailing."):
        refused = vmlfs.run("entry", "add", bad, "--guest", str(tmp_path), check=False)
        assert refused.returncode == 2 and b"Windows" in refused.stderr, (bad, refused.stderr)
    for good in ("console", "COM10", "aux-data", "LPT", "higgs.v2"):
        vmlfs.run("entry", "add", good, "--guest", str(tmp_path))
    clash = vmlfs.run("entry", "add", "Higgs.V2", "--guest", str(tmp_path), check=False)
    assert clash.returncode == 2 and b"differs only in case from the existing entry 'higgs.v2'" in clash.stderr


def test_help_is_whole_and_every_command_has_an_example() -> None:
    import importlib

    import click

    from vmlfs.cli.main import COMMAND_MODULES, cli

    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(f"vmlfs.cli.{module}")
    leaves: list[tuple[str, click.Command]] = []

    def walk(cmd: click.Command, path: str) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            leaves.append((path, cmd))

    walk(cli, "")
    assert len(leaves) > 20
    assert [path for path, cmd in leaves if "Example: vmlfs " not in (cmd.help or "")] == []
    for args in ([], ["entry"], ["vm"], ["cernvm"]):
        commands = CliRunner().invoke(cli, [*args, "--help"]).output.split("Commands:")[1]
        assert "..." not in commands and "…" not in commands, commands
