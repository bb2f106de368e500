"""A CernVM-FS client cache laid out as a real client leaves it (docs/cernvm-facts.md §3 and the
anchors' §3.1): ``<base>/shared/`` with the 256 object directories ``00``..``ff``, objects named by
their hash (the 38 hex digits after the directory's two, some with an algorithm suffix or the
catalog letter older clients kept), ``cvmfschecksum.<repository>`` breadcrumbs, and what a backup
must never take: the ``cachedb`` SQLite catalog, the quota manager's FIFO, a talk socket, lock and
running markers, ``txn/`` with a download in flight and ``quarantaine/`` with a bad object."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
from pathlib import Path

REPOSITORIES = ("atlas.cern.ch", "sft.cern.ch")
NEVER = ("cachedb", "cachemgr", "cvmfs_io.atlas.cern.ch", "lock.atlas.cern.ch", "running.atlas.cern.ch",
         "txn", "quarantaine")


def object_data(i: int, salt: bytes = b"", size: int | None = None) -> bytes:
    """Content of object ``i``: file bytes as the cache holds them (uncompressed), of varied sizes."""
    size = size if size is not None else 200 + (i * 7919) % 30000
    return hashlib.shake_256(salt + i.to_bytes(8, "little")).digest(size)  # incompressible, like real objects


def object_name(data: bytes, i: int) -> str:
    """``XX/<38 hex>[suffix]`` as the client names it: the hash of the object (here of its bytes)."""
    digest = hashlib.sha1(data).hexdigest()
    suffix = ("", "", "", "C", "-rmd160", "-shake128")[i % 6]
    return f"{digest[:2]}/{digest[2:]}{suffix}"


def make_cache(base: Path, objects: dict[str, bytes], *, repositories: tuple[str, ...] = REPOSITORIES,
               uid: int | None = None) -> Path:
    """Lay out ``base`` (the cache base) with ``objects`` (``XX/name`` -> bytes); returns ``base/shared``."""
    shared = base / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    for i in range(256):
        (shared / f"{i:02x}").mkdir(exist_ok=True)
    for name, data in objects.items():
        (shared / name).write_bytes(data)
    for repo in repositories:
        (shared / f"cvmfschecksum.{repo}").write_bytes(hashlib.sha1(repo.encode()).hexdigest().encode() + b"T1764590000R42")
    db = sqlite3.connect(shared / "cachedb")
    db.execute("CREATE TABLE cache_catalog (sha1 TEXT, size INTEGER, acseq INTEGER, path TEXT, type INTEGER, pinned INTEGER)")
    db.executemany("INSERT INTO cache_catalog VALUES (?, ?, 0, '', 0, 0)", [(n, len(d)) for n, d in objects.items()])
    db.commit()
    db.close()
    if not (shared / "cachemgr").exists():
        os.mkfifo(shared / "cachemgr")
    sock = shared / "cvmfs_io.atlas.cern.ch"
    if not sock.exists():
        here = os.getcwd()
        os.chdir(shared)  # a socket's path is limited to 108 bytes: bind it by its relative name
        try:
            s = socket.socket(socket.AF_UNIX)
            s.bind(sock.name)
            s.close()
        finally:
            os.chdir(here)
    (shared / "lock.atlas.cern.ch").write_bytes(b"")
    (shared / "running.atlas.cern.ch").write_bytes(b"")
    (shared / "txn").mkdir(exist_ok=True)
    (shared / "txn" / "fetchAbC123").write_bytes(b"partial download")
    (shared / "quarantaine").mkdir(exist_ok=True)
    (shared / "quarantaine" / ("ab" * 20)).write_bytes(b"failed verification")
    if uid is not None:
        for path in [shared, *shared.rglob("*")]:
            os.lchown(path, uid, uid)
    return shared


def objects(count: int, salt: bytes = b"", start: int = 0) -> dict[str, bytes]:
    """``count`` objects (``XX/name`` -> bytes), numbered from ``start``: the same numbers give the same objects."""
    out = {}
    for i in range(start, start + count):
        data = object_data(i, salt)
        out[object_name(data, i)] = data
    return out


def cached_files(shared: Path) -> dict[str, bytes]:
    """What a restore must give back: every object and checksum file below ``shared``, by relative path."""
    out = {}
    for path in shared.rglob("*"):
        rel = path.relative_to(shared).as_posix()
        if path.is_file() and not path.is_symlink() and (rel.startswith("cvmfschecksum.") or
                                                         (len(rel.split("/")) == 2 and len(rel.split("/")[0]) == 2
                                                          and rel.split("/")[0] not in ("txn",))):
            out[rel] = path.read_bytes()
    return out
