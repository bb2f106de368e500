"""The embedded default: a generated CernVM-like guest home and a local store, backed up twice.

``vmlfs demo`` runs the main job end to end on this machine with nothing to
configure, so a new user (and CI) sees what vmlfs does in seconds.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from vmlfs.app.backups import take_backup
from vmlfs.app.entries import add_entry
from vmlfs.app.session import Session
from vmlfs.engine.model import BackupMeta, EntryConfig
from vmlfs.errors import AlreadyExists

MARKER = ".vmlfs-demo"
ENTRY = "higgs-analysis"
RELEASE = "2021.05-1"


def _guest_home(home: Path, rng: random.Random) -> None:
    (home / "analysis" / "plots").mkdir(parents=True)
    (home / "analysis" / "data").mkdir()
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".bashrc").write_text("source /cvmfs/sft.cern.ch/lcg/views/LCG_105/x86_64-el9-gcc13-opt/setup.sh\n")
    (home / ".bash_history").write_text("root -l analysis/fit.C\nls /cvmfs/atlas.cern.ch\n")
    (home / "analysis" / "fit.C").write_text("void fit() {\n  // fit the diphoton mass spectrum\n}\n")
    (home / "analysis" / "README.md").write_text("H->gamma gamma cross-check, see fit.C\n")
    for i in range(20):
        (home / "analysis" / "data" / f"run{i:03d}.csv").write_text(
            "".join(f"{rng.gauss(125, 2):.3f},{rng.random():.5f}\n" for _ in range(2000))
        )
    (home / "analysis" / "plots" / "mass.png").write_bytes(rng.randbytes(40_000))
    (home / ".ssh" / "config").write_text("Host lxplus\n  User physicist\n")
    os.chmod(home / ".ssh" / "config", 0o600)
    os.symlink("analysis/plots/mass.png", home / "latest-plot.png")


def run_demo(directory: str | os.PathLike[str]) -> tuple[Path, list[BackupMeta]]:
    """(Re)create ``directory`` with a demo guest and store and take a full and an incremental backup,
    through the same use cases as ``vmlfs entry add`` and ``vmlfs backup``; returns the store's path."""
    root = Path(directory).absolute()
    if root.exists():
        if not (root / MARKER).exists():
            raise AlreadyExists(f"{root} exists and is not a vmlfs demo directory", hint="choose another --dir")
        shutil.rmtree(root)
    home = root / "guest-home"
    home.mkdir(parents=True)
    (root / MARKER).write_text("created by 'vmlfs demo'; safe to delete\n")
    rng = random.Random(2012)
    _guest_home(home, rng)
    env = root / "guest-env.txt"
    env.write_text("HOME=/home/physicist\nCMTCONFIG=x86_64-el9-gcc13-opt\nROOTSYS=/cvmfs/sft.cern.ch/lcg/app/releases/ROOT\n")
    session = Session(str(root / "store"))
    try:
        add_entry(session, EntryConfig(ENTRY, str(home), exclude=["*.tmp"], release=RELEASE, env_file=str(env)))
        first = take_backup(session, ENTRY)
        _second_day(home)
        second = take_backup(session, ENTRY)
    finally:
        session.close()
    return root / "store", [first, second]


def _second_day(home: Path) -> None:
    """What the physicist changed before the second backup."""
    (home / "analysis" / "fit.C").write_text("void fit() {\n  // refit with the new background model\n}\n")
    (home / "analysis" / "data" / "run007.csv").unlink()
    (home / "analysis" / "scratch.tmp").write_text("excluded by the entry's rules\n")
    (home / "analysis" / "notes.txt").write_text("background model changed on the second day\n")
