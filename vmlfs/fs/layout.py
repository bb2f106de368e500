"""The virtual layout of the mount as data, built by pure functions.

::

    /control/{provision,snapshot,status}        mount-wide control (default entry, provisioning)
    /entries/<entry>/<ts>/home/...              the backed-up home (archive nodes)
    /entries/<entry>/<ts>/{env.txt,history.txt} files of the backup directory
    /entries/<entry>/<ts>/info.json             kind, base, release, times, counts, sizes
    /entries/<entry>/latest -> <ts>             the newest backup
    /entries/<entry>/control/{snapshot,status,vm-snapshot}  per-entry control
    /entries/<entry>/vm/{<snapshot>.xml,tree}   the libvirt snapshots of the entry's domain (if it names one)

Each function returns the children of one kind of directory as
:class:`Slot` values (name, kind, argument) in name order; :mod:`vmlfs.fs.nodes`
turns a slot into a node. Nothing here touches a store, so the whole shape is
unit-tested without a mount.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from vmlfs.engine.model import BackupMeta

ENTRIES, CONTROL, LATEST, HOME, INFO = "entries", "control", "latest", "home", "info.json"
SNAPSHOT, STATUS, VM_SNAPSHOT, PROVISION, VM, TREE = "snapshot", "status", "vm-snapshot", "provision", "vm", "tree"
BACKUP_FILES = ("env.txt", "history.txt")  # copied from the backup directory when the backup has them


@dataclass(frozen=True, slots=True)
class Slot:
    """One child of a virtual directory: its name, what kind of node it is, and what that node needs."""

    name: str
    kind: str
    arg: str | None = None


def root_layout() -> list[Slot]:
    return [Slot(CONTROL, "control"), Slot(ENTRIES, "entries")]


def entries_layout(entry_names: list[str]) -> list[Slot]:
    return [Slot(name, "entry", name) for name in sorted(entry_names)]


def entry_layout(timestamps: list[str], has_domain: bool = False) -> list[Slot]:
    """Backups by timestamp, ``control``, ``latest`` (once a backup exists) and ``vm`` (if it names a domain)."""
    stamps = sorted(timestamps)
    slots = [Slot(ts, "backup", ts) for ts in stamps] + [Slot(CONTROL, "control")]
    if has_domain:
        slots.append(Slot(VM, "vm"))
    if stamps:
        slots.append(Slot(LATEST, "latest", stamps[-1]))
    return sorted(slots, key=lambda s: s.name)


def backup_layout(meta: BackupMeta) -> list[Slot]:
    slots = [Slot(name, "file", name) for name in BACKUP_FILES if name in meta.files]
    slots += [Slot(HOME, "home"), Slot(INFO, "info")]
    return sorted(slots, key=lambda s: s.name)


def control_layout(per_entry: bool = True) -> list[Slot]:
    """``snapshot`` and ``status``; per entry also ``vm-snapshot``, mount-wide ``provision``."""
    extra = Slot(VM_SNAPSHOT, "vm-snapshot") if per_entry else Slot(PROVISION, "provision")
    return sorted([Slot(SNAPSHOT, "snapshot"), Slot(STATUS, "status"), extra], key=lambda s: s.name)


def vm_layout(snapshot_names: list[str]) -> list[Slot]:
    """``<snapshot>.xml`` per snapshot whose name is a safe file name (others are left out), and ``tree``."""
    safe = [n for n in snapshot_names
            if n.isprintable() and "/" not in n and not n.startswith(".") and len(n.encode()) <= 250]
    return sorted([Slot(f"{n}.xml", "snapshot", n) for n in safe] + [Slot(TREE, "tree")], key=lambda s: s.name)


def latest(timestamps: list[str]) -> str | None:
    return max(timestamps) if timestamps else None


def iso_ns(text: str) -> int:
    """Nanoseconds since the epoch of an ISO-8601 time from meta.json (0 if malformed)."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return 0
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def backup_time_ns(meta: BackupMeta) -> int:
    """The time shown on a backup's virtual nodes: when it completed."""
    return iso_ns(meta.completed) or iso_ns(meta.started)


def info_json(meta: BackupMeta) -> bytes:
    """The content of ``info.json``: what a user wants to know about one backup, stable keys."""
    doc = {
        "timestamp": meta.timestamp,
        "kind": meta.kind,
        "base": meta.base,
        "release": meta.release,
        "guest": meta.guest,
        "started": meta.started,
        "completed": meta.completed,
        "duration_s": meta.duration_s,
        "counts": {k: meta.stats.get(k) for k in ("files", "dirs", "symlinks", "packed_files", "unchanged_files",
                                                  "deduplicated_files") if k in meta.stats},
        "sizes": {
            "files_bytes": meta.stats.get("bytes"),
            "packed_bytes": meta.stats.get("packed_bytes"),
            "layer_bytes": meta.layer.get("size"),
            "manifest_bytes": meta.manifest.get("size"),
        },
        "warnings": list(meta.warnings),
        "vm_snapshot": meta.vm_snapshot,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()
