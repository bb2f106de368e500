"""Fixtures shared by every test package: a vmlfs CLI runner and guest-tree helpers."""

from __future__ import annotations

import json
import os
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
    """Everything restore must reproduce: type, mode, owner, mtime ns, size, link target, content, hardlink groups."""
    out: dict[bytes, tuple] = {}
    inodes: dict[int, bytes] = {}
    root_b = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(root_b):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root_b)
            st = os.lstat(path)
            kind = "l" if os.path.islink(path) else "d" if os.path.isdir(path) else "f"
            target = os.readlink(path) if kind == "l" else None
            content = None
            group = None
            if kind == "f":
                with open(path, "rb") as f:
                    import hashlib

                    content = hashlib.sha256(f.read()).hexdigest() if st.st_size < (64 << 20) else st.st_size
                if st.st_nlink > 1:
                    group = inodes.setdefault(st.st_ino, rel)
            mode = st.st_mode & 0o7777 if kind != "l" else None
            out[rel] = (kind, mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size if kind == "f" else None, target, content, group)
    return out
