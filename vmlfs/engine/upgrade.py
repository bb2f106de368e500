"""Convert a format-1 store to format 2 in place, so that a crash leaves one or the other.

1. With every entry locked, each backup's layer, env.txt and history.txt are
   hardlinked into ``objects/`` (no copy), its manifest rewritten to point at
   layer objects and stored as a checkpoint or a delta over the previous one
   (as a backup would store it), and its format-2 record written next to
   its format-1 directory. A format-1 reader sees none of this: it lists
   directories of ``backups/`` and nothing under ``objects/``.
2. The store header's version becomes 2.0: one atomic replace, the commit.
   A format-2 reader lists only records and ignores directories.
3. The format-1 directories are removed; a crash here leaves them to the
   next ``vmlfs store upgrade``, which finds the store in format 2 and only
   finishes this step.

The caller verifies the store afterwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vmlfs.archive.manifest import Manifest
from vmlfs.archive.trees import choose_stored, rewrite
from vmlfs.engine import faults
from vmlfs.engine.model import STORE_VERSION, BackupMeta
from vmlfs.engine.store import LAYER, StoreLayout
from vmlfs.errors import CorruptData

CONVERTED_VERSION = "2.0"  # a converted record keeps its format-1 layer: directories before files (docs/FORMAT.md)


@dataclass
class UpgradeReport:
    backups: int = 0
    trees_before: int = 0
    trees_after: int = 0
    removed_dirs: int = 0
    already: bool = False
    lines: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def upgrade_store(store: StoreLayout, *, dry_run: bool = False, say: Callable[[str], None] = lambda line: None) -> UpgradeReport:
    report = UpgradeReport(already=store.format >= 2)
    with ExitStack() as locks:
        for entry in store.entry_names():
            locks.enter_context(store.lock(entry))
        if store.format < 2:
            for entry in store.entry_names():
                _convert_entry(store, entry, report, dry_run, say)
            if dry_run:
                return report
            faults.step("upgrade-commit")
            store.set_version(STORE_VERSION)
            say(f"store is now in format {STORE_VERSION}")
        if not dry_run:
            for entry in store.entry_names():
                for ts in store.format1_dirs(entry):
                    faults.step("upgrade-cleanup")
                    store.remove_format1_dir(entry, ts)
                    report.removed_dirs += 1
    return report


def _convert_entry(store: StoreLayout, entry: str, report: UpgradeReport, dry_run: bool, say: Callable[[str], None]) -> None:
    records = store.backups(entry)
    damaged = [r for r in records if r.meta is None]
    if damaged:
        raise CorruptData(f"cannot upgrade: {entry}@{damaged[0].timestamp} is unreadable ({damaged[0].error})",
                          hint="remove or repair it first (see 'vmlfs verify')")
    metas = [r.meta for r in records if r.meta is not None]
    renames = {m.timestamp: m.layer["sha256"] for m in metas}
    if not dry_run:
        store.make_object_dirs()
    work = Path(tempfile.mkdtemp(prefix="vmlfs-upgrade-"))
    checkpoint: tuple[Manifest, str] | None = None
    try:
        for i, meta in enumerate(metas):
            report.backups += 1
            report.trees_before += meta.manifest["size"]
            if dry_run:
                say(f"would convert {entry}@{meta.timestamp} ({meta.kind}, tree {meta.manifest['size']} B)")
                continue
            ts = meta.timestamp
            store.put_object(store.format1_file(entry, ts, LAYER), "layers", meta.layer["sha256"])
            for name, record in meta.files.items():
                store.put_object(store.format1_file(entry, ts, name), "blobs", record["sha256"])
            full = work / f"{i}.sqlite"
            source = store.open_manifest(entry, ts)  # checked against the sha256 in meta.json
            source.close()
            rewrite(source.path, full, base=None, renames=renames)
            stored, is_delta = choose_stored(full, checkpoint[0] if checkpoint else None, checkpoint[1] if checkpoint else None)
            digest = _sha256(stored)
            size = stored.stat().st_size
            store.put_object(stored, "trees", digest)
            if is_delta:
                stored.unlink()
                full.unlink()
            else:
                if checkpoint is not None:
                    checkpoint[0].close()
                checkpoint = (Manifest(full, f"{entry}@{ts}"), digest)
            tree = {"sha256": digest, "size": size, "base": None if not is_delta else
                    {"sha256": checkpoint[1], "size": Path(checkpoint[0].path).stat().st_size}}  # type: ignore[index]
            new = dataclasses.replace(meta, version=CONVERTED_VERSION, layer={"size": meta.layer["size"],
                                      "sha256": meta.layer["sha256"]}, manifest=tree)
            store.replace_record(entry, BackupMeta.from_json(new.to_json(), f"{entry}@{ts}"))
            report.trees_after += size
            say(f"converted {entry}@{ts}: tree {meta.manifest['size']} B -> {size} B" + (" (delta)" if is_delta else ""))
            faults.step("upgrade-backup")
    finally:
        if checkpoint is not None:
            checkpoint[0].close()
        shutil.rmtree(work, ignore_errors=True)
