"""Backup benchmark: vmlfs against tar + zstd and restic on the same tree, in one run.

Prints ratios (ours / theirs): full backup time, no-change incremental time,
stored size. Each time is the best of ``REPEAT`` runs (the machine is shared:
the minimum is the least disturbed figure); absolute times are printed too but
only ratios taken in one run mean anything (see ../shared/PERFORMANCE.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from common import VMLFS, dataset, ensure_apt, ratio, timed

REPEAT = 3


def best(run: Callable[[int], float]) -> float:
    return min(run(i) for i in range(REPEAT))


def run(work: Path, files: int = 20_000, big: int = 3) -> list[str]:
    tree = dataset(work, files, big)
    restic = ensure_apt("restic", "restic")
    out = work / "backup"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tarball = out / "tree.tar.zst"
    tar_cmd = ["tar", "-I", "zstd -3 -T1", "-cf", str(tarball), "-C", str(tree.parent), tree.name]
    timed(tar_cmd)  # warm the page cache
    tar_s = best(lambda i: timed(tar_cmd))

    def restic_env(i: int) -> dict[str, str]:
        return dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(out / f"restic{i}"))

    def restic_full(i: int) -> float:
        subprocess.run([restic, "init", "-q"], env=restic_env(i), check=True, stdout=subprocess.DEVNULL)
        return timed([restic, "backup", "-q", str(tree)], env=restic_env(i))

    restic_full_s = best(restic_full)
    restic_nochange = best(lambda i: timed([restic, "backup", "-q", str(tree)], env=restic_env(0)))
    rsync_s = best(lambda i: timed(["rsync", "-an", f"{tree}/", str(out / "rsync-target")]))

    venv = dict(os.environ, VMLFS_STORE=str(out / "store"))
    subprocess.run(VMLFS + ["-q", "entry", "add", "bench", "--guest", str(tree)], env=venv, check=True)
    full_s = best(lambda i: timed(VMLFS + ["-q", "backup", "bench", "--kind", "full"], env=venv))
    nochange_s = best(lambda i: timed(VMLFS + ["-q", "backup", "bench"], env=venv))
    records = sorted((out / "store" / "entries" / "bench" / "backups").glob("*.json"))
    stored = json.loads(records[0].read_text())["layer"]["size"]  # the full backup's layer
    return [
        f"dataset: {files + big} files, {sum(p.stat().st_size for p in tree.rglob('*') if p.is_file()) / 2**20:.0f} MiB;"
        f" best of {REPEAT} runs each",
        ratio("full backup: vmlfs / tar+zstd -3 -T1 (s)", full_s, tar_s, "<= 1.5x issue 2, <= 1.0x long run"),
        ratio("full backup: vmlfs / restic (s)", full_s, restic_full_s, "<= 0.7x issue 2, <= 0.5x long run"),
        ratio("no-change backup: vmlfs / restic (s)", nochange_s, restic_nochange, "<= 0.3x issue 2, <= 0.2x long run"),
        ratio("no-change backup: vmlfs / rsync -an (s)", nochange_s, rsync_s, "<= 3x long run"),
        ratio("stored size: vmlfs layer / tar.zst (MiB)", stored / 2**20, tarball.stat().st_size / 2**20, "<= 1.05x"),
    ]
