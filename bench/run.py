"""Run the vmlfs benchmarks, all from one run, and check every row against its target.

    ./dev bench [--work DIR] [--files N] [--big N] [--scale N]

Each row reads ``name: ours / theirs unit = ratio× (target) ok|MISSED``, the
peer measured in the same run on the same data (absolute rows, such as the
mount's peak RSS, have no peer). A summary table of every row ends the run,
and the exit status is 1 when any target is missed, so the run is a check.

Parts, in order (each module's docstring says exactly what its rows measure):

* backup_bench: full and no-change backups of the bench tree (20,000 small
  files + 3 big ones) against ``tar -I 'zstd -3 -T1'``, restic, ``rsync -an``;
* mount_bench: ``ls -lR``, ``find``, cold ``cat``, sequential read and the
  mount's peak RSS against ratarmount's mount of the same layer, a trivial
  in-memory pyfuse3 file system (bench/memfs.py) and ``zstd -d``;
* ssh_bench: backups from a guest over SSH on loopback against ``ssh tar | zstd``;
* s3_bench: backups to a loopback SeaweedFS against restic, the S3 mount
  against the local-store mount;
* history_bench: 30 backups with 1 % change, then pruning 20, against restic;
* with ``--scale N`` (the issue's figures use 1000000), scale_bench: full and
  no-change backups of N tiny files against restic, and a walk of that backup's
  mount against ratarmount. The N-file tree is generated once under --work and kept.

Datasets are generated once under --work and kept between runs. Figures on a
shared machine are noisy: every part takes the best of a few runs, with the
tools taking turns, and only ratios from one run are compared.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import backup_bench  # noqa: E402
from rows import Row, parse  # noqa: E402


def part(script: str, *args: str) -> list[Row]:
    """Run one part as a subprocess; pass its output through, and collect (and print) its rows."""
    proc = subprocess.Popen([sys.executable, str(HERE / script), "--json", *args], stdout=subprocess.PIPE, text=True)
    rows = []
    assert proc.stdout is not None
    for line in proc.stdout:
        row = parse(line)
        if row is None:
            print(line, end="", flush=True)
        else:
            rows.append(row)
            print(row.format(), flush=True)
    if proc.wait():
        raise SystemExit(f"bench: {script} failed (exit {proc.returncode})")
    return rows


def summary(rows: list[Row]) -> int:
    """Print the table of every row; the number of missed targets."""
    width = max(len(r.name) for r in rows)
    print(f"\n== summary: {len(rows)} rows")
    print(f"{'row':<{width}}  {'ours':>10}  {'theirs':>10}  {'unit':<5}  {'ratio':>7}  {'target':<11}  verdict")
    for r in rows:
        theirs = "" if r.theirs is None else f"{r.theirs:10.3f}"
        ratio = "" if r.ratio is None else f"{r.ratio:6.2f}×"
        verdict = ("ok" if r.ok else "MISSED") if r.op else "-"
        print(f"{r.name:<{width}}  {r.ours:10.3f}  {theirs:>10}  {r.unit:<5}  {ratio:>7}  {r.target():<11}  {verdict}")
    missed = [r for r in rows if not r.ok]
    checked = sum(1 for r in rows if r.op)
    print(f"\n{checked - len(missed)} of {checked} targets met" + (":" if missed else "."))
    for r in missed:
        print(f"  MISSED {r.format()}")
    return len(missed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/var/tmp/vmlfs-bench", help="scratch directory (datasets are kept between runs)")
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=3)
    ap.add_argument("--scale", type=int, default=0, help="also the N-tiny-file rows (the issue's: 1000000)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sizes = ["--work", str(work), "--files", str(args.files), "--big", str(args.big)]
    print("== backup: vmlfs vs tar+zstd, restic, rsync", flush=True)
    rows = backup_bench.run(work, args.files, args.big)
    for row in rows:
        print(row.format(), flush=True)
    print("\n== mount: vmlfs vs ratarmount, a trivial pyfuse3 fs, zstd -d", flush=True)
    rows += part("mount_bench.py", "--work", str(work / "mount"), "--files", str(args.files))
    print("\n== SSH: vmlfs over SSH vs ssh tar | zstd", flush=True)
    rows += part("ssh_bench.py", *sizes)
    print("\n== S3: vmlfs vs restic on a loopback SeaweedFS; the S3 mount vs the local-store mount", flush=True)
    rows += part("s3_bench.py", *sizes)
    print("\n== history: 30 backups with 1 % change, deleting 20; vmlfs vs restic", flush=True)
    rows += part("history_bench.py", *sizes)
    if args.scale:
        print(f"\n== scale: {args.scale} tiny files; vmlfs vs restic and ratarmount", flush=True)
        rows += part("scale_bench.py", "--work", str(work), "--scale", str(args.scale))
    missed = summary(rows)
    print(f"(bench took {time.perf_counter() - t0:.0f} s)")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
