"""Garbage collection of a format-2 store: mark from the live records, repack, sweep, purge.

No reference counts are stored (they drift after crashes): every run marks
what the records of the store name — trees, their checkpoints, blobs and the
layers those trees point into — and everything else under ``objects/`` is
garbage. With every entry locked (no backup runs meanwhile):

1. **Repack.** A live layer whose file bytes are more than ``threshold``
   dead (no live tree points at them) is copied, live members only, into a
   new layer; every tree pointing into it is rewritten to point at the new
   one (new tree objects: stored objects never change), and each record
   naming such a tree is replaced by one naming the new tree. A crash in
   between leaves records on old and new trees, both complete. The layers
   of CernVM-FS cache parts are repacked the same way (their trees are
   rewritten, the record's ``cvmfs.tree`` re-pointed), members named
   ``shared/...`` as the backup wrote them.
2. **Sweep.** Marking again, uploads left under a temporary name by a crash
   are removed (on an object store: multipart uploads started more than
   ``grace`` seconds ago are aborted) and each unnamed object is moved aside to
   ``objects/garbage/<unix ms>.<kind>+<name>``: step one of deleting it. A
   mount that still reads it (a backup forgotten while mounted) finds it there.
3. **Purge.** Garbage moved aside at least ``grace`` seconds ago is deleted,
   unless a live reader's lease (``leases/``, taken by every mount) is older
   than the move: that reader may hold it. Leases of dead local processes are
   removed.

Every step is idempotent, so the next run finishes whatever a crash interrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vmlfs.archive.layer import LayerWriter, MemberInfo
from vmlfs.archive.seekable import SeekableReader
from vmlfs.archive.trees import own_layers, rewrite
from vmlfs.engine import faults
from vmlfs.engine.objects import backup_objects, trees_of
from vmlfs.engine.store import OBJECT_KINDS, StoreLayout
from vmlfs.engine.store_files import this_host
from vmlfs.errors import CorruptData

LEASE_MAX_AGE = 24 * 3600  # a lease of another host counts as held this long (its process cannot be asked)


@dataclass
class GcReport:
    discarded: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in OBJECT_KINDS})
    discarded_bytes: int = 0
    repacked: int = 0
    repack_saved: int = 0
    purged: int = 0
    purged_bytes: int = 0
    held: int = 0
    aborted: int = 0  # interrupted multipart uploads (object stores)
    lines: list[str] = field(default_factory=list)


def _lease_alive(doc: dict, now: float) -> bool:
    if doc.get("host") != this_host():
        return now - float(doc.get("since", 0)) < LEASE_MAX_AGE
    try:
        os.kill(int(doc["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class _Live:
    trees: set[str] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)
    layers: set[str] = field(default_factory=set)
    refs: dict[tuple[str, str], dict] = field(default_factory=dict)  # (entry, ts) -> its tree reference
    cvmfs_refs: dict[tuple[str, str], dict] = field(default_factory=dict)  # (entry, ts) -> its cache listing's


def mark(store: StoreLayout, without: frozenset[tuple[str, str]] = frozenset()) -> _Live:
    """Everything the store's records name (but those of the backups ``without``, for what forgetting
    them would free). An unreadable record stops gc: its objects could be live."""
    live = _Live()
    views: dict[tuple, set[str]] = {}
    for entry in store.entry_names():
        for record in store.backups(entry):
            if (entry, record.timestamp) in without:
                continue
            if record.meta is None:
                raise CorruptData(f"gc stopped: {entry}@{record.timestamp} is unreadable ({record.error})",
                                  hint="repair or forget it first")
            meta, where = record.meta, f"{entry}@{record.timestamp}"
            live.refs[(entry, record.timestamp)] = meta.manifest
            if meta.cvmfs is not None:  # the cache part's listing, which gc repacks like a home tree
                live.cvmfs_refs[(entry, record.timestamp)] = trees_of(meta)[1]
            for kind, digest in backup_objects(lambda ref, where=where: store.open_tree(ref, where), meta, views):
                getattr(live, kind).add(digest)
    return live


def freed_by_forgetting(store: StoreLayout, doomed: frozenset[tuple[str, str]]) -> int:
    """Bytes of the objects that only the ``doomed`` backups name: what forgetting them and a gc
    would free at least (a repack of layers they share with others frees more)."""
    if not doomed:
        return 0
    now, after = mark(store), mark(store, doomed)
    total = 0
    for kind, before, kept in (("trees", now.trees, after.trees), ("blobs", now.blobs, after.blobs),
                               ("layers", now.layers, after.layers)):
        for digest in before - kept:
            try:
                total += store.object_size(kind, digest)
            except FileNotFoundError:
                pass
    return total


def collect(store: StoreLayout, *, threshold: float = 0.2, grace: float = 3600.0, entry: str | None = None,
            now: float | None = None, say: Callable[[str], None] = lambda line: None) -> GcReport:
    store.require_format(2, "gc")
    report = GcReport()
    with ExitStack() as locks:
        for name in store.entry_names():
            locks.enter_context(store.lock(name))
        live = mark(store)
        if threshold < 1:
            _repack(store, live, threshold, entry, report, say)
            live = mark(store)
        now = time.time() if now is None else now
        for kind in OBJECT_KINDS:
            for name in store.leftover_uploads(kind):
                store.remove_leftover(kind, name)
            keep = getattr(live, kind)
            for digest in store.object_names(kind):
                if digest not in keep:
                    size = store.object_size(kind, digest)
                    faults.step("gc-discard")
                    store.discard(kind, digest, now)
                    report.discarded[kind] += 1
                    report.discarded_bytes += size
        report.aborted = store.abort_interrupted_uploads(now - grace)
        _purge(store, grace, time.time() if now is None else now, report)
    return report


def _purge(store: StoreLayout, grace: float, now: float, report: GcReport) -> None:
    held_since = []
    for name, data in store.leases():
        try:
            doc = json.loads(data)
            alive = _lease_alive(doc, now)
        except (ValueError, KeyError, TypeError):
            alive = False
        if alive:
            held_since.append(float(doc["since"]))
        else:
            store.drop_lease(name)
    for name, when in store.garbage():
        # A reader registered up to a second after the move counts as older (clocks of two hosts, rounding).
        if now - when < grace or any(since <= when + 1 for since in held_since):
            report.held += 1
            continue
        size = store.garbage_size(name)
        faults.step("gc-purge")
        store.remove_garbage(name)
        report.purged += 1
        report.purged_bytes += size


def _file_bytes(reader: SeekableReader) -> int:
    """Bytes of regular-file data in a layer, from its tar headers (dead members included)."""
    pos, total, pax_size = 0, 0, None
    while True:
        block = reader.read(pos, 512)
        if len(block) < 512 or block == bytes(512):
            return total
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        size = info.size
        if info.type == tarfile.XHDTYPE:
            pax = reader.read(pos + 512, size)
            pax_size = next((int(rec.split(b"=", 1)[1]) for rec in pax.split(b"\n") if b" size=" in rec[:20]), None)
        else:
            if pax_size is not None:
                size, pax_size = pax_size, None
            if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                total += size
        pos += 512 + (size + 511) // 512 * 512


def _repack(store: StoreLayout, live: _Live, threshold: float, only: str | None, report: GcReport,
            say: Callable[[str], None]) -> None:
    ranges: dict[str, dict[int, tuple[int, MemberInfo]]] = {}  # layer -> offset -> (size, member)
    seen: set[tuple] = set()
    trees = [(key, ref, b"") for key, ref in live.refs.items()]
    trees += [(key, ref, b"shared/") for key, ref in live.cvmfs_refs.items()]  # cache members as the backup named them
    for (entry, ts), ref, prefix in trees:
        key = (ref["sha256"], (ref["base"] or {}).get("sha256"))
        if key in seen or (only is not None and entry != only):
            continue
        seen.add(key)
        tree = store.open_tree(ref, f"{entry}@{ts}")
        try:
            for node in tree.files_in_layer_order():
                if node.data_offset not in ranges.setdefault(node.layer, {}):
                    path = prefix + b"/".join(tree.path_of(node))
                    ranges[node.layer][node.data_offset] = (node.size, MemberInfo(
                        path, "f", node.mode, node.uid, node.gid, node.uname, node.gname, node.size, node.mtime_ns, xattrs=node.xattrs))
        finally:
            tree.close()
    moves: list[tuple[str, int, str, int]] = []
    work = Path(tempfile.mkdtemp(prefix="vmlfs-gc-"))
    try:
        for layer, members in sorted(ranges.items()):
            with store.open_layer(only or "store", layer) as reader:
                total = _file_bytes(reader)
                live_bytes = sum(size for size, _ in members.values())
                if total == 0 or (total - live_bytes) / total <= threshold:
                    continue
                out = work / "layer.tar.zst"
                with open(out, "wb") as f:
                    writer = LayerWriter(f)
                    placed = []
                    for offset, (size, member) in sorted(members.items()):
                        new_offset = writer.begin_file(member)
                        for pos in range(0, size, 1 << 20):
                            writer.write(reader.read(offset + pos, min(1 << 20, size - pos)))
                        writer.end_file()
                        placed.append((layer, offset, new_offset))
                    writer.close()
            store.put_object(out, "layers", writer.sha256)
            moves += [(old, off, writer.sha256, new_off) for old, off, new_off in placed]
            report.repacked += 1
            report.repack_saved += total - live_bytes
            say(f"repacking layer {layer[:12]}: {total - live_bytes} of {total} file bytes dead")
        if moves:
            _repoint(store, live, moves, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _repoint(store: StoreLayout, live: _Live, moves: list[tuple[str, int, str, int]], work: Path) -> None:
    """New trees for every tree that points into a repacked layer (or sits on a rewritten
    checkpoint), then each record naming an old one replaced to name the new one."""
    moved = {old for old, _, _, _ in moves}
    done: dict[tuple[str, str | None], dict | None] = {}

    def rewritten(sha: str, base: str | None, base_changed: bool) -> dict | None:
        """Tree ``sha`` rewritten over checkpoint ``base``, or None if it needs no rewrite."""
        if (sha, base) not in done:
            path = store.tree_path(sha)
            if not base_changed and not own_layers(path) & moved:
                done[(sha, base)] = None
            else:
                out = work / f"{sha}-{base}.sqlite"
                rewrite(path, out, base=base, moves=moves)
                digest, size = _digest(out)
                store.put_object(out, "trees", digest)
                done[(sha, base)] = {"sha256": digest, "size": size}
        return done[(sha, base)]

    for (entry, ts), ref in sorted(live.refs.items()):
        base = ref["base"]
        if base is None:
            top = rewritten(ref["sha256"], None, False)
            new_ref = {**top, "base": None} if top else None
        else:
            new_base = rewritten(base["sha256"], None, False)
            top = rewritten(ref["sha256"], (new_base or base)["sha256"], new_base is not None)
            new_ref = {**top, "base": new_base or base} if top else None
        if new_ref is None:
            continue
        meta = store.meta(entry, ts)
        meta.manifest = new_ref
        faults.step("gc-repoint")
        store.replace_record(entry, meta)
    for (entry, ts), ref in sorted(live.cvmfs_refs.items()):
        top = rewritten(ref["sha256"], None, False)
        if top is not None:
            meta = store.meta(entry, ts)  # read again: its home tree may have been re-pointed just now
            assert meta.cvmfs is not None
            meta.cvmfs["tree"] = top
            faults.step("gc-repoint")
            store.replace_record(entry, meta)


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest(), path.stat().st_size
