"""SSH benchmark: vmlfs backing up a guest over SSH on loopback, against ``ssh host tar | zstd``, in one run.

Starts its own sshd on 127.0.0.1 (the test fixture's, with throw-away keys)
and points HOME at the client files that trust it, so vmlfs and OpenSSH's
``ssh`` use the same ~/.ssh/config. Measures:

- full backup of the bench tree from the SSH guest vs
  ``ssh host tar -cf - DIR | zstd -3 -T1 > out`` (target <= 1.5x);
- a no-change incremental of a 100,000-file tree over SSH (target <= 3 s).

    python bench/ssh_bench.py [--work DIR] [--files N] [--big N] [--small-files N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, VMLFS, dataset, tiny_tree  # noqa: E402
from rows import Row, emit, ratio_row, value_row  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.backends.conftest import start_sshd, stop_sshd  # noqa: E402


def _vmlfs(env: dict[str, str], *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([*VMLFS, "-q", *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run(work: Path, files: int = 20_000, big: int = 3, small_files: int = 100_000) -> list[Row]:
    tree = dataset(work, files, big)
    small = tiny_tree(work, small_files)
    shutil.rmtree(work / "sshd", ignore_errors=True)  # fresh throw-away keys every run
    proc, sshd = start_sshd(work / "sshd")
    env = dict(os.environ, HOME=str(sshd.home), VMLFS_STORE=str(work / "ssh-store"))
    env.pop("SSH_AUTH_SOCK", None)
    shutil.rmtree(work / "ssh-store", ignore_errors=True)
    try:
        out = work / "ssh-tar.tar.zst"
        ssh = ["ssh", "-F", str(sshd.home / ".ssh" / "config"), "-o", f"UserKnownHostsFile={sshd.known_hosts}", "vmlfs-test"]
        t0 = time.perf_counter()
        with open(out, "wb") as f:
            tar = subprocess.Popen([*ssh, "tar", "-cf", "-", "-C", str(tree.parent), tree.name], stdout=subprocess.PIPE, env=env)
            subprocess.run(["zstd", "-3", "-T1", "-q", "-c"], stdin=tar.stdout, stdout=f, check=True)
            tar.stdout.close()  # type: ignore[union-attr]
            if tar.wait():
                raise SystemExit("bench: ssh tar failed")
        tar_s = time.perf_counter() - t0
        _vmlfs(env, "entry", "add", "ssh-bench", "--guest", sshd.url(str(tree)))
        full_s = _vmlfs(env, "backup", "ssh-bench", "--kind", "full")
        _vmlfs(env, "entry", "add", "ssh-small", "--guest", sshd.url(str(small)))
        _vmlfs(env, "backup", "ssh-small", "--kind", "full")
        incr_s = _vmlfs(env, "backup", "ssh-small", "--kind", "incremental")
    finally:
        stop_sshd(proc)
    return [
        ratio_row("SSH: full backup vs ssh tar | zstd -3 -T1", full_s, tar_s, "s", "<= 1.5"),
        value_row(f"SSH: no-change backup of {small_files} tiny files", incr_s, "s", "<= 3"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vmlfs-bench")
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=3)
    ap.add_argument("--small-files", type=int, default=100_000)
    ap.add_argument("--json", action="store_true", help="rows as JSON lines (for bench/run.py)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    emit(run(args.work, args.files, args.big, args.small_files), args.json)


if __name__ == "__main__":
    main()
