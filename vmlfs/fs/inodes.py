"""The inode table: stable numbers for the life of a mount, and the kernel's lookup counts.

How numbers are chosen (docs/mount.md, "Inode numbers"):

* Numbers come from one counter that only grows; no number is ever reused
  while the mount lives, so ``generation`` is always 0.
* The root is :data:`ROOT_INODE` (1, what FUSE expects).
* Every *virtual* node (``/entries``, an entry directory, a backup directory,
  ``info.json``, ``latest``, a control file...) has a key such as
  ``("backup", entry, ts)``; the first time a key is seen it takes the next
  number and keeps it for the rest of the mount. There are a handful per
  backup, so this map stays small.
* The *archive* nodes of one backup (everything below ``<ts>/home``) get one
  contiguous **range**: when the backup's manifest is first opened, the table
  reserves ``max_id + 1`` numbers starting at ``base``; the node with manifest
  id ``i`` is ``base + i``. Members of a hardlink group use their group's
  ``link_group`` (the id of the first member) instead of their own id, so they
  share one inode number, as on the guest. The number of an archive node is
  therefore computed, not stored: a node the kernel forgot and looks up again
  gets the same number without the table having remembered it.

What the table holds (memory must not grow with what the kernel has looked
up: an ``ls -lR`` of a million-file backup makes the kernel hold a million
inodes):

* A *virtual* node object is kept while the kernel holds a reference to it
  (lookup count > 0, see :meth:`remember` and :meth:`forget`); the root is
  pinned. There are a handful per backup.
* An *archive* node is never counted or held for the kernel: its number says
  which backup and which tree row it is, so :meth:`get` builds it again from
  the row (:attr:`resolver`, one indexed query) whenever the kernel names a
  number it still holds. Only the :data:`RECENT` most recently used archive
  nodes are kept, so a ``stat`` after a ``lookup`` costs no query.

Thread-safe: model calls run in worker threads while ``forget`` arrives on the
event loop.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from typing import Callable, Hashable, Protocol

from vmlfs.errors import NotFound

ROOT_INODE = 1
RECENT = 4096  # archive nodes kept built: a directory page's worth of readdirplus, and then some


class HasInode(Protocol):
    ino: int


class InodeTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = ROOT_INODE + 1
        self._numbers: dict[Hashable, int] = {("root",): ROOT_INODE}
        self._ranges: dict[Hashable, int] = {}
        self._live: dict[int, HasInode] = {}
        self._counts: dict[int, int] = {}
        self._pinned: set[int] = set()
        self._bases: list[int] = []  # starts of the archive ranges, ascending (numbers only grow)
        self._range_of: dict[int, tuple[Hashable, int]] = {}  # base -> (key, size)
        self._recent: OrderedDict[int, HasInode] = OrderedDict()
        self.resolver: Callable[[Hashable, int], HasInode] | None = None
        """Builds the archive node numbered ``base + i`` of range ``key`` from tree row ``i`` (may block)."""

    def number(self, key: Hashable) -> int:
        """The inode number of a virtual node, allocated on first use."""
        with self._lock:
            ino = self._numbers.get(key)
            if ino is None:
                ino = self._numbers[key] = self._next
                self._next += 1
            return ino

    def range(self, key: Hashable, size: int) -> int:
        """The base of a block of ``size`` numbers reserved once for ``key`` (a backup's archive nodes)."""
        with self._lock:
            base = self._ranges.get(key)
            if base is None:
                base = self._ranges[key] = self._next
                self._next += size
                self._bases.append(base)
                self._range_of[base] = (key, size)
            return base

    def _archive(self, ino: int) -> tuple[Hashable, int] | None:
        """(range key, number within it) if ``ino`` is an archive node's. Caller holds the lock."""
        at = bisect.bisect_right(self._bases, ino) - 1
        if at < 0:
            return None
        base = self._bases[at]
        key, size = self._range_of[base]
        return (key, ino - base) if ino - base < size else None

    def pin(self, node: HasInode) -> None:
        """Keep ``node`` for the whole mount (the root, which the kernel never looks up or forgets)."""
        with self._lock:
            self._live[node.ino] = node
            self._pinned.add(node.ino)

    def remember(self, node: HasInode) -> HasInode:
        """Count one more kernel reference to ``node``; return the table's object for that inode.

        Call exactly once per reply that hands an inode to the kernel (lookup,
        each readdirplus entry accepted). An object already live for the same
        number is kept, so state cached on it survives. Archive nodes are not
        counted: they go to the recent ones, and are built again when needed.
        """
        with self._lock:
            return self._remember(node)

    def remember_all(self, nodes: list[HasInode]) -> None:
        """:meth:`remember` each of ``nodes`` (the entries of one readdirplus reply), taking the lock once."""
        with self._lock:
            for node in nodes:
                self._remember(node)

    def _remember(self, node: HasInode) -> HasInode:
        """:meth:`remember`; the caller holds the lock."""
        ino = node.ino
        if ino not in self._live and self._archive(ino) is not None:
            recent = self._recent
            held = recent.get(ino)
            if held is not None:
                recent.move_to_end(ino)
                return held
            recent[ino] = node
            if len(recent) > RECENT:
                recent.popitem(last=False)
            return node
        live = self._live.setdefault(ino, node)
        self._counts[ino] = self._counts.get(ino, 0) + 1
        return live

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped ``count`` references; at zero the node object is released."""
        with self._lock:
            left = self._counts.get(ino, 0) - count
            if left > 0:
                self._counts[ino] = left
                return
            self._counts.pop(ino, None)
            if ino not in self._pinned:
                self._live.pop(ino, None)

    def cached(self, ino: int) -> HasInode | None:
        """The node if it is held or recent (from memory, never blocks), else None."""
        with self._lock:
            node = self._live.get(ino) or self._recent.get(ino)
            if node is not None and ino in self._recent:
                self._recent.move_to_end(ino)
            return node

    def get(self, ino: int) -> HasInode:
        """The node numbered ``ino``: held, recent, or an archive node built again (may block)."""
        node = self.cached(ino)
        if node is not None:
            return node
        with self._lock:
            where = self._archive(ino)
        if where is None or self.resolver is None:
            raise NotFound(f"inode {ino} is not known (forgotten or never looked up)")
        return self.remember(self.resolver(*where))
