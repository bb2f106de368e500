"""History benchmark: what 30 backups with 1 % change cost, and deleting 20 of them, vmlfs against restic.

    python bench/history_bench.py [--work DIR] [--files N] [--big N] [--steps 30] [--scale 1000000]

1. A copy of the bench tree gets 30 backups; between two, 1 % of its small
   files are rewritten (same size, new content). Printed: the store size
   after all 30 against the first backup's store size plus the changed
   bytes (target <= 1.3x), and against restic's repository for the same 30
   snapshots.
2. ``restic forget --keep-last 10 --prune`` against ``vmlfs prune --keep-last 10``
   (which forgets the 20 oldest and runs gc): time and size after.
3. With ``--scale N``: a tree of N tiny files (generated once, kept under the
   work directory) gets a full and then a no-change backup; printed is what
   the no-change backup adds to the store (target <= 1 MiB for 1,000,000).

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

from common import VMLFS, dataset, ensure_apt, timed

PASSWORD = "bench"


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


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


def history(work: Path, files: int, big: int, steps: int) -> list[str]:
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
    subprocess.run(VMLFS + ["-q", "entry", "add", "bench", "--guest", str(guest)], env=venv, check=True)
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
    budget = first + changed
    lines = [
        f"{steps} backups, {len(small) // 100} of {len(small)} small files rewritten between two ({mib(changed).strip()} in all)",
        f"store after the first backup:            {mib(first)}",
        f"store after {steps}: vmlfs                    {mib(store)}   trees {mib(trees).strip()}",
        f"  / (first + changed bytes)               {store / budget:9.2f}x   (target <= 1.3x)",
        f"  / restic repository ({mib(repo).strip()})  {store / repo:9.2f}x",
        f"backup time, all {steps}: vmlfs {vmlfs_s:.1f} s, restic {restic_s:.1f} s",
    ]
    stamps = sorted(p.name[:-5] for p in (out / "store" / "entries" / "bench" / "backups").glob("*.json"))
    t0 = time.perf_counter()
    subprocess.run(VMLFS + ["-q", "prune", "bench", "--keep-last", "10", "--yes", "--grace", "0"], env=venv, check=True,
                   stdout=subprocess.DEVNULL)
    vmlfs_forget = time.perf_counter() - t0
    restic_forget = timed([restic, "forget", "-q", "--keep-last", "10", "--prune"], env=renv)
    lines += [
        f"delete the {len(stamps) - 10} oldest: vmlfs prune --keep-last 10 {vmlfs_forget:6.1f} s, size after {mib(tree_bytes(out / 'store')).strip()};"
        f" restic forget --keep-last 10 --prune {restic_forget:6.1f} s, size after {mib(tree_bytes(out / 'restic')).strip()}",
    ]
    subprocess.run(VMLFS + ["-q", "verify"], env=venv, check=True)
    return lines


def scale(work: Path, files: int) -> list[str]:
    """The no-change backup's cost on a tree of ``files`` tiny files."""
    tree = work / f"tiny-{files}"
    if not (tree / ".complete").exists():
        shutil.rmtree(tree, ignore_errors=True)
        for i in range(files):
            d = tree / f"d{i // 10000:03d}" / f"s{i // 100 % 100:02d}"
            if i % 100 == 0:
                d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:07d}").write_bytes(b"%d\n" % i)
        (tree / ".complete").write_text("")
    out = work / f"scale-{files}"
    shutil.rmtree(out, ignore_errors=True)
    venv = dict(os.environ, VMLFS_STORE=str(out / "store"))
    subprocess.run(VMLFS + ["-q", "entry", "add", "tiny", "--guest", str(tree)], env=venv, check=True)
    full_s = timed(VMLFS + ["-q", "backup", "tiny"], env=venv)
    before = tree_bytes(out / "store")
    time.sleep(1)
    nochange_s = timed(VMLFS + ["-q", "backup", "tiny"], env=venv)
    added = tree_bytes(out / "store") - before
    return [
        f"{files} files: full backup {full_s:.1f} s, store {mib(before).strip()};"
        f" no-change backup {nochange_s:.1f} s adds {added} B (target <= 1 MiB)",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/var/tmp/vmlfs-bench")
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--scale", type=int, default=0, help="also measure a no-change backup of this many tiny files")
    args = ap.parse_args()
    work = Path(args.work)
    for line in history(work, args.files, args.big, args.steps):
        print(line, flush=True)
    if args.scale:
        for line in scale(work, args.scale):
            print(line, flush=True)


if __name__ == "__main__":
    main()
