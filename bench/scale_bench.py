"""Scale benchmark: a home of N tiny files (1,000 directories of 0-199-byte files), vmlfs against restic and ratarmount.

The tree is generated once under --work and kept (1,000,000 files take
minutes to write); the stores are made afresh each run. Rows:

* full backup time against ``restic backup`` into a new repository, and the
  backup's peak RSS (ru_maxrss of that process alone, from wait4);
* no-change backup time against restic's second snapshot, and the bytes it
  adds to the store;
* on a fresh mount of the full backup: ``ls -lR`` against ratarmount's mount
  of the same layer (reported), the mount's peak RSS (VmHWM) after it, and
  ``find`` against ratarmount (one round each: at a million files one walk takes
  minutes). ratarmount's index of the layer is built once and kept.

    python bench/scale_bench.py --scale N [--work DIR] [--json]
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
from common import VMLFS, ensure_apt, tiny_tree, timed_rss, tree_bytes  # noqa: E402
from mount_bench import prepare, walk_rows  # noqa: E402
from rows import Row, emit, ratio_row, value_row  # noqa: E402


def run(work: Path, files: int) -> list[Row]:
    restic = ensure_apt("restic", "restic")
    t0 = time.perf_counter()
    tree = tiny_tree(work, files)
    print(f"tree of {files} files ready in {time.perf_counter() - t0:.0f} s", flush=True)
    out = work / f"scale-{files}"  # the ratarmount archive and index in it are kept; the stores are not
    for stale in ("store", "restic"):
        shutil.rmtree(out / stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    venv = dict(os.environ, VMLFS_STORE=str(out / "store"))
    renv = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(out / "restic"))
    subprocess.run(VMLFS + ["-q", "entry", "add", "e", "--guest", str(tree)], env=venv, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([restic, "init", "-q"], env=renv, check=True, stdout=subprocess.DEVNULL)
    restic_full, restic_rss = timed_rss([restic, "backup", "-q", str(tree)], env=renv)
    full, rss = timed_rss(VMLFS + ["-q", "backup", "e", "--kind", "full"], env=venv)
    before = tree_bytes(out / "store")
    time.sleep(1)  # backups are named by the second
    restic_again, _ = timed_rss([restic, "backup", "-q", str(tree)], env=renv)
    again, _ = timed_rss(VMLFS + ["-q", "backup", "e"], env=venv)
    added = tree_bytes(out / "store") - before
    print(f"  full backup peak RSS: vmlfs {rss:.0f} MiB, restic {restic_rss:.0f} MiB", flush=True)
    label = f"{files} files: "
    rows = [
        ratio_row(f"{label}full backup vs restic", full, restic_full, "s", "<= 0.7"),
        value_row(f"{label}full backup peak RSS", rss, "MiB", "<= 200"),
        ratio_row(f"{label}no-change backup vs restic", again, restic_again, "s", "<= 0.2"),
        value_row(f"{label}bytes a no-change backup adds to the store", added / 2**20, "MiB", "<= 1"),
    ]
    tools, _ = prepare(out, tree, written_this_run=True)  # the store whose full backup was just timed
    del tools["memfs"]  # holding a million entries' attributes in Python is not the floor this row is about
    return rows + walk_rows(tools, rounds=1, label=label, ls_target="")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vmlfs-bench")
    ap.add_argument("--scale", type=int, default=1_000_000, help="number of files")
    ap.add_argument("--json", action="store_true", help="rows as JSON lines (for bench/run.py)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    emit(run(args.work, args.scale), args.json)


if __name__ == "__main__":
    main()
