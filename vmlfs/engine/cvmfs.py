"""The guest's CernVM-FS client cache as an optional part of a backup (docs/cernvm.md, docs/FORMAT.md).

A shared cache is ``<CVMFS_CACHE_BASE>/shared/``: 256 directories ``00``..``ff``
of objects named by their content hash (the rest of the hash after the two
digits of the directory, an algorithm suffix such as ``-rmd160`` and sometimes
a type letter), beside ``cvmfschecksum.<repository>`` breadcrumbs (the last
root catalog each repository mounted) and things that must never leave the
guest: the cache database ``cachedb``, the quota manager's pipes, ``txn/``
(downloads in flight) and ``quarantaine/`` (objects that failed verification).
The client rebuilds its database from the objects on the next mount.

Why a part of its own, and not more home: the cache is a few GB of objects
whose names already are hashes, shared between repositories, VMs and entries.
So the part is one tree (the listing of the whole cache of this backup, in
the tree format of the home) and one layer holding only the objects that no
kept backup of any entry has stored yet (:func:`known_objects` is that
store-wide index, rebuilt from the records each time, so there is nothing to
keep consistent), plus the checksum files. Both are ordinary objects: gc
marks them from the record, verify reads them, and the layer is a seekable
``tar.zst`` GNU tar extracts (members ``shared/...``, relative to the cache base).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vmlfs.archive.layer import LayerWriter, MemberInfo
from vmlfs.archive.manifest import DIR, FILE, ROOT_ID, Node
from vmlfs.archive.manifest_writer import ManifestWriter
from vmlfs.engine.guest import FileChanged, Guest, ScanEntry, ScanReport
from vmlfs.engine.rules import Rules
from vmlfs.engine.scan_check import checked_scan
from vmlfs.engine.store import CVMFS_LAYER, CVMFS_TREE, StoreLayout
from vmlfs.errors import GuestError, InvalidRequest, NotFound, VmlfsError, write_failed

CERNVM4_BASE = "/mnt/.rw/cvmfs-cache"  # docs/cernvm-facts.md §3: CernVM 4's /etc/cvmfs/default.d/50-cernvm.conf
SUBDIR = re.compile(rb"[0-9a-f]{2}")
# PosixCacheManager::GetPathInCache: the hash without the type suffix, older clients kept it (C, H, L, M, P, X).
OBJECT = re.compile(rb"[0-9a-f]{38}(?:-rmd160|-shake128)?[CHLMPX]?")
CHECKSUM = re.compile(rb"cvmfschecksum\.([A-Za-z0-9][A-Za-z0-9._-]{0,252})")
# Only the object directories and the checksum files are ever listed; the rest of shared/ is not descended into.
CACHE_RULES = Rules(include=("/[0-9a-f][0-9a-f]/", "/cvmfschecksum.*"), exclude=("/*",))
# What cvmfs reads for every repository, in its order (a later file wins); per-repository files are not read.
CONFIG_RULES = Rules(include=("/default.conf", "/default.local", "/default.d/"), exclude=("/*",))
_SETTING = re.compile(rb"\s*(?:export\s+)?(CVMFS_CACHE_BASE|CVMFS_SHARED_CACHE)=(.*)")
BATCH = 4096
SMALL = 4 << 20
SHOWN_REFUSALS = 5


def summary_lines(part: dict) -> list[str]:
    """What ``cvmfs-cache.txt`` of the mount says about a backup's cache part, one line each."""
    repos = part["repositories"]
    return [f"cache base: {part['base']}",
            f"objects: {part['objects']}",
            f"bytes: {part['bytes']}",
            (f"stored by this backup: {part['stored_objects']} objects, {part['stored_bytes']} bytes"
             " (the rest was stored by earlier backups)"),
            f"repositories: {' '.join(repos) if repos else '-'}"]


def cache_base(files: list[tuple[str, bytes]]) -> tuple[str, list[str]]:
    """``CVMFS_CACHE_BASE`` from the guest's configuration files (name, bytes) in cvmfs's order,
    CernVM 4's default if none sets it; and notes worth a warning."""
    base, shared, notes = None, None, []
    for name, data in files:
        for line in data.splitlines():
            found = _SETTING.match(line)
            if found is None:
                continue
            value = found.group(2).split(b"#", 1)[0].strip().strip(b"\"'")
            if found.group(1) == b"CVMFS_CACHE_BASE":
                base = (value, name)
            else:
                shared = value
    if shared is not None and shared.lower() == b"no":
        notes.append("CVMFS_SHARED_CACHE=no: only a shared cache (<base>/shared) is captured, per-repository caches are not")
    if base is None:
        return CERNVM4_BASE, notes
    value, where = base
    text = value.decode("utf-8", "replace")
    if not value.startswith(b"/") or b"$" in value or b"\0" in value or b"/../" in value + b"/":
        raise InvalidRequest(f"CVMFS_CACHE_BASE={text!r} in {where} is not a plain absolute path",
                             hint="name the cache base with --cvmfs-cache-base")
    return os.path.normpath(text), notes


def read_config(guest: Guest) -> list[tuple[str, bytes]]:
    """The cvmfs configuration files of a guest rooted at its ``/etc/cvmfs``, in cvmfs's order."""
    report = ScanReport()
    try:
        wanted = [e for e in checked_scan(guest.scan(CONFIG_RULES, report), guest.description)
                  if e.type == FILE and (e.path in (b"default.conf", b"default.local")
                                         or (e.path.startswith(b"default.d/") and e.path.endswith(b".conf")
                                             and e.path.count(b"/") == 1))]
    except NotFound:
        return []
    order = {b"default.conf": 0, b"default.local": 2}
    wanted.sort(key=lambda e: (order.get(e.path, 1), e.path))
    out = []
    for entry, chunks in guest.read_many(wanted):
        try:
            out.append(("/etc/cvmfs/" + os.fsdecode(entry.path), b"".join(chunks)))
        except FileChanged as exc:
            raise GuestError(f"cannot read the CernVM-FS configuration: {exc}") from None
    return out


def known_objects(store: StoreLayout) -> dict[bytes, Node]:
    """Every cache object (and checksum file) a kept backup of any entry stored: ``XX/name`` -> its row.

    Built from the records each time (as gc marks): no index to keep in step with forget and gc,
    and an object is reused only while a record names the tree that points at it, which is
    exactly what gc keeps. Damaged records are skipped: their objects are simply stored again."""
    known: dict[bytes, Node] = {}
    seen: set[str] = set()
    for entry in store.entry_names():
        for record in store.backups(entry):
            part = record.meta.cvmfs if record.meta is not None else None
            if part is None or part["tree"]["sha256"] in seen:
                continue
            seen.add(part["tree"]["sha256"])
            try:
                tree = store.open_cvmfs_tree(entry, record.timestamp)
            except VmlfsError:
                continue
            try:
                for path, node in tree.walk():
                    if node.is_file and node.layer is not None:
                        known.setdefault(b"/".join(path), node)
            except VmlfsError:
                pass
            finally:
                tree.close()
    return known


@dataclass
class CvmfsSource:
    """Where a backup reads the cache: a guest rooted at ``<base>/shared`` and the base, for the record."""

    guest: Guest
    base: str
    notes: list[str] = field(default_factory=list)


@dataclass
class _Capture:
    layer: LayerWriter
    tree: ManifestWriter
    ts: str
    known: dict[bytes, Node]
    ids: dict[bytes, int] = field(default_factory=dict)  # accepted directories and queued files -> node id
    rows: list[Node] = field(default_factory=list)  # written in id order at the end: the same cache, the same tree
    next_id: int = ROOT_ID
    pending: list[tuple[ScanEntry, Node]] = field(default_factory=list)
    pending_bytes: int = 0
    objects: int = 0
    bytes: int = 0
    stored_objects: int = 0
    stored_bytes: int = 0
    repositories: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def _member(path: bytes, e: ScanEntry | Node, kind: str) -> MemberInfo:
    return MemberInfo(b"shared/" + path if path else b"shared", kind, e.mode, e.uid, e.gid, e.uname, e.gname,
                      e.size if kind == "f" else 0, e.mtime_ns)


def _node(c: _Capture, e: ScanEntry, parent: int, name: bytes) -> Node:
    """A row for ``e``; ids in scan order, so the same cache gives the same tree (one object)."""
    c.next_id += 1
    return Node(id=c.next_id - 1, parent=parent, name=name, type=e.type, mode=e.mode, uid=e.uid, gid=e.gid,
                uname=e.uname, gname=e.gname, size=e.size, mtime_ns=e.mtime_ns, ctime_ns=e.ctime_ns)


def _accept(c: _Capture, e: ScanEntry) -> None:
    """Place one scanned path: a directory of the layout, an object, a checksum file, or refused."""
    slash = e.path.rfind(b"/")
    parent, name = (e.path[:slash], e.path[slash + 1:]) if slash >= 0 else (b"", e.path)
    if e.path and parent not in c.ids:  # below something refused: never looked at
        return
    depth = e.path.count(b"/") + 1 if e.path else 0
    shown = "shared/" + repr(e.path)[2:-1]  # a guest's name may hold a newline or any byte: one line, escaped
    if e.type == DIR and (depth == 0 or (depth == 1 and SUBDIR.fullmatch(name))):
        node = _node(c, e, c.ids[parent] if e.path else 0, name)
        c.ids[e.path] = node.id
        c.rows.append(node)
        c.layer.add(_member(e.path, e, "d"))
        return
    if e.type == FILE and depth == 1 and (found := CHECKSUM.fullmatch(name)):
        c.repositories.append(found.group(1).decode())
        _queue(c, e, _node(c, e, c.ids[parent], name))
        return
    if e.type != FILE or depth != 2 or not OBJECT.fullmatch(name):
        c.refused.append(f"{shown} ({'not a regular file' if e.type != FILE else 'not an object name (a hash)'})")
        return
    node = _node(c, e, c.ids[parent], name)
    c.objects += 1
    c.bytes += e.size
    hit = c.known.get(e.path)
    if hit is not None and hit.size == e.size:
        node.sha256, node.layer, node.data_offset = hit.sha256, hit.layer, hit.data_offset
        c.rows.append(node)
        return
    _queue(c, e, node)


def _queue(c: _Capture, e: ScanEntry, node: Node) -> None:
    c.ids[e.path] = node.id
    c.pending.append((e, node))
    c.pending_bytes += e.size


def _flush(c: _Capture, guest: Guest) -> None:
    batch, c.pending, c.pending_bytes = c.pending, [], 0
    nodes = {id(e): node for e, node in batch}
    for e, chunks in guest.read_many(e for e, _ in batch):
        node = nodes[id(e)]
        try:
            if e.size <= SMALL:
                data = b"".join(chunks)
                node.sha256 = hashlib.sha256(data).digest()
                hit = c.known.get(e.path)
                if hit is not None and hit.sha256 == node.sha256:  # a checksum file as an earlier backup stored it
                    node.layer, node.data_offset = hit.layer, hit.data_offset
                    c.rows.append(node)
                    continue
                node.data_offset = c.layer.add_file(_member(e.path, e, "f"), data)
            else:
                node.sha256, node.data_offset = _stream(c.layer, _member(e.path, e, "f"), e.size, chunks)
        except FileChanged as exc:
            c.unreadable.append(str(exc))
            if node.name.startswith(b"cvmfschecksum."):
                c.repositories.remove(node.name[14:].decode())
            else:
                c.objects -= 1
                c.bytes -= e.size
            continue
        node.layer = c.ts
        c.rows.append(node)
        if not node.name.startswith(b"cvmfschecksum."):
            c.stored_objects += 1
            c.stored_bytes += e.size


def _stream(layer: LayerWriter, member: MemberInfo, size: int, chunks: Iterator[bytes]) -> tuple[bytes, int]:
    offset = layer.begin_file(member)
    h, written = hashlib.sha256(), 0
    try:
        for chunk in chunks:
            layer.write(chunk)
            h.update(chunk)
            written += len(chunk)
    except FileChanged:
        while written < size:  # the header promised size bytes (docs/FORMAT.md, "dead members")
            step = min(size - written, 1 << 20)
            layer.write(bytes(step))
            written += step
        layer.end_file()
        raise
    layer.end_file()
    return h.digest(), offset


def capture(source: CvmfsSource, known: dict[bytes, Node], work: Path, ts: str, threads: int = 2) -> tuple[dict, list[str]]:
    """Write the cache part's layer and tree into ``work``; return its record part and warnings."""
    where = f"the CernVM-FS cache {source.base}/shared on {source.guest.description}"
    try:
        raw = open(work / CVMFS_LAYER, "wb", buffering=0)
    except OSError as exc:
        raise write_failed(exc, "cannot create the cvmfs layer") from exc
    tree = ManifestWriter(work / CVMFS_TREE)
    report = ScanReport()
    with raw:
        c = _Capture(LayerWriter(raw, threads=threads), tree, ts, known)
        try:
            for entry in checked_scan(source.guest.scan(CACHE_RULES, report), where):
                _accept(c, entry)
                if len(c.pending) >= BATCH or c.pending_bytes >= 256 << 20:
                    _flush(c, source.guest)
            _flush(c, source.guest)
            c.layer.close()
            for node in sorted(c.rows, key=lambda n: n.id):  # rows final when inserted: no UPDATE reshapes pages
                if node.layer == ts:
                    node.layer = c.layer.sha256
                tree.add(node)
            tree.close()
        except NotFound as exc:
            c.layer.abort()
            tree.abort()
            raise NotFound(f"{where} does not exist ({exc})",
                           hint="name the guest's cache base with --cvmfs-cache-base, or back up without --with-cvmfs-cache") from None
        except BaseException:
            c.layer.abort()
            tree.abort()
            raise
    top = [w for w in report.warnings if w.startswith("cannot list .:")]
    if top:
        raise GuestError(f"cannot read {where}: {top[0].split(': ', 1)[1].split(';')[0]}",
                         hint="the cache belongs to the cvmfs user: back up as root, or without --with-cvmfs-cache")
    warnings = list(source.notes)
    # Pipes and sockets of the cache (cachemgr*) are skipped by the scan as they should be; unreadable paths are not.
    unreadable = [w for w in report.warnings if w.startswith("cannot ")] + c.unreadable
    if unreadable:
        warnings.append(f"cvmfs cache: {len(unreadable)} paths the backup user cannot read were left out"
                        f" (first: {unreadable[0]}); the cache belongs to the cvmfs user: back up as root"
                        " or give the backup user read access")
    for line in c.refused[:SHOWN_REFUSALS]:
        warnings.append(f"cvmfs cache: refused {line}; left out")
    if len(c.refused) > SHOWN_REFUSALS:
        warnings.append(f"cvmfs cache: refused {len(c.refused) - SHOWN_REFUSALS} more paths that are not objects")
    part = {"base": source.base, "layer": {"size": c.layer.compressed_bytes, "sha256": c.layer.sha256},
            "tree": _digest(work / CVMFS_TREE), "objects": c.objects, "bytes": c.bytes,
            "stored_objects": c.stored_objects, "stored_bytes": c.stored_bytes,
            "repositories": sorted(c.repositories)}
    return part, warnings


def _digest(path: Path) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}
