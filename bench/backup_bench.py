"""Backup benchmark: vmlfs against tar + zstd, restic and ``rsync -an`` on the same tree, in one run.

Rows (ours / theirs): full backup time against ``tar -I 'zstd -3 -T1'`` and
``restic backup`` into a new repository; no-change backup time against
restic's second snapshot and ``rsync -an`` (which only compares metadata);
the full layer's size against the tar.zst. Each time is the best of
``REPEAT`` runs, and the tools take turns within each repeat, so a busy
moment on the shared machine does not fall on one tool only; only ratios
taken in one run mean anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from common import VMLFS, dataset, ensure_apt, timed
from rows import Row, ratio_row

REPEAT = 3


def run(work: Path, files: int = 20_000, big: int = 3) -> list[Row]:
    tree = dataset(work, files, big)
    restic = ensure_apt("restic", "restic")
    out = work / "backup"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tarball = out / "tree.tar.zst"
    tar_cmd = ["tar", "-I", "zstd -3 -T1", "-cf", str(tarball), "-C", str(tree.parent), tree.name]
    timed(tar_cmd)  # warm the page cache
    venv = dict(os.environ, VMLFS_STORE=str(out / "store"))
    subprocess.run(VMLFS + ["-q", "entry", "add", "bench", "--guest", str(tree)], env=venv, check=True,
                   stdout=subprocess.DEVNULL)

    def restic_env(i: int) -> dict[str, str]:
        return dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(out / f"restic{i}"))

    full: dict[str, list[float]] = {"vmlfs": [], "tar": [], "restic": []}
    for i in range(REPEAT):
        full["tar"].append(timed(tar_cmd))
        subprocess.run([restic, "init", "-q"], env=restic_env(i), check=True, stdout=subprocess.DEVNULL)
        full["restic"].append(timed([restic, "backup", "-q", str(tree)], env=restic_env(i)))
        full["vmlfs"].append(timed(VMLFS + ["-q", "backup", "bench", "--kind", "full"], env=venv))
    again: dict[str, list[float]] = {"vmlfs": [], "restic": [], "rsync": []}
    for i in range(REPEAT):
        again["restic"].append(timed([restic, "backup", "-q", str(tree)], env=restic_env(0)))
        again["rsync"].append(timed(["rsync", "-an", f"{tree}/", str(out / "rsync-target")]))
        again["vmlfs"].append(timed(VMLFS + ["-q", "backup", "bench"], env=venv))
    f = {k: min(v) for k, v in full.items()}
    a = {k: min(v) for k, v in again.items()}
    records = sorted((out / "store" / "entries" / "bench" / "backups").glob("*.json"))
    stored = json.loads(records[0].read_text())["layer"]["size"]  # the first full backup's layer
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) / 2**20
    print(f"dataset: {files + big} files, {size:.0f} MiB; best of {REPEAT} runs each, tools taking turns", flush=True)
    return [
        ratio_row("full backup vs tar -I 'zstd -3 -T1'", f["vmlfs"], f["tar"], "s", "<= 1.0"),
        ratio_row("full backup vs restic", f["vmlfs"], f["restic"], "s", "<= 0.5"),
        ratio_row("no-change backup vs restic", a["vmlfs"], a["restic"], "s", "<= 0.2"),
        ratio_row("no-change backup vs rsync -an", a["vmlfs"], a["rsync"], "s", "<= 3"),
        ratio_row("stored size vs tar.zst", stored / 2**20, tarball.stat().st_size / 2**20, "MiB", "<= 1.05"),
    ]
