"""Backup benchmark: vmlfs against tar + zstd and restic on the same tree, in one run.

Prints ratios (ours / theirs): full backup time, no-change incremental time,
stored size. Absolute times are printed too but only ratios taken in one run
mean anything (see ../shared/PERFORMANCE.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from common import VMLFS, dataset, ensure_apt, ratio, timed


def run(work: Path, files: int = 20_000, big: int = 3) -> list[str]:
    tree = dataset(work, files, big)
    restic = ensure_apt("restic", "restic")
    out = work / "backup"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tarball = out / "tree.tar.zst"
    tar_cmd = ["tar", "-I", "zstd -3 -T1", "-cf", str(tarball), "-C", str(tree.parent), tree.name]
    timed(tar_cmd)  # warm the page cache
    tar_s = timed(tar_cmd)

    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(out / "restic"))
    subprocess.run([restic, "init", "-q"], env=env, check=True, stdout=subprocess.DEVNULL)
    restic_full = timed([restic, "backup", "-q", str(tree)], env=env)
    restic_nochange = timed([restic, "backup", "-q", str(tree)], env=env)
    rsync_s = timed(["rsync", "-an", f"{tree}/", str(out / "rsync-target")])

    venv = dict(os.environ, VMLFS_STORE=str(out / "store"))
    subprocess.run(VMLFS + ["-q", "entry", "add", "bench", "--guest", str(tree)], env=venv, check=True)
    full_s = timed(VMLFS + ["-q", "backup", "bench"], env=venv)
    nochange_s = timed(VMLFS + ["-q", "backup", "bench"], env=venv)
    layers = sorted((out / "store" / "entries" / "bench" / "backups").glob("*/layer.tar.zst"))
    stored = layers[0].stat().st_size
    return [
        f"dataset: {files + big} files, {sum(p.stat().st_size for p in tree.rglob('*') if p.is_file()) / 2**20:.0f} MiB",
        ratio("full backup: vmlfs / tar+zstd -3 -T1 (s)", full_s, tar_s, "<= 1.5x issue 2, <= 1.0x long run"),
        ratio("full backup: vmlfs / restic (s)", full_s, restic_full, "<= 0.7x issue 2, <= 0.5x long run"),
        ratio("no-change backup: vmlfs / restic (s)", nochange_s, restic_nochange, "<= 0.3x issue 2, <= 0.2x long run"),
        ratio("no-change backup: vmlfs / rsync -an (s)", nochange_s, rsync_s, "<= 3x long run"),
        ratio("stored size: vmlfs layer / tar.zst (MiB)", stored / 2**20, tarball.stat().st_size / 2**20, "<= 1.05x"),
    ]
