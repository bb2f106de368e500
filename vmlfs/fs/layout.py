"""The virtual layout of the mount as data, built by pure functions.

::

    /control/{provision,snapshot,status}        mount-wide control (default entry, provisioning)
    /entries/<entry>/<ts>/home/...              the backed-up home (archive nodes)
    /entries/<entry>/<ts>/{env.txt,history.txt} files of the backup directory
    /entries/<entry>/<ts>/info.json             kind, base, release, times, counts, sizes
    /entries/<entry>/<ts>/changes.txt           what changed since the backup before it
    /entries/<entry>/<ts>/cvmfs-cache.txt       the CernVM-FS cache part's summary (if it has one)
    /entries/<entry>/latest -> <ts>             the newest backup
    /entries/<entry>/versions/<path>/           each distinct version of <path> (fs/versions.py)
    /entries/<entry>/control/{snapshot,status,vm-snapshot}  per-entry control
    /entries/<entry>/vm/{<snapshot>.xml,tree}   the libvirt snapshots of the entry's domain (if it names one)

Each function returns the children of one kind of directory as
:class:`Slot` values (name, :class:`Kind`, argument) in name order;
``vmlfs.fs.tree.NODE_KINDS``, one table, turns a slot into a node. Nothing here
touches a store, so the whole shape is unit-tested without a mount.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from vmlfs.engine.cvmfs import summary_lines
from vmlfs.engine.model import BackupMeta

ENTRIES, CONTROL, LATEST, HOME, INFO, CHANGES = "entries", "control", "latest", "home", "info.json", "changes.txt"
CVMFS_CACHE = "cvmfs-cache.txt"
SNAPSHOT, STATUS, VM_SNAPSHOT, VM_REVERT, PROVISION = "snapshot", "status", "vm-snapshot", "vm-revert", "provision"
PRUNE, PRUNE_PREVIEW = "prune", "prune-preview"
VM, TREE, VERSIONS = "vm", "tree", "versions"
BACKUP_FILES = ("env.txt", "history.txt")  # copied from the backup directory when the backup has them


class Kind(Enum):
    """What a slot stands for: every kind of node a virtual directory can hold."""

    CONTROL_DIR = "control directory"
    ENTRIES_DIR = "entries directory"
    ENTRY_DIR = "entry directory"
    BACKUP_DIR = "backup directory"
    LATEST = "latest symlink"
    VM_DIR = "vm directory"
    VERSIONS_DIR = "versions directory"
    HOME = "backed-up home"
    INFO = "info.json"
    CHANGES = "changes.txt"
    CVMFS_CACHE = "cvmfs-cache.txt"
    BACKUP_FILE = "file of the backup directory"
    SNAPSHOT = "control/snapshot"
    STATUS = "control/status"
    VM_SNAPSHOT = "control/vm-snapshot"
    VM_REVERT = "control/vm-revert"
    PRUNE = "control/prune"
    PRUNE_PREVIEW = "control/prune-preview"
    PROVISION = "control/provision"
    SNAPSHOT_XML = "snapshot XML"
    SNAPSHOT_TREE = "snapshot tree"


@dataclass(frozen=True, slots=True)
class Slot:
    """One child of a virtual directory: its name, what kind of node it is, and what that node needs."""

    name: str
    kind: Kind
    arg: str | None = None


def root_layout() -> list[Slot]:
    return [Slot(CONTROL, Kind.CONTROL_DIR), Slot(ENTRIES, Kind.ENTRIES_DIR)]


def entries_layout(entry_names: list[str]) -> list[Slot]:
    return [Slot(name, Kind.ENTRY_DIR, name) for name in sorted(entry_names)]


def entry_layout(timestamps: list[str], has_domain: bool = False) -> list[Slot]:
    """Backups by timestamp, ``control``, ``latest`` and ``versions`` (once a backup exists) and ``vm`` (if it
    names a domain)."""
    stamps = sorted(timestamps)
    slots = [Slot(ts, Kind.BACKUP_DIR, ts) for ts in stamps] + [Slot(CONTROL, Kind.CONTROL_DIR)]
    if has_domain:
        slots.append(Slot(VM, Kind.VM_DIR))
    if stamps:
        slots += [Slot(LATEST, Kind.LATEST, stamps[-1]), Slot(VERSIONS, Kind.VERSIONS_DIR)]
    return sorted(slots, key=lambda s: s.name)


def backup_layout(meta: BackupMeta) -> list[Slot]:
    slots = [Slot(name, Kind.BACKUP_FILE, name) for name in BACKUP_FILES if name in meta.files]
    slots += [Slot(HOME, Kind.HOME), Slot(INFO, Kind.INFO), Slot(CHANGES, Kind.CHANGES)]
    if meta.cvmfs is not None:  # a summary, never the objects: a cache is 100,000 hash-named files
        slots.append(Slot(CVMFS_CACHE, Kind.CVMFS_CACHE))
    return sorted(slots, key=lambda s: s.name)


def control_layout(per_entry: bool = True) -> list[Slot]:
    """``snapshot`` and ``status``; per entry also ``vm-snapshot``, ``vm-revert``, ``prune`` and
    ``prune-preview``; mount-wide ``provision``."""
    extra = [Slot(VM_SNAPSHOT, Kind.VM_SNAPSHOT), Slot(VM_REVERT, Kind.VM_REVERT), Slot(PRUNE, Kind.PRUNE),
             Slot(PRUNE_PREVIEW, Kind.PRUNE_PREVIEW)] if per_entry else [Slot(PROVISION, Kind.PROVISION)]
    return sorted([Slot(SNAPSHOT, Kind.SNAPSHOT), Slot(STATUS, Kind.STATUS), *extra], key=lambda s: s.name)


def vm_layout(snapshot_names: list[str]) -> list[Slot]:
    """``<snapshot>.xml`` per snapshot whose name is a safe file name (others are left out), and ``tree``."""
    safe = [n for n in snapshot_names
            if n.isprintable() and "/" not in n and not n.startswith(".") and len(n.encode()) <= 250]
    return sorted([Slot(f"{n}.xml", Kind.SNAPSHOT_XML, n) for n in safe] + [Slot(TREE, Kind.SNAPSHOT_TREE)],
                  key=lambda s: s.name)


#: What file managers and other systems look up on any mount (trash, hidden-file lists, Finder and Explorer
#: metadata, volume info): never a virtual directory's child, so answered ENOENT without asking the store.
PROBE = re.compile(rb"\.Trash(-[0-9]+)?|\.hidden|\.DS_Store|\._.*|desktop\.ini|autorun\.inf|\.directory"
                   rb"|\.xdg-volume-info|\.localized|Thumbs\.db", re.IGNORECASE)


def is_probe(name: bytes) -> bool:
    return PROBE.fullmatch(name) is not None


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
    """The content of ``info.json``: what a user wants to know about one backup (:meth:`BackupMeta.summary`)."""
    return (json.dumps(meta.summary(), indent=2) + "\n").encode()


def cvmfs_cache_txt(meta: BackupMeta) -> bytes:
    """The content of ``cvmfs-cache.txt``: objects, bytes and repositories of the backup's cache part."""
    assert meta.cvmfs is not None  # backup_layout offers the file only then
    return "".join(line + "\n" for line in summary_lines(meta.cvmfs)).encode()
