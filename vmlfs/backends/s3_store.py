"""A store in an S3 bucket (AWS, SeaweedFS, Ceph RGW, ...): ``s3://BUCKET/PREFIX``.

The same layout as every store (docs/FORMAT.md), one key per file under
``PREFIX/``; the S3 calls themselves are in :mod:`vmlfs.backends.s3_client`.
What an object store changes, and why it is still safe without a server lock
(docs/s3.md):

- Objects are uploaded first (multipart for big layers); an object appears
  only once its upload completes, so there is no temporary name. A backup is
  committed by creating its record with ``If-None-Match: *``: two hosts never
  commit one name twice, and a backup whose upload broke off is never listed;
  its objects are named by no record, and gc removes them (and aborts its
  unfinished multipart upload) after the grace period. Before relying on it,
  the store checks once per process that the server refuses a second
  conditional create (some servers ignore the header) and refuses to write
  if it does not.
- "Directories" are key prefixes; a directory vmlfs creates is marked by an
  empty ``<dir>/`` key, created conditionally, so creating an entry twice
  fails as on a file system. The store's own directories need no marker.
- ``_rename`` is a server-side copy that never replaces, then a delete. That
  is not atomic, but it is only used for objects (immutable: a copy is the
  same bytes, and a crash in between leaves the object in both places, which
  the next gc resolves) and for the entry directory that ``entry remove``
  deletes anyway.
- The entry lock is a lease object that expires (:mod:`vmlfs.backends.s3_lease`);
  the record is created only while the lease is still ours.
- Trees are cached locally under their sha256; layers are read by ranged
  GETs of whole frames (:mod:`vmlfs.backends.remote_reads`).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

from vmlfs import names
from vmlfs.archive.placement import PlacementProofs
from vmlfs.archive.seekable import FrameCache, SeekableReader
from vmlfs.backends.remote_reads import (FIRST_TAIL, TAIL, RangedLayerReader, cache_root, cached_tree, cached_tree_path,
                                         seek_table_bytes)
from vmlfs.backends.s3_client import ConditionFailed, S3Bucket
from vmlfs.backends.s3_lease import S3Lease, ignores_conditions
from vmlfs.engine.store import STORE_DIRS, STORE_FILE, StoreLayout, entry_path
from vmlfs.engine.store_files import this_host
from vmlfs.errors import ConnectionFailed, CorruptData, InvalidRequest, VmlfsError

log = logging.getLogger(__name__)
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
PREFIX_PART = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: Frames one read-ahead GET fetches. Each GET costs a round trip and botocore's per-request work
#: (signing, endpoint rules): on SeaweedFS over loopback 1 MiB GETs cost the client 2.4 ms of CPU
#: per MiB, 4 MiB GETs 0.7 ms, 8 MiB GETs 0.5 ms.
FRAMES_PER_GET = 8
READ_EACH_THREADS = 8  # GETs side by side for many small files (botocore keeps 10 connections)
READ_ATTEMPTS = 3  # a layer range whose body broke off is fetched again this often (botocore retries the rest)
T = TypeVar("T")
UNKNOWN_SPACE = 1 << 50  # an object store states no capacity; df shows 1 PiB free rather than a full disk


class ReadFailed(ConnectionFailed):
    """A layer range could not be fetched: that file's read fails (EIO), the mount stays up."""

    errno = errno.EIO


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://BUCKET[/PREFIX]``; the URL is never echoed if it holds a user part."""
    if not url.startswith("s3://"):
        raise InvalidRequest("not an S3 URL", hint="use s3://BUCKET/PREFIX")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if "@" in bucket or ":" in bucket:
        raise InvalidRequest("an s3:// store URL takes no credentials, user or port",
                             hint="credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE; "
                                  "the server from --s3-endpoint or AWS_ENDPOINT_URL")
    if not BUCKET.fullmatch(bucket):
        raise InvalidRequest(f"invalid bucket name {bucket!r} in {url!r}", hint="3 to 63 of a-z 0-9 . -")
    parts = [p for p in prefix.split("/") if p]
    for part in parts:
        if not PREFIX_PART.fullmatch(part) or part in (".", ".."):
            raise InvalidRequest(f"invalid prefix component {part!r} in {url!r}", hint="use A-Z a-z 0-9 . _ -")
    return bucket, "/".join(parts)


class S3Store(StoreLayout):
    """A vmlfs store under ``s3://BUCKET/PREFIX``."""

    #: Read-ahead keeps 24 frames ahead, fetched FRAMES_PER_GET at a time by up to 4 threads.
    readahead = (24, 4)

    def __init__(self, url: str, *, create: bool = True, cache: FrameCache | None = None,
                 endpoint: str | None = None) -> None:
        bucket, self.prefix = parse_s3_url(url)
        self.description = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.bucket = S3Bucket(bucket, endpoint=endpoint)
        self.frame_cache = cache or FrameCache()
        key = hashlib.sha256(f"{self.bucket.endpoint}|{self.description}".encode()).hexdigest()[:16]
        self.cache_dir = cache_root("s3") / key
        self.proofs = PlacementProofs(self.cache_dir / "placed")
        self._leases: dict[str, S3Lease] = {}
        self._conditional_checked = False
        self._create_or_check(create)

    def _key(self, rel: str) -> str:
        return "/".join(p for p in (self.prefix, rel.strip("/")) if p)

    # primitives --------------------------------------------------------------

    def _read(self, rel: str) -> bytes:
        return self.bucket.get(self._key(rel))

    def _read_each(self, rels: list[str]) -> list[bytes | OSError | VmlfsError]:
        """Side by side (READ_EACH_THREADS GETs at a time): an entry's records are one GET each, and
        every backup, listing and mount reads them all (100 backups took 100 round trips in turn)."""
        if len(rels) < 2:
            return super()._read_each(rels)
        with ThreadPoolExecutor(max_workers=min(READ_EACH_THREADS, len(rels)), thread_name_prefix="s3-read") as pool:
            return list(pool.map(self._read_or_error, rels))

    def _write(self, rel: str, data: bytes) -> None:
        """One PUT replaces the object whole: readers see the old or the new content."""
        self.bucket.put(self._key(rel), data)

    def _create(self, rel: str, data: bytes) -> None:
        """The conditional create; a retried PUT that finds its own bytes there had succeeded."""
        self._check_conditional()
        parts = rel.split("/")
        if len(parts) == 4 and parts[0] == "entries" and parts[2] == "backups" and parts[1] in self._leases:
            self._leases[parts[1]].check()  # commit only while the entry's lease is still ours
        try:
            self.bucket.put(self._key(rel), data, if_none_match=True)
        except ConditionFailed:
            if self.bucket.get(self._key(rel)) != data:
                raise
        log.debug("created %s/%s", self.description, rel)

    def _check_conditional(self) -> None:
        """Refuse to write to a server that ignores If-None-Match (a second create would silently
        replace a committed backup); probed once per process, under a key of this process only,
        unless taking an entry's lease proved it already (:class:`S3Lease`)."""
        if self._conditional_checked:
            return
        probe = self._key(f".vmlfs-probe/{this_host()}-{os.getpid()}")
        self.bucket.put(probe, b"1", if_none_match=True)
        try:
            self.bucket.put(probe, b"2", if_none_match=True)
        except ConditionFailed:
            self._conditions_hold()
            return
        finally:
            self.bucket.delete(probe)
        raise ignores_conditions(self.description)

    def _conditions_hold(self) -> None:
        self._conditional_checked = True

    def _put(self, local: Path, rel: str) -> None:
        """Upload unless the object exists: its name is its sha256, so an existing one has these bytes
        (two uploads racing write the same bytes, and whichever lands last changes nothing)."""
        try:
            self.bucket.head(self._key(rel))
            return
        except FileNotFoundError:
            pass
        self.bucket.upload(local, self._key(rel))

    def _listdir(self, rel: str) -> list[str]:
        """The names under ``rel/``; a prefix with no key under it is a missing directory, except
        the store's own directories, which are there, empty (see :meth:`make_object_dirs`)."""
        prefix = self._key(rel) + "/"
        keys, prefixes = self.bucket.listing(prefix)
        if not keys and not prefixes:
            if rel in STORE_DIRS:
                return []
            raise FileNotFoundError(errno.ENOENT, "no such prefix", f"{self.description}/{rel}")
        found = {k[len(prefix):] for k, _ in keys if k != prefix}
        return sorted(found | {p[len(prefix):].rstrip("/") for p in prefixes})

    def _exists(self, rel: str) -> bool:
        for key in (self._key(rel), self._key(rel) + "/"):
            try:
                self.bucket.head(key)
                return True
            except FileNotFoundError:
                continue
        return False

    def _mkdir(self, rel: str) -> None:
        """A directory marker, created conditionally: FileExistsError if the directory exists."""
        if self._exists(rel):
            raise FileExistsError(errno.EEXIST, "exists", f"{self.description}/{rel}")
        try:
            self.bucket.put(self._key(rel) + "/", b"", if_none_match=True)
        except ConditionFailed:
            raise FileExistsError(errno.EEXIST, "exists", f"{self.description}/{rel}") from None

    def make_object_dirs(self) -> None:
        """Nothing to check or make: a key needs no directory above it, and :meth:`_listdir` lists
        the store's own directories as empty when no key is under them. (A store checks them each
        time it is opened: here 12 HEADs, a third of a no-change backup's requests.)"""

    def _all_keys(self, rel: str) -> list[tuple[str, int]]:
        keys, _ = self.bucket.listing(self._key(rel) + "/", delimiter=None)
        return keys

    def _rename(self, rel: str, new_rel: str) -> None:
        """Copy (never replacing), then delete: safe for immutable objects (module docstring)."""
        try:
            size, _ = self.bucket.head(self._key(rel))
        except FileNotFoundError:
            old, new = self._key(rel) + "/", self._key(new_rel) + "/"
            moved = self._all_keys(rel)
            if not moved:
                raise
            for key, size in moved:
                if key.endswith("/"):  # a directory marker (some servers cannot copy those)
                    self.bucket.put(new + key[len(old):], b"")
                else:
                    self.bucket.copy(key, new + key[len(old):], size)
            self._delete_all(moved)
            return
        self.bucket.copy(self._key(rel), self._key(new_rel), size)
        self.bucket.delete(self._key(rel))

    def _unlink(self, rel: str) -> None:
        self.bucket.head(self._key(rel))  # FileNotFoundError as on a file system (S3's delete never says)
        self.bucket.delete(self._key(rel))

    def _rmtree(self, rel: str) -> None:
        self._delete_all(self._all_keys(rel))

    def _delete_all(self, found: list[tuple[str, int]]) -> None:
        """Children before their directory's marker: a server that keeps directories (SeaweedFS)
        removes one only when its marker goes last."""
        for key, _ in sorted(found, reverse=True):
            self.bucket.delete(key)

    def abort_interrupted_uploads(self, started_before: float) -> int:
        """Multipart uploads under ``objects/`` started before ``started_before``: invisible to
        listings, their parts take space until aborted. gc holds every entry's lease, so no backup
        uploads meanwhile; the grace period also spares a holder that lost its lease mid-upload
        (and clocks that differ a little: the server stamps the start)."""
        stale = [(key, upload) for key, upload, started in self.bucket.uploads(self._key("objects") + "/")
                 if started < started_before]
        for key, upload in stale:
            log.info("aborting an interrupted upload: %s", key)
            self.bucket.abort_upload(key, upload)
        return len(stale)

    def _size(self, rel: str) -> int:
        return self.bucket.head(self._key(rel))[0]

    def _digest(self, rel: str) -> tuple[int, str]:
        return self.bucket.digest(self._key(rel))

    def _cached_tree(self, digest: str) -> str | None:
        return cached_tree_path(self.cache_dir, digest)

    def _tree_file(self, rel: str, digest: str, where: str) -> str:
        return cached_tree(self.cache_dir, digest, where,
                           lambda local: self._again(lambda: self.bucket.download(self._key(rel), local), where))

    def _layer_reader(self, rel: str, digest: str, name: str) -> SeekableReader:
        """The seek table from the layer's tail: one GET, whose answer also gives the size (a second
        one for a table over FIRST_TAIL, bounded by TAIL whatever a damaged footer claims)."""
        key = self._key(rel)
        try:
            tail, size = self._again(lambda: self.bucket.tail(key, FIRST_TAIL), name)
            need = min(seek_table_bytes(tail), size, TAIL)
            if len(tail) < need:
                tail, size = self._again(lambda: self.bucket.tail(key, need), name)
        except FileNotFoundError:
            raise CorruptData(f"{name}: layer file is missing") from None
        return RangedLayerReader(f"{self.description}/{rel}#{digest}", size, tail,
                                 lambda offset, length: self._read_range(key, offset, length, name),
                                 cache=self.frame_cache, name=name, proofs=self.proofs,
                                 frames_per_fetch=FRAMES_PER_GET)

    def _read_range(self, key: str, offset: int, length: int, name: str) -> bytes:
        try:
            return self._again(lambda: self.bucket.get(key, offset, length), name)
        except FileNotFoundError:
            raise CorruptData(f"{name}: layer file is missing") from None

    def _again(self, fetch: Callable[[], T], name: str) -> T:
        """``fetch()``, once more if the body broke off (botocore retried what came before the body),
        at most READ_ATTEMPTS times; then ReadFailed (in a mount: EIO for that file only)."""
        for attempt in range(READ_ATTEMPTS):
            try:
                return fetch()
            except ConnectionFailed as exc:
                if attempt == READ_ATTEMPTS - 1:
                    raise ReadFailed(f"{name}: {exc.message}") from None
                log.info("%s: reading again after: %s", name, exc.message)
        raise AssertionError("unreachable")

    def _local_path(self, rel: str) -> Path:
        raise InvalidRequest(f"{self.description}: this needs the store's files on this machine",
                             hint="copy the store to a directory first")

    # the rest of the port ------------------------------------------------------

    def lock(self, entry: str) -> S3Lease:
        # Taking the lease proves conditional writes too (two requests instead of the probe's three).
        lease = S3Lease(self.bucket, self._key(entry_path(entry, ".lock")), f"entry {entry!r}", where=self.description,
                        proven=None if self._conditional_checked else self._conditions_hold)
        self._leases[names.entry_name(entry)] = lease
        return lease

    def _work_root(self, entry: str) -> Path:
        return self.cache_dir / "work" / names.entry_name(entry)

    def clean_tmp(self, entry: str) -> int:
        """Remove this host's work directories of the entry's interrupted backups (the bucket has
        nothing to clean: an upload has no temporary name). Under the entry's lease no other
        backup of it runs, so every one found is a leftover."""
        root = self._work_root(entry)
        leftovers = list(root.iterdir()) if root.is_dir() else []
        for leftover in leftovers:
            log.info("removing leftover of an interrupted backup: %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        return len(leftovers)

    def new_work_dir(self, entry: str, ts: str) -> Path:
        """A local directory to build the backup in, beside the tree cache; :meth:`commit` uploads it."""
        root = self._work_root(entry)
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{names.timestamp(ts)}-", dir=root))

    def space(self) -> tuple[int, int]:
        return UNKNOWN_SPACE, UNKNOWN_SPACE

    def close(self) -> None:
        """The client's connection pool closes with the process; nothing is held open."""

    def check_alive(self) -> None:
        try:
            self._read(STORE_FILE)
        except (OSError, ConnectionFailed) as exc:
            raise CorruptData(f"the store {self.description} is gone or unreachable: {exc}") from None
