"""End to end through the real CLI: full -> incremental -> differential, each restored and compared.

The guest holds every fidelity case of the foundation issue; between backups
it gets adds, edits, deletes, renames and metadata-only changes. After each
backup a `cp -a` copy of the guest is taken; every backup is later restored
and must equal its copy exactly (type, mode incl. setuid/setgid/sticky, owner,
mtime ns, size, content, symlink targets, hardlink groups).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Vmlfs, snapshot_copy, tree_listing


def build_guest(home: Path) -> None:
    (home / "analysis" / "plots").mkdir(parents=True)
    (home / "empty" / "deeper").mkdir(parents=True)
    (home / "analysis" / "run.C").write_text("void run() { /* fit */ }\n" * 200)
    (home / "analysis" / "data.bin").write_bytes(os.urandom(3 << 20))
    (home / ".bashrc").write_text("export ROOTSYS=/cvmfs/sft.cern.ch\n")
    (home / "empty.txt").write_bytes(b"")
    os.symlink("analysis/run.C", home / "link-to-run")
    os.symlink("/nonexistent/target", home / "dangling")
    os.link(home / "analysis" / "run.C", home / "hardlink-to-run")
    setuid = home / "setuid-tool"
    setuid.write_bytes(b"#!/bin/sh\n")
    os.chmod(setuid, 0o4755)
    sgid_dir = home / "shared"
    sgid_dir.mkdir()
    os.chmod(sgid_dir, 0o2775 | 0o1000)
    odd = home / os.fsdecode(b"odd-\xff\xfe-name")
    odd.write_bytes(b"not utf-8 name")
    (home / 'win:*?"<>|\\names').write_text("windows-hostile characters")
    (home / "new\nline").write_text("newline in name")
    deep = home
    for i in range(6):
        deep = deep / ("d" * 60 + str(i))
    deep.mkdir(parents=True)
    (deep / "deep-file").write_text("path longer than 255 bytes")
    owned = home / "owned-by-nobody"
    owned.write_text("chowned")
    os.chown(owned, 65534, 65534)
    with open(home / "sparse.img", "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"middle")
    os.utime(home / "analysis" / "run.C", ns=(1_600_000_000_123456789, 1_600_000_000_123456789))


def change_guest(home: Path, step: int) -> None:
    if step == 1:
        (home / "analysis" / "run.C").write_text("void run() { /* refit */ }\n")  # edit (hardlink follows)
        (home / "analysis" / "new.C").write_text("new file\n")  # add
        (home / ".bashrc").unlink()  # delete
        os.rename(home / "analysis" / "data.bin", home / "data-moved.bin")  # rename: bytes deduplicated
        os.chmod(home / "setuid-tool", 0o755)  # metadata only
        (home / "empty" / "deeper").rmdir()
    else:
        os.utime(home / "empty.txt", ns=(1_500_000_000_000000001, 1_500_000_000_000000001))  # metadata only
        (home / "analysis" / "plots" / "fig.png").write_bytes(os.urandom(1000))
        os.unlink(home / "dangling")
        os.symlink("elsewhere", home / "dangling")  # symlink retargeted


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    home = tmp_path / "guest"
    home.mkdir()
    build_guest(home)
    return home


def fidelity_cycle(v: Vmlfs, guest: Path, tmp_path: Path) -> list[str]:
    """Entry ``physics``: a full, an incremental and a differential backup of ``guest`` (changed between
    them), each restored and compared with a copy of the guest taken at backup time, then verify;
    returns the backups' timestamps, as ``vmlfs list`` gives them (any store)."""
    v.run("entry", "add", "physics", "--guest", str(guest))
    copies = []
    for step, kind in enumerate(["full", "incremental", "differential"]):
        if step:
            change_guest(guest, step)
        out = v.run("backup", "physics", "--kind", kind)
        assert f": {kind}" in out.stdout.decode()
        copies.append(snapshot_copy(guest, tmp_path / f"copy{step}"))
    stamps = [line.split()[0] for line in v.run("list", "physics").stdout.decode().splitlines()]
    assert len(stamps) == 3
    for step, ts in enumerate(stamps):
        target = tmp_path / f"restore{step}"
        v.run("restore", f"physics@{ts}", str(target))
        assert tree_listing(target) == tree_listing(copies[step]), f"backup {step} differs from the guest at backup time"
    v.run("verify")
    return stamps


def test_full_incremental_differential_restore_exactly(vmlfs: Vmlfs, guest: Path, tmp_path: Path) -> None:
    stamps = fidelity_cycle(vmlfs, guest, tmp_path)
    assert stamps == vmlfs.backups("physics")
    listing = vmlfs.run("list", "physics").stdout.decode().splitlines()
    assert [line.split()[1] for line in listing] == ["full", "incremental", "differential"]
    assert listing[2].split()[2] == stamps[0], "a differential is based on the last full"
    assert listing[1].split()[2] == stamps[0]


def test_deleted_files_vanish_and_renames_are_not_stored_again(vmlfs: Vmlfs, guest: Path) -> None:
    vmlfs.run("entry", "add", "e", "--guest", str(guest))
    vmlfs.run("backup", "e")
    change_guest(guest, 1)
    vmlfs.run("backup", "e")
    full, inc = vmlfs.backups("e")
    names = vmlfs.run("ls", "e", "").stdout.decode()
    assert ".bashrc" not in names and "data-moved.bin" in names
    assert ".bashrc" in vmlfs.run("ls", f"e@{full}").stdout.decode()
    layer = vmlfs.layer_file("e", inc)
    assert layer.stat().st_size < 64 << 10, "the renamed 3 MiB file must not be stored again"


def test_special_files_skipped_with_warning(vmlfs: Vmlfs, guest: Path) -> None:
    os.mkfifo(guest / "a-fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(guest / "a-socket"))
    try:
        vmlfs.run("entry", "add", "e", "--guest", str(guest))
        out = vmlfs.run("backup", "e")
    finally:
        sock.close()
    err = out.stderr.decode()
    assert "a-fifo" in err and "a-socket" in err and "skipped" in err
    listing = vmlfs.run("ls", "e").stdout.decode()
    assert "a-fifo" not in listing and "a-socket" not in listing


def test_gnu_tar_and_zstd_read_every_layer(vmlfs: Vmlfs, guest: Path, tmp_path: Path) -> None:
    vmlfs.run("entry", "add", "e", "--guest", str(guest))
    vmlfs.run("backup", "e")
    change_guest(guest, 1)
    vmlfs.run("backup", "e")
    for ts in vmlfs.backups("e"):
        layer = vmlfs.layer_file("e", ts)
        subprocess.run(["zstd", "-t", "-q", str(layer)], check=True)
        listing = subprocess.run(["tar", "--zstd", "-tvf", str(layer)], check=True, capture_output=True)
        # the guest's non-UTF-8 name is marked hdrcharset=BINARY, a keyword GNU tar only reports it does not know
        assert set(listing.stderr.splitlines()) <= {b"tar: Ignoring unknown extended header keyword 'hdrcharset'"}
    full_layer = vmlfs.layer_file("e", vmlfs.backups("e")[0])
    out = tmp_path / "tar-x"
    out.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(full_layer), "-C", str(out)], check=True)
    first = tmp_path / "first"
    vmlfs.run("restore", f"e@{vmlfs.backups('e')[0]}", str(first))
    assert tree_listing(out).keys() == tree_listing(first).keys()
    assert (out / "analysis" / "run.C").read_bytes() == (first / "analysis" / "run.C").read_bytes()


def test_restore_paths_and_overwrite_rules(vmlfs: Vmlfs, guest: Path, tmp_path: Path) -> None:
    vmlfs.run("entry", "add", "e", "--guest", str(guest))
    vmlfs.run("backup", "e")
    target = tmp_path / "t"
    vmlfs.run("restore", "e", str(target), "analysis/run.C", "empty")
    assert (target / "analysis" / "run.C").read_text().startswith("void run()")
    assert (target / "empty" / "deeper").is_dir()
    assert not (target / ".bashrc").exists()
    again = vmlfs.run("restore", "e", str(target), "analysis/run.C", check=False)
    assert again.returncode == 4 and b"already exists" in again.stderr
    (target / "analysis" / "run.C").write_text("local edit")
    vmlfs.run("restore", "e", str(target), "analysis/run.C", "--overwrite")
    assert (target / "analysis" / "run.C").read_text().startswith("void run()")
    for bad in ["../etc", "/etc/passwd", "a/../../x"]:
        proc = vmlfs.run("restore", "e", str(target), bad, check=False)
        assert proc.returncode == 2, bad
        assert proc.stderr.count(b"\n") <= 2 and b"Traceback" not in proc.stderr


def test_restore_never_follows_a_symlink_in_the_target(vmlfs: Vmlfs, guest: Path, tmp_path: Path) -> None:
    vmlfs.run("entry", "add", "e", "--guest", str(guest))
    vmlfs.run("backup", "e")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "t"
    target.mkdir()
    os.symlink(outside, target / "analysis")
    proc = vmlfs.run("restore", "e", str(target), check=False)
    assert proc.returncode != 0 and b"symlink is never followed" in proc.stderr
    assert list(outside.iterdir()) == []
    proc = vmlfs.run("restore", "e", str(target), "--overwrite")
    assert list(outside.iterdir()) == [] and (target / "analysis").is_dir() and not (target / "analysis").is_symlink()


@pytest.mark.slow
def test_file_over_4_gib(vmlfs: Vmlfs, tmp_path: Path) -> None:
    home = tmp_path / "g"
    home.mkdir()
    big = home / "huge.img"
    with open(big, "wb") as f:
        f.truncate((4 << 30) + 123)
        f.seek((4 << 30) + 100)
        f.write(b"tail-bytes")
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("-q", "backup", "e", timeout=600)
    target = tmp_path / "t"
    vmlfs.run("-q", "restore", "e", str(target), timeout=600)
    restored = target / "huge.img"
    assert restored.stat().st_size == (4 << 30) + 123
    with open(restored, "rb") as f:
        f.seek((4 << 30) + 100)
        assert f.read() == b"tail-bytes" + bytes(13)
    assert restored.stat().st_blocks * 512 < (64 << 20), "restore keeps zero runs sparse"


def test_progress_on_a_terminal_only(vmlfs: Vmlfs, guest: Path) -> None:
    vmlfs.run("entry", "add", "e", "--guest", str(guest))
    quiet = vmlfs.run("backup", "e")
    assert b"packed:" not in quiet.stderr, "no progress when stderr is not a terminal"
    # `script` gives a pty of 0x0 cells, in which tqdm draws nothing: size it like a terminal
    cmd = "stty cols 120 rows 40; " + " ".join([sys.executable, "-m", "vmlfs", "backup", "e", "--kind", "full"])
    tty = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=vmlfs.env, capture_output=True, timeout=60)
    assert tty.returncode == 0
    assert b"packed" in tty.stdout and b"B/s" in tty.stdout
    silent = subprocess.run(["script", "-qec", cmd.replace("backup", "-q backup"), "/dev/null"], env=vmlfs.env,
                            capture_output=True, timeout=60)
    assert b"packed" not in silent.stdout
