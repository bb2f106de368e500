"""Layers extracted by standard tools (GNU tar, bsdtar) as root and as an ordinary user, compared with the guest."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import tree_listing
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.engine import backup
from vmlfs.engine.backup import BackupOptions, run_backup
from vmlfs.engine.model import EntryConfig

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
TOOLS = {"gnu-tar": ["tar", "--zstd", "-xf"], "bsdtar": ["bsdtar", "-xf"]}


def _tool(name: str) -> list[str]:
    if shutil.which(TOOLS[name][0]) is None:
        pytest.skip(f"{TOOLS[name][0]} is not installed (Debian: {'libarchive-tools' if name == 'bsdtar' else 'tar'})")
    return TOOLS[name]


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def _guest(home: Path) -> None:
    """Read-only directories with contents, directory times that any later write inside would
    change, a hardlink and symlinks (one absolute, which GNU tar extracts late) in other directories."""
    for d in ("a", "a/ro", "a/ro/sub", "b", "c", "c/deep", "c/deep/er"):
        (home / d).mkdir()
    for i in range(5):
        _write(home / "a" / f"f{i}", b"a%d" % i)
        _write(home / "c/deep/er" / f"g{i}", b"c%d" % i, 0o600)
    _write(home / "a/ro/file", b"ro", 0o444)
    _write(home / "a/ro/sub/inner", b"in", 0o400)
    _write(home / "b/x", b"shared")
    os.link(home / "b/x", home / "c/y")
    os.symlink("../a/f1", home / "b/rel")
    os.symlink("/etc/passwd", home / "b/abs")
    _write(home / "top.txt", b"top")
    os.chown(home / "a/f2", 65534, 65534)
    t = 1_600_000_000_123_456_789
    for dirpath, dirnames, filenames in os.walk(home, topdown=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            os.utime(os.path.join(dirpath, name), ns=(t, t), follow_symlinks=False)
            t += 1000
        os.utime(dirpath, ns=(t, t))
        t += 7_000_000_001
    for path, mode in (("a/ro/sub", 0o500), ("a/ro", 0o555), ("b", 0o700), ("c", 0o1777)):
        (home / path).chmod(mode)


def _backup(tmp_path: Path, home: Path) -> tuple[LocalStore, EntryConfig, Path]:
    store = LocalStore(tmp_path / "s")
    cfg = EntryConfig("e", str(home))
    store.add_entry(cfg)
    meta = run_backup(store, cfg, LocalGuest(home))
    return store, cfg, store.object_file("layers", meta.layer["sha256"])


def _extract(argv: list[str], layer: Path, out: Path, as_user: bool) -> subprocess.CompletedProcess:
    """Run the tool in ``out`` (umask 0, so the comparison sees the archive's modes, not the umask)."""
    out.mkdir()
    prefix: list[str] = []
    if as_user:
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            pytest.skip("needs root and setpriv to extract as an ordinary user")
        readable = out.parent / "layer.tar.zst"
        shutil.copyfile(layer, readable)
        readable.chmod(0o644)
        os.chown(out, 65534, 65534)
        layer, prefix = readable, NOBODY
    return subprocess.run([*prefix, "sh", "-c", 'umask 0 && exec "$@"', "sh", *argv, str(layer)], cwd=out,
                          capture_output=True, text=True, errors="replace", check=False)


def _members(layer: Path) -> list[bytes]:
    raw = subprocess.run(["zstd", "-dc", str(layer)], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw), encoding="utf-8", errors="surrogateescape") as tar:
        return [os.fsencode(m.name) for m in tar]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A scratch directory every user can reach (pytest's own is its owner's only)."""
    path = Path(tempfile.mkdtemp(prefix="vmlfs-tar-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize("tool", sorted(TOOLS))
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "user"])
def test_a_full_layer_extracts_exactly(tmp_path: Path, open_dir: Path, tool: str, as_user: bool) -> None:
    """Modes, mtimes (directories too), symlinks and hardlinks as on the guest. As an ordinary user
    the tools keep no owners and, without -p, no setuid/setgid/sticky bits, as they document."""
    argv = _tool(tool)
    home = tmp_path / "g"
    home.mkdir()
    _guest(home)
    _, _, layer = _backup(tmp_path, home)
    done = _extract(argv, layer, open_dir / "x", as_user)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    want, got = tree_listing(home), tree_listing(open_dir / "x")
    if as_user:
        want, got = ({k: (v[0], v[1] & 0o777 if v[1] is not None else None, *v[4:]) for k, v in t.items()}
                     for t in (want, got))
    assert got == want


@pytest.mark.parametrize("batch", [4096, 2])
def test_members_are_depth_first_in_full_and_incremental_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                batch: int) -> None:
    """Each directory before its contents and its contents together (what tar needs to set its
    times after them), however the files are batched for reading."""
    monkeypatch.setattr(backup, "BATCH_FILES", batch)
    home = tmp_path / "g"
    home.mkdir()
    _guest(home)
    store, cfg, layer = _backup(tmp_path, home)
    full = _members(layer)
    assert [p.split(b"/") for p in full] == sorted(p.split(b"/") for p in full)
    assert full.index(b"b/x") < full.index(b"c") < full.index(b"c/y")
    (home / "a/ro").chmod(0o755)
    _write(home / "a/ro/new", b"new")
    _write(home / "a/f3", b"changed")
    _write(home / "c/deep/er/g9", b"new too")
    meta = run_backup(store, cfg, LocalGuest(home), BackupOptions(kind="incremental"))
    inc = _members(store.object_file("layers", meta.layer["sha256"]))
    assert inc == [b"a/f3", b"a/ro", b"a/ro/new", b"c/deep/er", b"c/deep/er/g9"]


@pytest.mark.parametrize(("tool", "locale"), [("gnu-tar", "C.UTF-8"), ("gnu-tar", "C"), ("bsdtar", "C.UTF-8")])
def test_names_that_are_not_utf8_come_back_as_their_bytes(tmp_path: Path, tool: str, locale: str) -> None:
    """Marked ``hdrcharset=BINARY``: bsdtar exits 0 and GNU tar only says it does not know the keyword.
    (bsdtar in the C locale cannot convert the valid UTF-8 name to ASCII, as for any pax archive.)"""
    argv = _tool(tool)
    home = tmp_path / "g"
    home.mkdir()
    raw = os.fsencode(home)
    os.mkdir(raw + b"/d\xff")
    for name in (b"caf\xe9.txt", b"d\xff/inner", b"long-" + b"\xfe" * 120, "utf8-café-ü".encode()):
        with open(raw + b"/" + name, "wb") as f:
            f.write(name)
    os.symlink(b"\xfe-target", raw + b"/link")
    os.symlink(b"caf\xe9.txt", raw + b"/link-\xe9")
    _, _, layer = _backup(tmp_path, home)
    out = tmp_path / "x"
    out.mkdir()
    done = subprocess.run([*argv, str(layer)], cwd=out, capture_output=True, env=dict(os.environ, LC_ALL=locale),
                          check=False)
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if b"unknown extended header keyword 'hdrcharset'" not in line]
    assert noise == []
    assert tree_listing(out) == tree_listing(home)
