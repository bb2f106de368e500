"""One long-lived libvirt connection, shared by a front end's use cases.

A mount lives for hours, libvirtd may restart under it, and libvirt's test
driver keeps its state per connection: so a front end holds one
connection, opened on first use and opened again after it broke, instead of
one per request; a backup's VM snapshot, the mount's ``vm/`` listing and
provisioning all use it. Every method blocks and is called from the mount's worker threads;
libvirt connections are thread-safe, the lock only guards (re)connecting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import libvirt

from vmlfs.errors import ConnectionFailed
from vmlfs.hypervisor.connection import connect, lookup_domain

log = logging.getLogger(__name__)
T = TypeVar("T")


class LibvirtSession:
    """One libvirt connection to ``uri``, (re)opened on demand; safe to share between threads."""

    def __init__(self, uri: str, insecure: bool = False) -> None:
        self.uri, self.insecure = uri, insecure
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    def connection(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None and not self._conn.isAlive():
                log.info("libvirt connection to %s was lost; reconnecting", self.uri)
                self._conn = None
            if self._conn is None:
                self._conn = connect(self.uri, insecure=self.insecure)
            return self._conn

    def with_domain(self, domain: str, fn: Callable[[libvirt.virDomain], T]) -> T:
        try:
            return fn(lookup_domain(self.connection(), domain))
        except ConnectionFailed:
            with self._lock:
                self._conn = None  # connect again next time
            raise

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError as exc:
                log.debug("closing libvirt connection: %s", exc)
