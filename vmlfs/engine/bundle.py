"""Bundles: backups of one entry as one self-contained file, and back into any store.

A bundle is a plain POSIX tar (readable by ``tar -tf``; the layers inside are
already compressed), in this order::

    vmlfs-bundle.json          what follows: the entry, its backups' records and every object, with sizes and sha256
    records/<ts>.json          each backup's record, verbatim
    objects/<kind>/<sha256>    every object those backups need (trees, layers, blobs), verbatim
    vmlfs-bundle.sha256        the sha256 of vmlfs-bundle.json: the bundle's checksum

Every member is checked while it is read (an object's name is its sha256, a
record's sha256 is listed), and nothing is written to the store until the
whole bundle has been read and found sound: a damaged or truncated bundle
adds nothing. Objects go in first (write-once, skipped where the store has
them), then each record that the entry does not have yet, by the same
conditional create that commits a backup: importing twice adds nothing.
Names inside are all chosen by vmlfs and checked with :mod:`vmlfs.names`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vmlfs import names
from vmlfs.engine.model import BackupMeta, EntryConfig
from vmlfs.archive.manifest import Manifest
from vmlfs.engine.objects import backup_objects, record_objects
from vmlfs.engine.store import StoreLayout
from vmlfs.engine.store_files import OBJECT_KINDS
from vmlfs.errors import AlreadyExists, CorruptData, InvalidRequest, write_failed

FORMAT, VERSION = "vmlfs-bundle", "1.0"
INDEX, CHECKSUM = "vmlfs-bundle.json", "vmlfs-bundle.sha256"
INDEX_LIMIT = 64 << 20  # an index over this is not one vmlfs wrote
CHUNK = 8 << 20


@dataclass
class Imported:
    entry: str
    added: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    objects_stored: int = 0
    created_entry: bool = False


def export_bundle(store: StoreLayout, entry: str, stamps: list[str], out: IO[bytes]) -> int:
    """Write the bundle of ``entry``'s backups ``stamps`` to ``out``; returns the number of objects."""
    metas = [store.meta(entry, ts) for ts in stamps]
    records = {m.timestamp: store.read_backup_file(entry, m.timestamp, "meta.json") for m in metas}
    objects: dict[tuple[str, str], int] = {}
    for meta in metas:
        opener = lambda ref, ts=meta.timestamp: store.open_tree(ref, f"{entry}@{ts}")  # noqa: E731
        for kind, digest in sorted(backup_objects(opener, meta)):
            objects[(kind, digest)] = store.object_size(kind, digest)
    index = json.dumps({
        "format": FORMAT, "version": VERSION, "entry": json.loads(store.load_entry(entry).to_json()),
        "records": {ts: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for ts, data in records.items()},
        "objects": [{"kind": k, "sha256": d, "size": n} for (k, d), n in objects.items()],
    }, indent=1).encode()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, INDEX, len(index), iter([index]))
        for ts, data in records.items():
            _add(tar, f"records/{ts}.json", len(data), iter([data]))
        for (kind, digest), size in objects.items():
            _add(tar, f"objects/{kind}/{digest}", size, _object_chunks(store, entry, kind, digest, size))
        digest = hashlib.sha256(index).hexdigest().encode() + b"\n"
        _add(tar, CHECKSUM, len(digest), iter([digest]))
    return len(objects)


def _object_chunks(store: StoreLayout, entry: str, kind: str, digest: str, size: int) -> Iterator[bytes]:
    if kind == "layers":  # read as stored, by ranges: a layer may be gigabytes, on a remote store
        with store.open_layer(entry, digest) as reader:
            for offset in range(0, size, CHUNK):
                yield reader.raw(offset, min(CHUNK, size - offset))
    elif kind == "trees":
        with open(store.tree_path(digest, f"export of {entry}"), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
    else:
        yield store.read_object(kind, digest)


class _Chunks:
    """A file-like reader over chunks, for tarfile (which reads exactly the size it was told)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._left = chunks, b""

    def read(self, n: int) -> bytes:
        while len(self._left) < n:
            more = next(self._chunks, None)
            if more is None:
                break
            self._left += more
        out, self._left = self._left[:n], self._left[n:]
        return out


def _add(tar: tarfile.TarFile, name: str, size: int, chunks: Iterator[bytes]) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    tar.addfile(info, _Chunks(chunks))  # type: ignore[arg-type]


def read_bundle(source: IO[bytes], work: Path, where: str) -> tuple[dict[str, Any], dict[str, bytes], dict[tuple[str, str], Path]]:
    """Read and check the whole bundle: (index, records by timestamp, staged object files in ``work``).
    Objects the index lists are written to ``work`` as they are read; any damage raises CorruptData."""
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            members = iter(tar)
            first = next(members, None)
            if first is None or first.name != INDEX or not first.isfile() or first.size > INDEX_LIMIT:
                raise CorruptData(f"{where}: not a vmlfs bundle (no {INDEX} first)")
            raw_index = _read_member(tar, first)
            index = _parse_index(raw_index, where)
            records: dict[str, bytes] = {}
            staged: dict[tuple[str, str], Path] = {}
            expected_objects = {(o["kind"], o["sha256"]): o["size"] for o in index["objects"]}
            checked = False
            for member in members:
                if checked:
                    raise CorruptData(f"{where}: {member.name!r} follows the checksum")
                if not member.isfile():
                    raise CorruptData(f"{where}: {member.name!r} is not a regular file")
                if member.name == CHECKSUM:
                    said = _read_member(tar, member).strip().decode(errors="replace")
                    if said != hashlib.sha256(raw_index).hexdigest():
                        raise CorruptData(f"{where}: the bundle's checksum does not match its index")
                    checked = True
                elif member.name.startswith("records/") and member.name.endswith(".json"):
                    ts = member.name[len("records/"):-len(".json")]
                    listed = index["records"].get(ts)
                    if listed is None or member.size != listed["size"] or ts in records:
                        raise CorruptData(f"{where}: record {ts!r} is not the one the index lists")
                    data = _read_member(tar, member)
                    if hashlib.sha256(data).hexdigest() != listed["sha256"]:
                        raise CorruptData(f"{where}: record {ts} is damaged (sha256 differs from the index)")
                    records[ts] = data
                else:
                    key = _object_key(member.name)
                    if key is None or expected_objects.get(key) != member.size or key in staged:
                        raise CorruptData(f"{where}: {member.name!r} is not an object the index lists")
                    staged[key] = _stage(tar, member, work, key[1], where)
    except (tarfile.TarError, EOFError) as exc:
        raise CorruptData(f"{where}: damaged or truncated bundle ({exc})") from None
    if not checked:
        raise CorruptData(f"{where}: the bundle ends before its checksum (truncated)")
    missing = sorted(set(index["records"]) - set(records)) + [f"{k}/{d}" for k, d in expected_objects if (k, d) not in staged]
    if missing:
        raise CorruptData(f"{where}: the bundle lacks what its index lists: {', '.join(missing[:5])}")
    return index, records, staged


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    assert f is not None
    data = f.read()
    if len(data) != member.size:
        raise CorruptData(f"{member.name}: truncated")
    return data


def _stage(tar: tarfile.TarFile, member: tarfile.TarInfo, work: Path, digest: str, where: str) -> Path:
    f = tar.extractfile(member)
    assert f is not None
    path, h, got = work / digest, hashlib.sha256(), 0
    try:
        with open(path, "wb") as out:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                got += len(chunk)
                out.write(chunk)
    except OSError as exc:
        raise write_failed(exc, f"cannot stage {member.name} of {where}") from exc
    if got != member.size or h.hexdigest() != digest:
        raise CorruptData(f"{where}: {member.name} is damaged (its bytes do not hash to its name)")
    return path


def _object_key(name: str) -> tuple[str, str] | None:
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "objects" or parts[1] not in OBJECT_KINDS:
        return None
    try:
        return parts[1], names.digest(parts[2])
    except InvalidRequest:
        return None


def _parse_index(raw: bytes, where: str) -> dict[str, Any]:
    try:
        index = json.loads(raw)
        if index.get("format") != FORMAT:
            raise CorruptData(f"{where}: not a vmlfs bundle")
        if str(index.get("version", "")).split(".")[0] != VERSION.split(".")[0]:
            raise CorruptData(f"{where}: bundle version {index.get('version')!r} is not supported (this vmlfs reads 1.x)")
        EntryConfig.from_json(json.dumps(index["entry"]).encode(), where)
        for ts, listed in index["records"].items():
            names.timestamp(ts)
            int(listed["size"]), names.digest(listed["sha256"])
        for obj in index["objects"]:
            if obj["kind"] not in OBJECT_KINDS:
                raise CorruptData(f"{where}: unknown object kind {obj['kind']!r}")
            names.digest(obj["sha256"]), int(obj["size"])
    except (ValueError, KeyError, TypeError, AttributeError, InvalidRequest) as exc:
        raise CorruptData(f"{where}: the bundle's index is damaged ({exc})") from None
    return index


def _staged_tree(store: StoreLayout, staged: dict[tuple[str, str], Path], ref: dict, where: str) -> Manifest:
    """A tree of the bundle from its staged file (checked on reading), or the store's own copy."""
    def path(digest: str) -> str:
        local = staged.get(("trees", digest))
        return str(local) if local is not None else store.tree_path(digest, where)

    base = ref.get("base")
    if base is None:
        return Manifest(path(ref["sha256"]), where)
    return Manifest(path(ref["sha256"]), where, base=path(base["sha256"]), base_digest=base["sha256"])


def import_bundle(store: StoreLayout, source: IO[bytes], where: str, as_name: str | None = None,
                  say: Callable[[str], None] = lambda line: None) -> Imported:
    """Add the bundle's entry (as ``as_name``, if given) or its missing backups to ``store``."""
    work = Path(tempfile.mkdtemp(prefix="vmlfs-import-"))
    try:
        index, records, staged = read_bundle(source, work, where)
        cfg = EntryConfig.from_json(json.dumps(index["entry"]).encode(), where)
        name = names.entry_name(as_name or cfg.name)
        metas = {ts: BackupMeta.from_json(data, f"{where}: record {ts}") for ts, data in records.items()}
        for ts, meta in metas.items():
            if meta.timestamp != ts:
                raise CorruptData(f"{where}: record {ts} names backup {meta.timestamp}")
            absent = [f"{k}/{d[:12]}" for k, d in sorted(record_objects(meta))
                      if (k, d) not in staged and not store.has_object(k, d)]
            if not absent:
                opener = lambda ref, ts=ts: _staged_tree(store, staged, ref, f"{where}: backup {ts}")  # noqa: E731
                absent = [f"{k}/{d[:12]}" for k, d in sorted(backup_objects(opener, meta))
                          if (k, d) not in staged and not store.has_object(k, d)]
            if absent:
                raise CorruptData(f"{where}: backup {ts} needs objects neither the bundle nor the store has:"
                                  f" {', '.join(absent[:3])}")
        done = Imported(name)
        for (kind, digest), path in staged.items():  # first: objects no record names are gc's, never damage
            if not store.has_object(kind, digest):
                store.put_object(path, kind, digest)
                done.objects_stored += 1
        if name not in store.entry_names():
            store.add_entry(EntryConfig.from_json(json.dumps({**index["entry"], "name": name}).encode(), where))
            done.created_entry = True
        with store.lock(name):
            for ts in sorted(records):
                try:
                    store.create_record(name, ts, records[ts])
                    done.added.append(ts)
                except AlreadyExists:
                    if store.read_backup_file(name, ts, "meta.json") != records[ts]:
                        say(f"warning: {name}@{ts} exists and is another backup; the bundle's is not imported")
                    done.already.append(ts)
        return done
    finally:
        shutil.rmtree(work, ignore_errors=True)
