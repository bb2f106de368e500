"""``vmlfs export`` and ``vmlfs import``: one file carries an entry's backups into another store; a damaged
bundle adds nothing; importing twice adds nothing. Through the real CLI and real tar."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import Vmlfs, snapshot_copy, tree_listing


@pytest.fixture
def history(vmlfs: Vmlfs, tmp_path: Path) -> tuple[Vmlfs, Path, list[str], dict[str, Path]]:
    home = tmp_path / "home"
    (home / "analysis").mkdir(parents=True)
    (home / "analysis" / "fit.C").write_text("v1\n")
    (home / "data.bin").write_bytes(os.urandom(3 << 20))
    (home / ".bash_history").write_text("root -l\n")
    vmlfs.run("entry", "add", "higgs", "--guest", str(home), "--exclude", "*.tmp")
    copies = {}
    for step in range(3):
        (home / "analysis" / "fit.C").write_text(f"v{step}\n")
        vmlfs.run("-q", "backup", "higgs", *(["--kind", "differential"] if step == 2 else []))
        copies[vmlfs.backups("higgs")[-1]] = snapshot_copy(home, tmp_path / f"copy{step}")
    return vmlfs, home, vmlfs.backups("higgs"), copies


def other_store(vmlfs: Vmlfs, tmp_path: Path) -> Vmlfs:
    return Vmlfs(tmp_path / "other", {**vmlfs.env, "VMLFS_STORE": str(tmp_path / "other")})


def test_export_then_import_into_another_store_restores_each_backup(history, tmp_path: Path) -> None:
    v, _, stamps, copies = history
    bundle = tmp_path / "higgs.vmlfs"
    said = v.run("export", "higgs", str(bundle)).stdout.decode()
    assert said.startswith("exported 3 backups of higgs (") and str(bundle) in said
    with tarfile.open(bundle) as tar:  # a plain tar: its index first, its checksum last
        listed = tar.getnames()
    assert listed[0] == "vmlfs-bundle.json" and listed[-1] == "vmlfs-bundle.sha256"
    assert subprocess.run(["tar", "-tf", str(bundle)], capture_output=True, check=True).stdout.decode().split() == listed

    w = other_store(v, tmp_path)
    w.run("entry", "add", "unrelated", "--guest", str(tmp_path))
    done = w.run("import", str(bundle)).stdout.decode()
    assert done.startswith("created entry higgs, added 3 backups, 0 already there, stored ")
    assert w.backups("higgs") == stamps
    assert b"--exclude" not in w.run("entry", "show", "higgs").stdout and b"*.tmp" in w.run("entry", "show", "higgs").stdout
    for ts in stamps:
        w.run("-q", "restore", f"higgs@{ts}", str(tmp_path / f"r-{ts}"))
        assert tree_listing(tmp_path / f"r-{ts}") == tree_listing(copies[ts])
    assert b"ok: 3 backups" in w.run("verify").stdout
    again = w.run("import", str(bundle)).stdout.decode()
    assert again == "higgs: added 0 backups, 3 already there, stored 0 objects\n"
    renamed = w.run("import", str(bundle), "--as", "higgs-from-anna").stdout.decode()
    assert renamed.startswith("created entry higgs-from-anna, added 3 backups") and renamed.endswith("stored 0 objects\n")


def test_one_backup_then_the_rest_adds_only_what_is_missing(history, tmp_path: Path) -> None:
    v, _, stamps, _ = history
    first, rest = tmp_path / "first.vmlfs", tmp_path / "all.vmlfs"
    v.run("-q", "export", f"higgs@{stamps[0]}", str(first))
    v.run("-q", "export", "higgs", str(rest))
    w = other_store(v, tmp_path)
    w.run("-q", "import", str(first))
    assert w.backups("higgs") == stamps[:1]
    assert w.run("import", str(rest)).stdout.decode().startswith("higgs: added 2 backups, 1 already there")
    assert w.backups("higgs") == stamps


@pytest.mark.parametrize("damage", ["flipped byte in a layer", "truncated", "index edited", "not a bundle",
                                    "member added", "checksum missing"])
def test_a_damaged_bundle_is_refused_and_adds_nothing(history, tmp_path: Path, damage: str) -> None:
    v, _, _, _ = history
    bundle = tmp_path / "higgs.vmlfs"
    v.run("-q", "export", "higgs", str(bundle))
    data = bytearray(bundle.read_bytes())
    with tarfile.open(bundle) as tar:
        members = tar.getmembers()
    layer = next(m for m in members if m.name.startswith("objects/layers/"))
    if damage == "flipped byte in a layer":
        data[layer.offset_data + 1000] ^= 0x40
    elif damage == "truncated":
        data = data[:layer.offset_data + 500]
    elif damage == "index edited":
        at = data.index(b'"higgs"')
        data[at + 1:at + 6] = b"hacks"
    elif damage == "not a bundle":
        data = bytearray(b"\0" * 10240)
    elif damage == "member added":
        with tarfile.open(tmp_path / "x.tar", "w") as tar:
            tar.add(bundle, "objects/layers/" + "0" * 64)
        data = bytearray((tmp_path / "x.tar").read_bytes())
    else:
        last = members[-1]
        data = data[:last.offset]
        data += b"\0" * 1024
    bundle.write_bytes(bytes(data))
    w = other_store(v, tmp_path)
    w.run("entry", "add", "unrelated", "--guest", str(tmp_path))
    before = sorted(p.relative_to(w.store) for p in w.store.rglob("*") if ".lock" not in p.name)
    refused = w.run("import", str(bundle), check=False)
    assert refused.returncode == 7, refused.stderr
    err = refused.stderr.decode()
    assert err.count("\n") <= 2 and "Traceback" not in err and str(bundle) in err
    after = sorted(p.relative_to(w.store) for p in w.store.rglob("*") if ".lock" not in p.name)
    assert after == before, "a refused bundle added something"


def test_export_refuses_backups_of_two_entries_and_leaves_no_file(history, tmp_path: Path) -> None:
    v, home, _, _ = history
    v.run("entry", "add", "other", "--guest", str(home))
    v.run("-q", "backup", "other")
    out = tmp_path / "two.vmlfs"
    refused = v.run("export", "higgs", "other", str(out), check=False)
    assert refused.returncode == 2 and b"one entry" in refused.stderr and not out.exists()
    assert not list(tmp_path.glob(".two.vmlfs.*"))
