"""Helpers shared by the benchmarks: timing commands, installing peers, the dataset."""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tree import generate

ROOT = Path(__file__).resolve().parent.parent
VMLFS = [sys.executable, "-m", "vmlfs"]

# The CLI is timed as an installed vmlfs runs: ``pip install`` byte-compiles a package, an editable
# checkout under PYTHONDONTWRITEBYTECODE=1 never is, and compiling its modules at every run would add
# about 0.1 s to each command timed here (which no user of an installed vmlfs pays).
compileall.compile_dir(ROOT / "vmlfs", quiet=1)


def timed(cmd: list[str], **kwargs) -> float:
    """Wall time of one run of ``cmd`` (which must succeed)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - t0


def ensure_apt(binary: str, package: str) -> str:
    """Path of ``binary``, installing Debian's ``package`` first if it is missing."""
    found = shutil.which(binary)
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", package], check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return shutil.which(binary) or sys.exit(f"bench: {package} installed but {binary} not found")


def dataset(work: Path, files: int, big: int) -> Path:
    """The deterministic tree, generated once per work directory and parameters."""
    tree = work / f"tree-{files}-{big}"
    if not (tree / ".complete").exists():
        shutil.rmtree(tree, ignore_errors=True)
        generate(str(tree), files=files, big=big)
        (tree / ".complete").write_text("")
    subprocess.run(["cat"] + [str(p) for p in tree.rglob("*.root")], stdout=subprocess.DEVNULL, check=True)
    return tree


def tree_bytes(root: Path) -> int:
    """Apparent bytes of every file below ``root`` (a store or a repository)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def tiny_tree(work: Path, files: int) -> Path:
    """``files`` files of 0-199 bytes in 1,000 directories (a home full of sources: per-file cost dominates),
    generated once per work directory and kept (1,000,000 files take minutes to write)."""
    tree = work / f"small-{files}"
    if not (tree / ".complete").exists():
        shutil.rmtree(tree, ignore_errors=True)
        for i in range(files):
            d = tree / f"d{i % 1000:03d}"
            if i < 1000:
                d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:06d}").write_bytes(b"x" * (i % 200))
        (tree / ".complete").write_text("")
    return tree


def timed_rss(cmd: list[str], **kwargs) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one run of ``cmd``, the RSS from wait4 for that child alone.

    The child is exec'd straight from a fork of this small process, so its
    ru_maxrss is its own peak (a ru_maxrss survives exec: a large parent would inflate it)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, **kwargs)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024
