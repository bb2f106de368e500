"""The file primitives of a store, and what is built on nothing but them.

Each store (``backends/local_store.py``, ``backends/ssh_store.py``)
implements the primitives over paths relative to the store root; the names
and paths of the layout (docs/FORMAT.md) and the small bookkeeping that gc,
forget and the mount's leases need live here, so :mod:`vmlfs.engine.store`
keeps the layout's logic.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from vmlfs import names
from vmlfs.archive.seekable import SeekableReader
from vmlfs.engine.model import BackupMeta
from vmlfs.errors import VmlfsError

log = logging.getLogger(__name__)

STORE_FILE = "vmlfs-store.json"
LAYER, MANIFEST, META = "layer.tar.zst", "manifest.sqlite", "meta.json"
CVMFS_LAYER, CVMFS_TREE = "cvmfs-layer.tar.zst", "cvmfs-tree.sqlite"  # a backup's CernVM-FS cache part, in its work dir
BACKUP_FILES = ("env.txt", "history.txt", META)  # the small files read_backup_file serves
#: Format-2 object kinds and their file name endings (docs/FORMAT.md, "Store layout").
OBJECT_KINDS = {"layers": ".tar.zst", "trees": ".sqlite", "blobs": ""}
GARBAGE = "objects/garbage"
LEASES = "leases"


@dataclass
class BackupRecord:
    """A committed backup as listed: its metadata, or why it cannot be read."""

    entry: str
    timestamp: str
    meta: BackupMeta | None
    error: str | None = None
    protected: bool = False

    def anomaly(self, now: datetime | None = None) -> str | None:
        """Why this backup's times cannot be trusted (retention ignores it), if they cannot."""
        return self.meta.anomaly(now) if self.meta is not None else None


def entry_path(name: str, *parts: str) -> str:
    return "/".join(["entries", names.entry_name(name), *parts])


def backup_path(entry: str, ts: str, *parts: str) -> str:
    return entry_path(entry, "backups", names.timestamp(ts), *parts)


def record_path(entry: str, ts: str) -> str:
    """A format-2 backup: one file, created once."""
    return entry_path(entry, "backups", names.timestamp(ts) + ".json")


def object_path(kind: str, digest: str) -> str:
    return f"objects/{kind}/{names.digest(digest)}{OBJECT_KINDS[kind]}"


def this_host() -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in platform.node())[:64] or "host"


class StoreFiles(ABC):
    """Primitives each store implements, and protection markers, garbage and leases over them."""

    # primitives (paths relative to the store root, '/'-separated) ---------------------

    @abstractmethod
    def _read(self, rel: str) -> bytes:
        """The whole file; FileNotFoundError if it is missing."""

    @abstractmethod
    def _write(self, rel: str, data: bytes) -> None:
        """Replace a small file so readers see the old or the new content, never half."""

    def _write_volatile(self, rel: str, data: bytes) -> None:
        """:meth:`_write` a file that need not outlive a crash of the host writing it (a reader's
        lease, which dies with its process anyway); a store may then skip making it durable."""
        self._write(rel, data)

    @abstractmethod
    def _create(self, rel: str, data: bytes) -> None:
        """Create a small file durably and atomically, FileExistsError if the name is taken
        (the one conditional create that commits a backup)."""

    @abstractmethod
    def _put(self, local: Path, rel: str) -> None:
        """Store a local file under ``rel`` unless an object of that name exists (write once)."""

    @abstractmethod
    def _listdir(self, rel: str) -> list[str]:
        """Names in a directory; FileNotFoundError if it is missing."""

    @abstractmethod
    def _exists(self, rel: str) -> bool: ...

    @abstractmethod
    def _mkdir(self, rel: str) -> None:
        """Create one directory; FileExistsError if it exists."""

    @abstractmethod
    def _rename(self, rel: str, new_rel: str) -> None: ...

    @abstractmethod
    def _unlink(self, rel: str) -> None:
        """Remove a file; FileNotFoundError if it is missing."""

    @abstractmethod
    def _rmtree(self, rel: str) -> None: ...

    @abstractmethod
    def _size(self, rel: str) -> int: ...

    @abstractmethod
    def _digest(self, rel: str) -> tuple[int, str]:
        """(size, sha256 hex) of a file, streamed."""

    @abstractmethod
    def _tree_file(self, rel: str, digest: str, where: str) -> str:
        """A local path of the tree object ``rel``, its content checked against ``digest``."""

    def _cached_tree(self, digest: str) -> str | None:
        """The tree ``digest`` if it is on this machine already, checked when it was fetched (a
        remote store's cache; its name is its hash, so never stale); None: ask :meth:`_tree_file`."""
        return None

    @abstractmethod
    def _layer_reader(self, rel: str, digest: str, name: str) -> SeekableReader: ...

    @abstractmethod
    def _local_path(self, rel: str) -> Path:
        """The file as a path of this machine (upgrade works in place on a local store only)."""

    # protection ---------------------------------------------------------------------------

    def protected(self, entry: str) -> set[str]:
        try:
            return {n for n in self._listdir(entry_path(entry, "protected")) if names.TIMESTAMP.fullmatch(n)}
        except FileNotFoundError:
            return set()

    def set_protected(self, entry: str, ts: str, on: bool) -> None:
        """A marker file per protected backup: the record itself is never rewritten for it."""
        rel = entry_path(entry, "protected", names.timestamp(ts))
        if on:
            if not self._exists(entry_path(entry, "protected")):
                self._mkdir(entry_path(entry, "protected"))
            self._write(rel, b"")
        elif self._exists(rel):
            self._unlink(rel)

    def forget_record(self, entry: str, ts: str) -> None:
        """Remove one backup's record (its objects stay until gc finds no one needs them)."""
        self._unlink(record_path(entry, ts))
        self.set_protected(entry, ts, False)

    # objects, garbage and readers (gc) ----------------------------------------------------

    def object_names(self, kind: str) -> list[str]:
        ending = OBJECT_KINDS[kind]
        found = self._listdir(f"objects/{kind}")
        return sorted(n[: len(n) - len(ending)] for n in found
                      if n.endswith(ending) and names.DIGEST.fullmatch(n[: len(n) - len(ending)]))

    def leftover_uploads(self, kind: str) -> list[str]:
        """Temporary names in ``objects/<kind>/`` (an upload a crash interrupted); only gc, holding
        every entry's lock, may remove them: then no upload is running."""
        return sorted(n for n in self._listdir(f"objects/{kind}") if n.endswith(".tmp"))

    def remove_leftover(self, kind: str, name: str) -> None:
        self._unlink(f"objects/{kind}/{name}")

    def abort_interrupted_uploads(self, started_before: float) -> int:
        """Abort the uploads into ``objects/`` a killed process left unfinished, of those started
        before ``started_before`` (unix time); how many. Only gc calls it, holding every entry's
        lock. A store that uploads under temporary names has none (those are
        :meth:`leftover_uploads`); an object store's multipart uploads are."""
        return 0

    def _garbage_names(self) -> list[str]:
        try:
            return self._listdir(GARBAGE)
        except FileNotFoundError:
            return []

    def discard(self, kind: str, digest: str, now: float) -> None:
        """Step one of deleting an object: move it aside under a name that says when."""
        rel = object_path(kind, digest)
        self._rename(rel, f"{GARBAGE}/{int(now * 1000)}.{rel.replace('/', '+')}")

    def garbage(self) -> list[tuple[str, float]]:
        """(name, when it was moved aside) of every object waiting for its removal."""
        out = []
        for name in self._garbage_names():
            when, _, _rest = name.partition(".")
            if when.isdigit():
                out.append((name, int(when) / 1000))
        return sorted(out, key=lambda item: item[1])

    def garbage_size(self, name: str) -> int:
        return self._size(f"{GARBAGE}/{name}")

    def object_size(self, kind: str, digest: str) -> int:
        return self._size(object_path(kind, digest))

    def remove_garbage(self, name: str) -> None:
        self._unlink(f"{GARBAGE}/{name}")

    def leases(self) -> list[tuple[str, bytes]]:
        """(name, content) of every reader's lease (a mount registers one while it runs)."""
        out = []
        for name in self._listdir(LEASES):
            try:
                out.append((name, self._read(f"{LEASES}/{name}")))
            except FileNotFoundError:
                continue
        return out

    def take_lease(self) -> str | None:
        """Register this process as a reader until :meth:`drop_lease` (a mount does, for its
        life): gc then keeps what it moves aside while this reader may still hold it."""
        if self.format < 2:
            return None
        now = time.time()
        name = f"{this_host()}-{os.getpid()}-{int(now)}.json"
        try:
            self._write_volatile(f"{LEASES}/{name}", json.dumps({"host": this_host(), "pid": os.getpid(), "since": now}).encode())
        except (OSError, VmlfsError) as exc:  # a read-only store: nothing can be collected under us either
            log.warning("cannot register as a reader of the store: %s", exc)
            return None
        return name

    def drop_lease(self, name: str) -> None:
        try:
            self._unlink(f"{LEASES}/{name}")
        except FileNotFoundError:
            pass
