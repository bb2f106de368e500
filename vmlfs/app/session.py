"""What a front end hands every use case: the store, how to trust SSH hosts, libvirt, the image repository.

One :class:`Session` per command run, or per mount. It opens the store and
the libvirt connection lazily (``vmlfs backup`` of a local guest never loads
libvirt) and keeps them for the session's life. A mount's store is shared by
every reader thread, so its session never closes the store to reconnect:
``reopen_store`` then returns the same store (an SSH store's retry still
reconnects its guest).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmlfs.archive.seekable import FrameCache
from vmlfs.backends.connect import STORE_OPTION, HostKeys, is_s3, is_ssh, open_store
from vmlfs.engine.store import StoreLayout

if TYPE_CHECKING:
    from vmlfs.hypervisor.session import LibvirtSession

DEFAULT_LIBVIRT_URI = "qemu:///system"


@dataclass
class Session:
    store_location: str
    guest_keys: HostKeys = HostKeys()
    store_keys: HostKeys = HostKeys(option=STORE_OPTION)
    libvirt_uri: str = DEFAULT_LIBVIRT_URI
    insecure: bool = False
    """Allow libvirt URIs without verification or encryption."""
    image_repo: str | None = None
    """The CernVM release repository (None: $VMLFS_CERNVM_REPO or the default)."""
    frame_cache: FrameCache | None = None
    shared_store: bool = False
    """The store is shared by concurrent readers (a mount): never closed to reconnect."""
    s3_endpoint: str | None = None
    """The S3 server of an ``s3://`` store when it is not AWS (None: AWS_ENDPOINT_URL or AWS)."""
    _store: StoreLayout | None = field(default=None, init=False, repr=False)
    _libvirt: "LibvirtSession | None" = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def store(self, *, create: bool = True) -> StoreLayout:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.store_location, self.store_keys, create=create, cache=self.frame_cache,
                                         s3_endpoint=self.s3_endpoint)
            return self._store

    def reopen_store(self) -> StoreLayout:
        """A fresh connection to the store (after an SSH store's connection dropped)."""
        if self.shared_store:
            return self.store()
        with self._lock:
            old, self._store = self._store, None
        if old is not None:
            old.close()
        return self.store()

    @property
    def local_store_path(self) -> str | None:
        """The store's directory when it is on this host (a mount must not be made inside it), else None."""
        return None if is_ssh(self.store_location) or is_s3(self.store_location) else self.store_location

    def check_libvirt_uri(self) -> None:
        """Refuse an insecure libvirt URI now (InvalidRequest), without connecting."""
        from vmlfs.hypervisor import check_uri

        check_uri(self.libvirt_uri, insecure=self.insecure)

    def libvirt(self) -> "LibvirtSession":
        """The session's libvirt connection holder (libvirt is imported only now)."""
        from vmlfs.hypervisor.session import LibvirtSession

        with self._lock:
            if self._libvirt is None:
                self._libvirt = LibvirtSession(self.libvirt_uri, self.insecure)
            return self._libvirt

    def close_libvirt(self) -> None:
        with self._lock:
            link, self._libvirt = self._libvirt, None
        if link is not None:
            link.close()

    def close(self) -> None:
        self.close_libvirt()
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()
