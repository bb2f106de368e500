"""One backup at a time per entry on an object store: a lease object that expires.

An object store has no lock a dead holder releases (flock, an SSH agent whose
connection drops), so the lock is a small JSON object,
``entries/<e>/.lock`` = ``{"host", "pid", "since", "expires"}``, and every
change to it is conditional:

- taken with ``If-None-Match: *`` (exactly one of two takers wins);
- renewed by a thread every :data:`TTL`/3 with ``If-Match: <its ETag>``, so a
  holder that lost it (it stalled past its expiry and another process took
  over) finds out at the next renewal and its backup refuses to commit;
- taken over once its ``expires`` is past, again with ``If-Match`` on the ETag
  read (two processes taking over an expired lease: one wins): a crashed
  holder blocks the entry for at most :data:`TTL` seconds;
- released with a delete conditional on its ETag (never someone else's lease).

Taking it also proves, once per process, that the server honours
``If-None-Match: *`` at all (everything above rests on it): a lease found
taken is proof, and a lease just created is created a second time, which
must be refused. A server that accepts the second create is refused before
the backup reads anything (:data:`IGNORES_CONDITIONS`).

Expiry compares the holder's clock with the taker's: hosts whose clocks
differ by more than a fraction of :data:`TTL` should not share a store.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from vmlfs.backends.s3_client import ConditionFailed, S3Bucket
from vmlfs.engine.store_files import this_host
from vmlfs.errors import Busy, ReadOnly

log = logging.getLogger(__name__)
TTL = float(os.environ.get("VMLFS_S3_LEASE_TTL", "120"))


class LeaseLost(Busy):
    """The lease expired and another process took it over while this one held it."""


def ignores_conditions(where: str) -> ReadOnly:
    """The refusal of a server that ignores conditional writes (a second create replaced the first)."""
    return ReadOnly(f"the S3 server of {where} ignores conditional writes (If-None-Match: *), "
                    "so concurrent backups could overwrite each other's commits; vmlfs will not write there",
                    hint="use a server that supports conditional writes (AWS S3, SeaweedFS, Ceph RGW >= 18)")


class S3Lease:
    def __init__(self, bucket: S3Bucket, key: str, what: str, ttl: float = TTL, *, where: str = "",
                 proven: Callable[[], None] | None = None) -> None:
        """``proven``, if given: the server is not yet known to honour If-None-Match; taking the lease
        proves it (then ``proven()`` is called) or refuses the server, naming the store ``where``."""
        self.bucket, self.key, self.what, self.ttl = bucket, key, what, ttl
        self._where, self._proven = where, proven
        self._etag: str | None = None
        self._lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since = 0.0

    def _doc(self) -> bytes:
        return json.dumps({"host": this_host(), "pid": os.getpid(), "since": self._since,
                           "expires": time.time() + self.ttl}).encode()

    def acquire(self) -> "S3Lease":
        self._since = time.time()
        for _ in range(3):  # a lease released or taken over between our reads: look again
            if self._create():
                break
            try:
                data, etag = self.bucket.get_tagged(self.key)
            except FileNotFoundError:
                continue
            holder = _parse(data)
            if holder.get("expires", 0) > time.time():
                raise Busy(f"{self.what} is locked by {_who(holder)}: a backup is already running",
                           hint=f"wait for it to finish (a crashed holder's lease expires within {self.ttl:.0f} s)")
            try:
                self._etag = self.bucket.put(self.key, self._doc(), if_match=etag)
            except (ConditionFailed, FileNotFoundError):
                continue
            log.warning("%s: taking over the expired lease of %s", self.what, _who(holder))
            break
        else:
            raise Busy(f"{self.what} is being locked and unlocked by others", hint="try again")
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, name="s3-lease", daemon=True)
        self._thread.start()
        return self

    def _create(self) -> bool:
        """Create the lease if there is none (False if there is one), proving conditional writes."""
        try:
            self._etag = self.bucket.put(self.key, self._doc(), if_none_match=True)
        except ConditionFailed:
            self._conditions_hold()
            return False
        if self._proven is not None:
            try:
                self._etag = self.bucket.put(self.key, self._doc(), if_none_match=True)
            except ConditionFailed:
                self._conditions_hold()
            else:
                self.release()
                raise ignores_conditions(self._where)
        return True

    def _conditions_hold(self) -> None:
        if self._proven is not None:
            self._proven()
            self._proven = None

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._etag = self.bucket.put(self.key, self._doc(), if_match=self._etag)
            except (ConditionFailed, FileNotFoundError):
                self._lost = True
                log.error("%s: the lease was taken over by another process", self.what)
                return
            except Exception as exc:  # the server is unreachable for now: the next renewal may succeed
                log.warning("%s: cannot renew the lease: %s", self.what, exc)

    def check(self) -> None:
        """LeaseLost unless this process still holds the lease (a backup checks before it commits)."""
        if self._etag is None and not self._lost:
            return  # not taken through this object: nothing of ours to check
        if self._lost:
            raise LeaseLost(f"{self.what}: the lease expired and was taken over while this backup ran; "
                            "nothing was committed", hint="run the backup again")
        try:
            self._etag = self.bucket.put(self.key, self._doc(), if_match=self._etag)
        except (ConditionFailed, FileNotFoundError):
            self._lost = True
            self.check()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._etag is not None and not self._lost:
            try:
                self.bucket.delete(self.key, if_match=self._etag)
            except (ConditionFailed, FileNotFoundError):
                pass
        self._etag = None

    def __enter__(self) -> "S3Lease":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _parse(data: bytes) -> dict:
    try:
        doc = json.loads(data)
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        return {}  # a damaged lease counts as expired: it cannot say whom to wait for


def _who(holder: dict) -> str:
    since = holder.get("since")
    when = datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if since else "?"
    left = max(0, int(holder.get("expires", 0) - time.time()))
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {when} (lease expires in {left} s)"
