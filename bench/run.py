"""Run the vmlfs benchmarks and print ratios against the peers, all from one run.

    ./dev bench [--work DIR] [--files N] [--big N] [--scale N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import backup_bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/var/tmp/vmlfs-bench", help="scratch directory (dataset is kept between runs)")
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=3)
    ap.add_argument("--scale", type=int, default=0, help="history: also a no-change backup of N tiny files (1000000)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print("== backup: vmlfs vs tar+zstd, restic, rsync", flush=True)
    for line in backup_bench.run(work, args.files, args.big):
        print(line, flush=True)
    print("\n== mount: vmlfs vs ratarmount", flush=True)
    subprocess.run([sys.executable, str(HERE / "mount_bench.py"), "--work", str(work / "mount"), "--files", str(args.files)],
                   check=True)
    print("\n== SSH: vmlfs over SSH vs ssh tar | zstd", flush=True)
    subprocess.run([sys.executable, str(HERE / "ssh_bench.py"), "--work", str(work), "--files", str(args.files),
                    "--big", str(args.big)], check=True)
    print("\n== S3: vmlfs vs restic on a loopback SeaweedFS; the S3 mount vs the local-store mount", flush=True)
    subprocess.run([sys.executable, str(HERE / "s3_bench.py"), "--work", str(work), "--files", str(args.files),
                    "--big", str(args.big)], check=True)
    print("\n== history: 30 backups with 1 % change, deleting 20; vmlfs vs restic", flush=True)
    subprocess.run([sys.executable, str(HERE / "history_bench.py"), "--work", str(work), "--files", str(args.files),
                    "--big", str(args.big), "--scale", str(args.scale)], check=True)


if __name__ == "__main__":
    main()
