"""Take one backup: scan the guest, diff against the base manifest, pack, commit.

The new manifest lists every path of the guest at backup time. A file whose
size, mtime and ctime match the base, with a ctime settled before the base
began (:func:`vmlfs.engine.plan.settled_before`), keeps pointing at the layer
that already holds its bytes; anything else is read, hashed, and stored in the
new layer unless a file with the same sha256 is already stored (rename, copy).
Paths absent from the scan are absent from the manifest: that is how deletions
work.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from vmlfs.archive.layer import LayerWriter, Member
from vmlfs.archive.manifest import DIR, FILE, ID, NAME, XATTRS, Manifest, Node
from vmlfs.archive.manifest_writer import ManifestWriter
from vmlfs.archive.trees import choose_stored, materialize
from vmlfs.engine.cvmfs import CvmfsSource, capture, known_objects
from vmlfs.engine.guest import FileChanged, Guest, ScanEntry, ScanReport, UnreadXattrs
from vmlfs.engine.model import BackupMeta, EntryConfig
from vmlfs.engine.pack import Packer, Stats, hardlink
from vmlfs.engine.plan import (
    NOTHING_SETTLED,
    base_xattrs_hold,
    choose_base,
    content_unchanged,
    metadata_unchanged,
    next_timestamp,
    settled_before,
    untouched,
    xattrs_read_since,
)
from vmlfs.engine.rules import Rules
from vmlfs.engine.scan_check import checked_late_xattrs, checked_scan
from vmlfs.engine.throughput import WrittenBack, rare_collections
from vmlfs.engine.store import LAYER, MANIFEST, META, StoreLayout
from vmlfs.errors import CorruptData, GuestError, InvalidRequest, write_failed
from vmlfs.release.detect import check_release

log = logging.getLogger(__name__)

BATCH_FILES = 4096  # changed files handed to the guest per bulk read
BATCH_BYTES = 256 << 20


class Progress(Protocol):
    def scanned(self, count: int) -> None: ...
    def packed(self, files: int, nbytes: int) -> None: ...


class NoProgress:
    def scanned(self, count: int) -> None:
        pass

    def packed(self, files: int, nbytes: int) -> None:
        pass


@dataclass(slots=True)
class _Pending:
    """A file waiting to be read, with the base row it replaces (if any); once packed, whether
    this layer got a member for it, or that it was left out (changed while read)."""

    node: Node
    entry: ScanEntry
    base: Node | None
    in_layer: bool = False
    dropped: bool = False


@dataclass(slots=True)
class _Follower:
    """A hardlink whose group's first file is read in this backup: it takes that file's outcome
    at its own place in the layer (members stay in scan order, whichever batch read the file)."""

    node: Node
    entry: ScanEntry
    base: Node | None
    leader: _Pending


@dataclass
class _OpenDir:
    """A directory whose children are being scanned, with its base children still unseen."""

    path: bytes
    id: int
    base_children: dict[bytes, tuple]  # name -> raw base row (see Manifest.children_rows)


class _Builder:
    """Streams one backup's manifest and layer; holds only the current batch in memory.

    With a base, a path keeps the id of its base row when its type is the
    same; the row is rewritten only if something in it changed, and base rows
    not seen by the scan are deleted (see ManifestWriter).
    """

    def __init__(self, ts: str, guest: Guest, base: Manifest | None, layer: LayerWriter,
                 manifest: ManifestWriter, progress: Progress, checksum: bool, settled: int) -> None:
        self.ts, self.guest, self.base, self.layer, self.manifest = ts, guest, base, layer, manifest
        self.progress, self.checksum = progress, checksum
        self.settled = settled  # base rows of paths whose ctime is earlier are trusted (plan.settled_before)
        self.stats = Stats()
        self.warnings: list[str] = []
        self.queue: list[_Pending | _Follower | Member] = []
        self.queued_bytes = 0
        self.packed_files = self.packed_bytes = 0  # since progress was last told
        self.packer = Packer(ts, guest, base, layer, self.stats)
        self.leaders: dict[tuple[int, int], _Pending | Node] = {}  # (dev, ino) -> first file: read, or unchanged
        self.group_sizes: dict[int, int] = {}

    def run(self, rules: Rules, xattrs_since: int | None) -> None:
        """Scan and diff; ``xattrs_since`` as :func:`vmlfs.engine.plan.xattrs_read_since` gives it."""
        report = ScanReport()
        stack: list[_OpenDir] = []
        stats = self.stats
        checksum, settled = self.checksum, self.settled
        count = 0
        # The fast path's counts, added to the stats at the end (the slow path adds to them directly).
        files = nbytes = dirs = symlinks = 0
        for entry in checked_scan(self.guest.scan(rules, report, xattrs_since), self.guest.description):
            count += 1
            if not count % 1000:
                self.progress.scanned(count)
            path = entry.path
            if path == b"":
                parent_id, name = 0, b""
                base_node = self.base.root() if self.base else None
                if entry.xattrs:  # a scan reads the root's always (checked_scan)
                    stats.xattr_files += 1
            else:
                slash = path.rfind(b"/")
                parent_path, name = (path[:slash], path[slash + 1:]) if slash >= 0 else (b"", path)
                top = stack[-1]
                while top.path != parent_path:
                    self._close_dir(stack.pop())
                    top = stack[-1]
                parent_id = top.id
                base_row = top.base_children.pop(name, None)
                if type(entry.xattrs) is UnreadXattrs:
                    entry.xattrs = (base_row[XATTRS] if base_row is not None and base_xattrs_hold(entry, base_row)
                                    else self._late_xattrs(entry, entry.xattrs))
                if entry.xattrs:
                    stats.xattr_files += 1
                if base_row is not None and untouched(entry, base_row, checksum, settled):
                    # The fast path: the row copied from the base stays as it is (no Node, no write).
                    kind = entry.type
                    if kind == FILE:
                        files += 1
                        nbytes += entry.size
                    elif kind == DIR:
                        dirs += 1
                        stack.append(_OpenDir(path, base_row[ID], self._base_children(base_row[ID])))
                    else:
                        symlinks += 1
                    continue
                base_node = Node(*base_row) if base_row is not None else None
            if base_node is not None and base_node.type != entry.type:
                self.manifest.delete_subtree(base_node.id)
                base_node = None
            node = Node(  # positional (id ... target, link_group, nlink, sha256, layer, data_offset, xattrs): 2.5x faster
                base_node.id if base_node is not None else self.manifest.allocate_id(), parent_id, name, entry.type,
                entry.mode, entry.uid, entry.gid, entry.uname, entry.gname, entry.size, entry.mtime_ns, entry.ctime_ns,
                entry.target, None, 1, None, None, None, entry.xattrs,
            )
            if entry.type == FILE:
                self._file(node, entry, base_node)
                continue
            if entry.type == DIR:
                self.stats.dirs += 1
                stack.append(_OpenDir(entry.path, node.id, self._base_children(base_node.id) if base_node else {}))
            else:
                self.stats.symlinks += 1
            if entry.path and not metadata_unchanged(entry, base_node.as_row() if base_node is not None else None):
                self._put(entry)  # a directory's or symlink's scan entry says all its header says
            self._emit(node, base_node)
        while stack:
            self._close_dir(stack.pop())
        stats.files += files
        stats.unchanged_files += files
        stats.bytes += nbytes
        stats.dirs += dirs
        stats.symlinks += symlinks
        self._flush()
        self.manifest.set_nlink(self.group_sizes)
        self.progress.scanned(count)
        self.stats.skipped_special = report.skipped_special
        self.stats.unreadable = report.unreadable
        self.warnings[:0] = report.warnings

    def _late_xattrs(self, entry: ScanEntry, unread: UnreadXattrs) -> bytes | None:
        """The attributes of a path the scan left unread, whose base row's do not hold: read now."""
        return checked_late_xattrs(unread.read(entry.path), entry.path, self.guest.description)

    def _base_children(self, base_id: int) -> dict[bytes, tuple]:
        assert self.base is not None
        return {row[NAME]: row for row in self.base.children_rows(base_id)}

    def _close_dir(self, done: _OpenDir) -> None:
        """Base children the scan did not see were deleted (or excluded) on the guest."""
        for vanished in done.base_children.values():
            self.manifest.delete_subtree(vanished[ID])

    def _emit(self, node: Node, base_node: Node | None) -> None:
        if base_node is None:
            self.manifest.add(node)
        elif node.as_row() != base_node.as_row():
            self.manifest.update(node)

    def _drop(self, node: Node, base_node: Node | None) -> None:
        """A path left out after all (changed while read): its base row must not survive."""
        if base_node is not None:
            self.manifest.delete_subtree(base_node.id)

    def _file(self, node: Node, entry: ScanEntry, base_node: Node | None) -> None:
        self.stats.files += 1
        self.stats.bytes += entry.size
        if entry.nlink > 1:
            key = (entry.dev, entry.ino)
            leader = self.leaders.get(key)
            if leader is not None:
                lead_id = leader.node.id if isinstance(leader, _Pending) else leader.id
                node.link_group = lead_id
                self.group_sizes[lead_id] += 1
                if isinstance(leader, _Pending):
                    self._put(_Follower(node, entry, base_node, leader))
                else:
                    node.sha256, node.layer, node.data_offset = leader.sha256, leader.layer, leader.data_offset
                    node.nlink = leader.nlink
                    self._emit(node, base_node)
                return
            node.link_group = node.id
            node.nlink = base_node.nlink if base_node is not None else 1  # final count set by set_nlink
            self.group_sizes[node.id] = 1
        if base_node is not None and not self.checksum and content_unchanged(entry, base_node.as_row(), self.settled):
            node.sha256, node.layer, node.data_offset = base_node.sha256, base_node.layer, base_node.data_offset
            self.stats.unchanged_files += 1
            self._emit(node, base_node)
            if entry.nlink > 1:
                self.leaders[(entry.dev, entry.ino)] = node
            return
        pending = _Pending(node, entry, base_node)
        if entry.nlink > 1:
            self.leaders[(entry.dev, entry.ino)] = pending
        self.queued_bytes += entry.size
        self._put(pending)

    def _put(self, item: _Pending | _Follower | Member) -> None:
        """Queue a layer member behind the files still waiting to be read.

        The layer gets its members in scan order (depth first, a directory
        before its contents and its contents before anything else), because
        that is the order in which ``tar -x`` sets a directory's times and
        mode right: it sets them when the first member outside the directory
        comes (docs/FORMAT.md, "Member order").
        """
        if not self.queue and type(item) is not _Pending:
            self._add(item)
            return
        self.queue.append(item)
        if len(self.queue) >= BATCH_FILES or self.queued_bytes >= BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        queue, self.queue, self.queued_bytes = self.queue, [], 0
        reads = self.guest.read_many(item.entry for item in queue if type(item) is _Pending)
        for item in queue:
            if type(item) is not _Pending:
                self._add(item)
                continue
            entry, chunks = next(reads)
            if entry is not item.entry:
                raise GuestError(f"{self.guest.description} returned files out of order")
            self._read(item, chunks)
        next(reads, None)  # let the guest finish its bulk read
        self.progress.packed(self.packed_files, self.packed_bytes)
        self.packed_files = self.packed_bytes = 0

    def _add(self, item: _Follower | Member) -> None:
        if type(item) is _Follower:
            self._follow(item)
        else:
            self.layer.add(item)

    def _read(self, item: _Pending, chunks: Iterator[bytes]) -> None:
        entry = item.entry
        try:
            item.in_layer = self.packer.pack(item.node, entry, chunks)
        except FileChanged as exc:
            self.stats.changed_while_read += 1
            self.warnings.append(f"{exc}; left out of this backup")
            log.warning("%s; left out of this backup", exc)
            if self.leaders.get((entry.dev, entry.ino)) is item:
                del self.leaders[(entry.dev, entry.ino)]
            item.dropped = True
            self._drop(item.node, item.base)
            return
        self._emit(item.node, item.base)
        self.packed_files += 1
        self.packed_bytes += entry.size

    def _follow(self, item: _Follower) -> None:
        lead = item.leader
        if lead.dropped:
            self._drop(item.node, item.base)
            return
        node = item.node
        node.sha256, node.layer, node.data_offset = lead.node.sha256, lead.node.layer, lead.node.data_offset
        node.nlink = lead.node.nlink
        if lead.in_layer:
            self.layer.add(hardlink(item.entry, lead.entry.path))
        self._emit(node, item.base)


def _file_record(path: Path) -> dict[str, object]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


def _write(path: Path, data: bytes) -> dict[str, object]:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise write_failed(exc, f"cannot write {path.name}") from exc
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@dataclass(frozen=True)
class BackupOptions:
    """What a caller may choose about one backup; everything else follows from the entry and its history."""

    kind: str | None = None
    """full, incremental or differential; None: full the first time, incremental after."""
    checksum: bool = False
    """Re-read and hash every file instead of trusting size and times."""
    threads: int = 2
    """Compression threads of the layer writer."""
    now: datetime | None = None
    """The backup's time (tests); None: the clock."""


@dataclass
class _Plan:
    """One backup being built: decided before the scan, read by :func:`_build`."""

    cfg: EntryConfig
    guest: Guest
    ts: str
    kind: str
    base_ts: str | None
    base: Manifest | None
    work: Path
    options: BackupOptions
    base_meta: BackupMeta | None = None
    cvmfs: CvmfsSource | None = None
    cvmfs_known: dict = field(default_factory=dict)
    """Every cache object a kept backup stored (read under this entry's lock: no gc runs meanwhile)."""
    unchanged: bool = False
    """Once the tree is built: whether the scan changed no row of the base's tree."""
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    t0: float = field(default_factory=time.monotonic)


def run_backup(store: StoreLayout, cfg: EntryConfig, guest: Guest, options: BackupOptions = BackupOptions(), *,
               progress: Progress | None = None,
               around: Callable[[str], AbstractContextManager[str | None]] | None = None,
               cvmfs: CvmfsSource | None = None) -> BackupMeta:
    """Take one backup of ``cfg`` from ``guest`` into ``store`` and commit it atomically;
    with ``cvmfs``, the guest's CernVM-FS cache too (:mod:`vmlfs.engine.cvmfs`).

    ``around(ts)``, if given, is entered once the backup's timestamp is chosen
    and held from the scan through the commit; its value is recorded as
    ``meta.vm_snapshot``. This is how a hypervisor snapshot and a paused or
    frozen domain bracket the backup without the engine knowing of libvirt;
    if the backup fails, the context manager sees the exception and can undo.
    """
    progress = progress or NoProgress()
    store.require_format(2, "a backup")
    with store.lock(cfg.name):
        store.clean_tmp(cfg.name)
        records = store.backups(cfg.name)
        history = [r.meta for r in records if r.meta is not None]
        kind, base_ts, notes = choose_base(history, options.kind)
        for note in notes:
            log.warning("%s: %s", cfg.name, note)
        ts = next_timestamp([r.timestamp for r in records], options.now)
        plan = _Plan(cfg, guest, ts, kind, base_ts, None, store.new_work_dir(cfg.name, ts), options, cvmfs=cvmfs,
                     cvmfs_known=known_objects(store) if cvmfs is not None else {})
        try:
            if base_ts is not None:
                # The base's record was just read with the others: not read again (on a remote
                # store, each read is a round trip).
                plan.base_meta = next(r.meta for r in records if r.timestamp == base_ts)
                try:
                    plan.base = store.open_tree(plan.base_meta.manifest, f"{cfg.name}@{base_ts}")
                except CorruptData as exc:
                    raise CorruptData(f"the base backup is damaged: {exc}", hint="take a full backup with --kind full") from None
            with around(ts) if around is not None else nullcontext() as vm_snapshot:
                meta = _build(plan, progress)
                meta.warnings[:0] = notes
                meta.vm_snapshot = vm_snapshot
                _write(plan.work / META, meta.to_json())
                store.commit(cfg.name, plan.work, ts)
        finally:
            shutil.rmtree(plan.work, ignore_errors=True)
            if plan.base is not None:
                plan.base.close()
    return meta


def _build(plan: _Plan, progress: Progress) -> BackupMeta:
    """Write the layer, the manifest and the small files of ``plan`` into its work directory."""
    work, base = plan.work, plan.base
    if base is not None:
        materialize(base, work / MANIFEST)
    manifest = ManifestWriter(work / MANIFEST, patch=base is not None)
    try:
        # Unbuffered: frames are written whole, and a failing write must fail there, not
        # again when the file is closed on the way out (which would hide the first error).
        raw = open(work / LAYER, "wb", buffering=0)
    except OSError as exc:
        manifest.abort()
        raise write_failed(exc, "cannot create layer") from exc
    with raw:
        layer = LayerWriter(WrittenBack(raw), threads=plan.options.threads)
        settled = settled_before(plan.base_meta.started) if plan.base_meta is not None else NOTHING_SETTLED
        builder = _Builder(plan.ts, plan.guest, base, layer, manifest, progress, plan.options.checksum, settled)
        try:
            since = xattrs_read_since(settled, base is not None and base.records_xattrs, plan.options.checksum)
            with rare_collections():
                builder.run(Rules(tuple(plan.cfg.include), tuple(plan.cfg.exclude)), since)
            layer.close()
            # Until now the new layer was called by the backup's name; its object name is its sha256.
            manifest.rename_layer(plan.ts, layer.sha256)
            manifest.close()
            plan.unchanged = manifest.rows_unchanged and base is not None
        except BaseException:
            layer.abort()
            manifest.abort()
            raise
    guest, cfg = plan.guest, plan.cfg
    files = {"env.txt": _write(work / "env.txt", guest.environment())}
    history = guest.history()
    if history is not None:
        files["history.txt"] = _write(work / "history.txt", history)
    found = guest.release()
    release = found or cfg.release
    try:
        mismatch = check_release(cfg.release, found) if found else None
    except InvalidRequest as exc:  # a release declared by hand that is not one
        mismatch = f"cannot compare releases: {exc.message}"
    if mismatch:
        builder.warnings.append(mismatch)
    stats = builder.stats.__dict__ | {"layer_members": layer.members, "layer_uncompressed": layer.uncompressed_bytes}
    tree = _stored_tree(plan)
    cvmfs = None
    if plan.cvmfs is not None:
        cvmfs, notes = capture(plan.cvmfs, plan.cvmfs_known, work, plan.ts, plan.options.threads)
        builder.warnings += notes
    return BackupMeta(
        timestamp=plan.ts, kind=plan.kind, base=plan.base_ts, started=plan.started.isoformat(timespec="milliseconds"),
        completed=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        duration_s=round(time.monotonic() - plan.t0, 3), guest=guest.description, release=release,
        stats=stats, layer={"size": layer.compressed_bytes, "sha256": layer.sha256},
        manifest=tree, files=files, warnings=builder.warnings, cvmfs=cvmfs,
    )


def _stored_tree(plan: _Plan) -> dict[str, object]:
    """Leave in ``work/manifest.sqlite`` what the store keeps of the new tree (a delta over the
    base's checkpoint while that stays small, else the whole tree) and return its reference."""
    full = plan.work / MANIFEST
    base_ref = plan.base_meta.manifest if plan.base_meta is not None else None
    checkpoint = None
    if base_ref is not None:
        checkpoint = base_ref["base"] or {"sha256": base_ref["sha256"], "size": base_ref["size"]}
    stored, is_delta = choose_stored(full, plan.base, checkpoint["sha256"] if checkpoint else None,
                                     unchanged=plan.unchanged)
    if stored == full:
        return {**_file_record(full), "base": None}
    stored.replace(full)
    if is_delta:
        return {**_file_record(full), "base": checkpoint}
    assert checkpoint is not None
    return {"size": checkpoint["size"], "sha256": checkpoint["sha256"], "base": None}  # the checkpoint's own bytes
