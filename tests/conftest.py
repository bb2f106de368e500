"""Fixtures shared by every test package: a vmlfs CLI runner and guest-tree helpers."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Vmlfs:
    """Runs the real ``vmlfs`` command against one store, like a user would."""

    store: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "vmlfs", *args], env=self.env, capture_output=True, input=input, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"vmlfs {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout.decode(errors='replace')}\n"
                f"stderr: {proc.stderr.decode(errors='replace')}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "vmlfs", *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def backups(self, entry: str) -> list[str]:
        return sorted(p.name[:-5] for p in (self.store / "entries" / entry / "backups").glob("*.json"))

    def record(self, entry: str, ts: str) -> dict:
        """A format-2 backup's record (docs/FORMAT.md)."""
        return json.loads((self.store / "entries" / entry / "backups" / f"{ts}.json").read_text())

    def layer_file(self, entry: str, ts: str) -> Path:
        """The layer object a backup wrote."""
        return self.store / "objects" / "layers" / f"{self.record(entry, ts)['layer']['sha256']}.tar.zst"

    def tree_file(self, entry: str, ts: str) -> Path:
        """The tree object a backup's record names (a delta or a whole tree)."""
        return self.store / "objects" / "trees" / f"{self.record(entry, ts)['manifest']['sha256']}.sqlite"

    def reseal_tree(self, entry: str, ts: str) -> None:
        """After a test edited a backup's tree on purpose: store it under its new sha256 and point
        the record there, so what is tested is the tree's validation, not the hash check before it."""
        import hashlib

        record = self.record(entry, ts)
        tree = self.tree_file(entry, ts)
        data = tree.read_bytes()
        record["manifest"] |= {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        tree.rename(tree.with_name(f"{record['manifest']['sha256']}.sqlite"))
        (self.store / "entries" / entry / "backups" / f"{ts}.json").write_text(json.dumps(record))

    def layer_files(self) -> list[Path]:
        return sorted((self.store / "objects" / "layers").glob("*.tar.zst"))


def replace_layer(store: Path, entry: str, ts: str, data: bytes) -> None:
    """What an attacker who replaces a backup's layer with ``data`` must do in format 2 so that no
    sha256 check gives it away: store it as a new object under its sha256, point the tree's rows
    there (a new tree object too) and make the record name both, with their sizes."""
    import sqlite3
    import tempfile

    record_file = store / "entries" / entry / "backups" / f"{ts}.json"
    record = json.loads(record_file.read_text())
    assert record["manifest"]["base"] is None, "the tree is a checkpoint: every row naming the layer is in it"
    old, new = record["layer"]["sha256"], hashlib.sha256(data).hexdigest()
    layers, trees = store / "objects" / "layers", store / "objects" / "trees"
    (layers / f"{old}.tar.zst").unlink()
    (layers / f"{new}.tar.zst").write_bytes(data)
    tree = trees / f"{record['manifest']['sha256']}.sqlite"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "tree.sqlite"
        work.write_bytes(tree.read_bytes())
        db = sqlite3.connect(work)
        db.execute("UPDATE nodes SET layer = ? WHERE layer = ?", (new, old))
        db.commit()
        db.close()
        tree_data = work.read_bytes()
    tree.unlink()
    digest = hashlib.sha256(tree_data).hexdigest()
    (trees / f"{digest}.sqlite").write_bytes(tree_data)
    record["layer"] = {"size": len(data), "sha256": new}
    record["manifest"].update(size=len(tree_data), sha256=digest)
    record_file.write_text(json.dumps(record))


@pytest.fixture
def xattr_home(tmp_path: Path) -> Path:
    """A guest home with user.* attributes, ACLs and capabilities (tests/xattr_guest.py)."""
    from tests.xattr_guest import build, supports_xattrs

    if not supports_xattrs(tmp_path):
        pytest.skip(f"{tmp_path} takes no user xattrs or ACLs")
    home = tmp_path / "guest"
    build(home)
    return home


@pytest.fixture
def vmlfs(tmp_path: Path) -> Vmlfs:
    store = tmp_path / "store"
    env = dict(os.environ, VMLFS_STORE=str(store), PYTHONUNBUFFERED="1")
    return Vmlfs(store, env)


def snapshot_copy(src: Path, dst: Path) -> Path:
    """A copy of the guest as it is now (cp -a keeps every attribute we compare)."""
    subprocess.run(["cp", "-a", "--", str(src), str(dst)], check=True)
    return dst


def tree_listing(root: Path) -> dict[bytes, tuple]:
    """Everything restore must reproduce: type, mode, owner, mtime ns, size, link target, content, hardlink groups.

    An explicit stack rather than os.walk (recursive before Python 3.12), so
    trees deeper than the recursion limit can be compared too.
    """
    out: dict[bytes, tuple] = {}
    inodes: dict[int, bytes] = {}
    root_b = os.fsencode(root)
    todo = [root_b]
    while todo:
        dirpath = todo.pop()
        for name in sorted(os.listdir(dirpath)):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root_b)
            st = os.lstat(path)
            kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
            target = os.readlink(path) if kind == "l" else None
            content = None
            group = None
            if kind == "d":
                todo.append(path)
            if kind == "f":
                with open(path, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest() if st.st_size < (64 << 20) else st.st_size
                if st.st_nlink > 1:
                    group = inodes.setdefault(st.st_ino, rel)
            mode = st.st_mode & 0o7777 if kind != "l" else None
            out[rel] = (kind, mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size if kind == "f" else None, target, content, group)
    return out


def one_file_guest(vmlfs: "Vmlfs", home: Path, entry: str, name: str, text: str) -> Path:
    """A guest home holding one file, added as ``entry`` and backed up once; returns the file."""
    home.mkdir()
    (home / name).write_text(text)
    vmlfs.run("entry", "add", entry, "--guest", str(home))
    vmlfs.run("-q", "backup", entry)
    return home / name


def as_mounted(listing: dict[bytes, tuple]) -> dict[bytes, tuple]:
    """A guest's :func:`tree_listing` as a mount shows it (and ``cp -a`` copies it out): directories
    without write bits (vmlfs/fs/archive.py)."""
    return {rel: (kind, mode & 0o7555 if kind == "d" else mode, *rest) for rel, (kind, mode, *rest) in listing.items()}


def deep_tree(home: Path, depth: int, name: bytes = b"d") -> bytes:
    """Directories ``name`` nested ``depth`` levels below ``home``, made relative to directory fds
    (so any depth works), with a file, a symlink and a hardlink pair at the bottom; returns the
    relative path of the deepest directory."""
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, 0o750, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        leaf = os.open(b"f", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd)
        os.write(leaf, b"at the bottom\n")
        os.close(leaf)
        os.link(b"f", b"h", src_dir_fd=fd, dst_dir_fd=fd)
        os.symlink(b"f", b"s", dir_fd=fd)
    finally:
        os.close(fd)
    return b"/".join([name] * depth)


def remove_tree(path: Path) -> None:
    """Delete a tree of any depth (shutil.rmtree recurses per level before Python 3.12)."""
    subprocess.run(["rm", "-rf", "--", str(path)], check=False)


MAXRSS = r"""
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(done.returncode)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(done.stdout + done.stderr)
"""


def peak_rss_kib(*argv: str, env: dict[str, str] | None = None) -> tuple[int, int, str]:
    """(exit code, peak RSS in KiB, output) of one vmlfs command, measured by a parent of its own
    (RUSAGE_CHILDREN of the test process would include every earlier child)."""
    out = subprocess.run([sys.executable, "-c", MAXRSS, sys.executable, "-m", "vmlfs", *argv],
                         capture_output=True, text=True, check=True, env=env).stdout
    code, rss, text = out.split("\n", 2)
    return int(code), int(rss), text
