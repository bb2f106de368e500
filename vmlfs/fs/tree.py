"""The virtual directories of the mounted tree, from ``/`` down to each backup.

Each directory takes its children from :mod:`vmlfs.fs.layout` (pure functions
from store facts to :class:`~vmlfs.fs.layout.Slot` values) and builds the
node each slot stands for through one table, :data:`NODE_KINDS`, from
:class:`~vmlfs.fs.layout.Kind` to the class that serves it: a new kind of node
is one layout line and one table line. The files are in :mod:`vmlfs.fs.files`
and :mod:`vmlfs.fs.vm`, the archive nodes below ``<ts>/home`` in
:mod:`vmlfs.fs.archive` (reached through the context's ``home``).
"""

from __future__ import annotations

import stat
from abc import abstractmethod
from functools import partial
from typing import Any, Callable

from vmlfs.engine.model import BackupMeta
from vmlfs.errors import CorruptData, NotFound, VmlfsError
from vmlfs.fs import layout
from vmlfs.fs.context import MountContext
from vmlfs.fs.files import BackupFile, ChangesFile, InfoFile, LatestLink, SnapshotFile, StatusFile, VirtualNode
from vmlfs.fs.layout import Kind, Slot
from vmlfs.fs.prune_files import PruneFile, PrunePreviewFile
from vmlfs.fs.protocol import FOREVER, NEVER, SHORT, Attrs, Children, FsNode, Listing
from vmlfs.fs.versions import VersionsDir
from vmlfs.fs.vm import DomainSnapshots, ProvisionFile, VmFile, VmRevertFile, VmSnapshotFile


class VirtualDir(VirtualNode):
    """A directory whose children are computed from :mod:`vmlfs.fs.layout` slots."""

    mode = 0o555
    timeout = SHORT
    entry: str | None = None  # the entry the directory belongs to, if any

    def __init__(self, ctx: MountContext, key: tuple, mtime_ns: int) -> None:
        super().__init__(ctx, key)
        self.mtime_ns = mtime_ns

    @abstractmethod
    def slots(self) -> list[Slot]:
        """The directory's layout (from :mod:`vmlfs.fs.layout`)."""

    def child(self, slot: Slot) -> FsNode:
        """The node one slot stands for, built as the kind table says."""
        return NODE_KINDS[slot.kind](self, slot)

    def attrs(self) -> Attrs:
        return self.owned_attrs(stat.S_IFDIR | self.mode, 0, self.mtime_ns, self.timeout)

    def recent_slots(self) -> list[Slot] | None:
        """The layout from the listings made under SHORT seconds ago; None if there are none."""
        return None

    def lookup(self, name: bytes) -> FsNode:
        """The child ``name``: from the recent listing if it has it (a path walk looks up every
        directory on its way, and each lookup listed the store: on S3 a request or three), else
        from a fresh one, so a backup committed a moment ago is found at once."""
        if layout.is_probe(name):  # a file manager's probe: no store listing for it
            raise NotFound(f"no {name.decode(errors='replace')!r} here")
        slot = _named(self.recent_slots() or [], name) or _named(self.slots(), name)
        if slot is None:
            raise NotFound(f"no {name.decode(errors='replace')!r} here")
        return self.child(slot)

    def listing(self) -> Listing:
        return Children([(slot.name.encode(), self.child(slot)) for slot in self.slots()])


class RootDir(VirtualDir):
    def __init__(self, ctx: MountContext) -> None:
        super().__init__(ctx, ("root",), ctx.mounted_ns)

    def slots(self) -> list[Slot]:
        return layout.root_layout()


class EntriesDir(VirtualDir):
    """``/entries``: its time is the newest backup's of any entry, as a file manager's "modified" column
    would have it. An entry the mount has not listed yet is listed here once; after that, each
    listing of an entry (a lookup, a readdir, a job's end) keeps the time current."""

    def __init__(self, ctx: MountContext) -> None:
        super().__init__(ctx, ("entries",), ctx.mounted_ns)
        for entry in ctx.entry_names_recently() or ctx.entry_names():
            if ctx.listed(entry):
                continue
            try:
                ctx.timestamps(entry)
            except VmlfsError:  # a damaged entry costs only itself: its listing says so
                continue

    def slots(self) -> list[Slot]:
        return layout.entries_layout(self.ctx.entry_names())

    def recent_slots(self) -> list[Slot] | None:
        names = self.ctx.entry_names_recently()
        return None if names is None else layout.entries_layout(names)

    def attrs(self) -> Attrs:
        return self.owned_attrs(stat.S_IFDIR | self.mode, 0, self.ctx.newest_ns(), self.timeout)


class EntryDir(VirtualDir):
    """``/entries/<entry>``: its backups appear here as soon as they are committed."""

    def __init__(self, ctx: MountContext, entry: str) -> None:
        if ctx.listed_recently(entry) is None:
            ctx.timestamps(entry)  # the listing that sets the entry's time
        super().__init__(ctx, ("entry", entry), ctx.mounted_ns)
        self.entry = entry

    def slots(self) -> list[Slot]:
        return layout.entry_layout(self.ctx.timestamps(self.entry), has_domain=self.ctx.has_domain(self.entry))

    def recent_slots(self) -> list[Slot] | None:
        stamps = self.ctx.listed_recently(self.entry)
        if stamps is None:
            return None
        domain = self.ctx.has_domain_recently(self.entry)
        return layout.entry_layout(stamps, has_domain=self.ctx.has_domain(self.entry) if domain is None else domain)

    def attrs(self) -> Attrs:
        """The time of its newest backup as last listed: it changes when a backup appears or vanishes."""
        return self.owned_attrs(stat.S_IFDIR | self.mode, 0, self.ctx.newest_ns(self.entry), self.timeout)


class BackupDir(VirtualDir):
    """``/entries/<entry>/<ts>``: immutable once committed; a damaged one answers EIO when listed."""

    immutable = True
    timeout = FOREVER

    def __init__(self, ctx: MountContext, entry: str, ts: str) -> None:
        self.entry, self.ts = entry, ts  # with meta and mtime_ns: what its children are built from
        self.meta: BackupMeta | None = None
        try:
            self.meta = ctx.backup_meta(entry, ts)
        except CorruptData as exc:
            self.damage = exc.message
        super().__init__(ctx, ("backup", entry, ts), layout.backup_time_ns(self.meta) if self.meta else ctx.mounted_ns)

    def slots(self) -> list[Slot]:
        if self.meta is None:
            raise CorruptData(f"backup {self.entry}@{self.ts} is damaged: {self.damage}")
        return layout.backup_layout(self.meta)

    def file_size(self, name: str) -> int:
        """The size of ``env.txt`` or ``history.txt`` as the metadata records it (slots() refused a damaged backup)."""
        assert self.meta is not None
        return int(self.meta.files[name].get("size", 0))


class ControlDir(VirtualDir):
    """``/control`` (entry None: the default entry) or ``/entries/<entry>/control``."""

    def __init__(self, ctx: MountContext, entry: str | None) -> None:
        super().__init__(ctx, ("control", entry), ctx.mounted_ns)
        self.entry = entry

    def slots(self) -> list[Slot]:
        return layout.control_layout(per_entry=self.entry is not None)


class VmDir(VirtualDir):
    """``/entries/<entry>/vm``: one file per snapshot of the entry's domain, and ``tree``."""

    timeout = NEVER

    def __init__(self, ctx: MountContext, entry: str) -> None:
        super().__init__(ctx, ("vm", entry), ctx.mounted_ns)
        self.entry = entry
        self.snapshots = DomainSnapshots(ctx, entry)

    def slots(self) -> list[Slot]:
        return layout.vm_layout(self.snapshots.names())


NodeFactory = Callable[[Any, Slot], FsNode]
"""Builds the node of one slot from the directory listing it (which holds what the node needs)."""

NODE_KINDS: dict[Kind, NodeFactory] = {
    Kind.CONTROL_DIR: lambda parent, slot: ControlDir(parent.ctx, parent.entry),  # /control: entry None
    Kind.ENTRIES_DIR: lambda parent, slot: EntriesDir(parent.ctx),
    Kind.ENTRY_DIR: lambda parent, slot: EntryDir(parent.ctx, slot.name),
    Kind.BACKUP_DIR: lambda parent, slot: BackupDir(parent.ctx, parent.entry, slot.name),
    Kind.LATEST: lambda parent, slot: LatestLink(parent.ctx, parent.entry, slot.arg or ""),
    Kind.VM_DIR: lambda parent, slot: VmDir(parent.ctx, parent.entry),
    Kind.VERSIONS_DIR: lambda parent, slot: VersionsDir(parent.ctx, parent.entry),
    Kind.HOME: lambda parent, slot: parent.ctx.home(parent.entry, parent.ts),
    Kind.INFO: lambda parent, slot: InfoFile(parent.ctx, parent.entry, parent.ts, parent.meta, parent.mtime_ns),
    Kind.CHANGES: lambda parent, slot: ChangesFile(parent.ctx, parent.entry, parent.ts, parent.mtime_ns),
    Kind.CVMFS_CACHE: lambda parent, slot: InfoFile(parent.ctx, parent.entry, parent.ts, parent.meta, parent.mtime_ns,
                                                    slot.name, layout.cvmfs_cache_txt),
    Kind.BACKUP_FILE: lambda parent, slot: BackupFile(parent.ctx, parent.entry, parent.ts, slot.name,
                                                      parent.file_size(slot.name), parent.mtime_ns),
    Kind.SNAPSHOT: lambda parent, slot: SnapshotFile(parent.ctx, parent.entry),
    Kind.STATUS: lambda parent, slot: StatusFile(parent.ctx, parent.entry),
    Kind.VM_SNAPSHOT: lambda parent, slot: VmSnapshotFile(parent.ctx, parent.entry),
    Kind.VM_REVERT: lambda parent, slot: VmRevertFile(parent.ctx, parent.entry),
    Kind.PRUNE: lambda parent, slot: PruneFile(parent.ctx, parent.entry),
    Kind.PRUNE_PREVIEW: lambda parent, slot: PrunePreviewFile(parent.ctx, parent.entry),
    Kind.PROVISION: lambda parent, slot: ProvisionFile(parent.ctx),
    Kind.SNAPSHOT_XML: lambda parent, slot: VmFile(parent.ctx, parent.entry, slot.name,
                                                   partial(parent.snapshots.xml, slot.arg)),
    Kind.SNAPSHOT_TREE: lambda parent, slot: VmFile(parent.ctx, parent.entry, slot.name, parent.snapshots.tree),
}


def _named(slots: list[Slot], name: bytes) -> Slot | None:
    return next((slot for slot in slots if slot.name.encode() == name), None)
