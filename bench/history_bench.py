"""History benchmark: what 30 backups with 1 % change cost, and deleting 20 of them, vmlfs against restic.

    python bench/history_bench.py [--work DIR] [--files N] [--big N] [--steps 30] [--json]

1. A copy of the bench tree gets 30 backups; between two, 1 % of its small
   files are rewritten (same size, new content). Printed: the store size
   after all 30 against the first backup's store size plus the changed
   bytes (target <= 1.3x), and against restic's repository for the same 30
   snapshots.
2. ``restic forget --keep-last 10 --prune`` against ``vmlfs prune --keep-last 10``
   (which forgets the 20 oldest and runs gc): time and size after.

Sizes are apparent bytes of every file under the store or repository.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

from common import VMLFS, dataset, ensure_apt, timed, tree_bytes
from rows import Row, emit, ratio_row

PASSWORD = "bench"


def mib(n: float) -> str:
    return f"{n / 2**20:9.1f} MiB"


def change_one_percent(guest: Path, small: list[Path], rng: random.Random) -> int:
    """Rewrite 1 % of the small files with new bytes of the same size; return the bytes changed."""
    changed = 0
    for path in rng.sample(small, max(1, len(small) // 100)):
        size = path.stat().st_size
        path.write_bytes(rng.randbytes(size))
        changed += size
    return changed


def history(work: Path, files: int, big: int, steps: int) -> list[Row]:
    tree = dataset(work, files, big)
    restic = ensure_apt("restic", "restic")
    out = work / "history"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    guest = out / "guest"
    subprocess.run(["cp", "-a", str(tree.resolve()), str(guest)], check=True)
    small = sorted(p for p in guest.rglob("f*.*") if p.is_file())
    venv = dict(os.environ, VMLFS_STORE=str(out / "store"))
    renv = dict(os.environ, RESTIC_PASSWORD=PASSWORD, RESTIC_REPOSITORY=str(out / "restic"))
    subprocess.run(VMLFS + ["-q", "entry", "add", "bench", "--guest", str(guest)], env=venv, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([restic, "init", "-q"], env=renv, check=True, stdout=subprocess.DEVNULL)
    rng = random.Random(7)
    changed = 0
    first = 0
    vmlfs_s = restic_s = 0.0
    for step in range(steps):
        if step:
            changed += change_one_percent(guest, small, rng)
            time.sleep(1)  # backups are named by the second
        vmlfs_s += timed(VMLFS + ["-q", "backup", "bench"], env=venv)
        restic_s += timed([restic, "backup", "-q", str(guest)], env=renv)
        if step == 0:
            first = tree_bytes(out / "store")
    store, repo = tree_bytes(out / "store"), tree_bytes(out / "restic")
    trees = tree_bytes(out / "store" / "objects" / "trees")
    print(f"{steps} backups, {len(small) // 100} of {len(small)} small files rewritten between two"
          f" ({mib(changed).strip()} in all); store after the first {mib(first).strip()}, after {steps}"
          f" {mib(store).strip()} (trees {mib(trees).strip()})", flush=True)
    rows = [
        ratio_row(f"history: store after {steps} backups vs first + changed bytes", store / 2**20,
                  (first + changed) / 2**20, "MiB", "<= 1.3"),
        ratio_row(f"history: store after {steps} backups vs restic's repository", store / 2**20, repo / 2**20, "MiB"),
        ratio_row(f"history: time of all {steps} backups vs restic", vmlfs_s, restic_s, "s"),
    ]
    t0 = time.perf_counter()
    subprocess.run(VMLFS + ["-q", "prune", "bench", "--keep-last", "10", "--yes", "--grace", "0"], env=venv, check=True,
                   stdout=subprocess.DEVNULL)
    vmlfs_forget = time.perf_counter() - t0
    restic_forget = timed([restic, "forget", "-q", "--keep-last", "10", "--prune"], env=renv)
    subprocess.run(VMLFS + ["-q", "verify"], env=venv, check=True)
    return rows + [
        ratio_row("history: prune --keep-last 10 vs restic forget --prune", vmlfs_forget, restic_forget, "s"),
        ratio_row("history: store vs restic's repository after that", tree_bytes(out / "store") / 2**20,
                  tree_bytes(out / "restic") / 2**20, "MiB"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/var/tmp/vmlfs-bench")
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", action="store_true", help="rows as JSON lines (for bench/run.py)")
    args = ap.parse_args()
    emit(history(Path(args.work), args.files, args.big, args.steps), args.json)


if __name__ == "__main__":
    main()
