"""Helpers shared by the benchmarks: timing commands, installing peers, the dataset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tree import generate

ROOT = Path(__file__).resolve().parent.parent
VMLFS = [sys.executable, "-m", "vmlfs"]


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


def ratio(name: str, ours: float, theirs: float, target: str) -> str:
    return f"{name:<48} {ours:8.3f} / {theirs:8.3f} = {ours / theirs:6.2f}x   (target {target})"
