"""Turn a guest or store location into a Guest or a Store: a local directory or an SSH URL."""

from __future__ import annotations

from typing import Callable

from vmlfs.archive.manifest import Manifest
from vmlfs.archive.seekable import FrameCache, SeekableReader
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.backends.store_layout import StoreLayout
from vmlfs.engine.guest import Guest
from vmlfs.engine.model import EntryConfig
from vmlfs.engine.restore import RestoreReport
from vmlfs.errors import InvalidRequest


def open_guest(cfg: EntryConfig, *, env_file: str | None = None, accept_new_host_key: bool = False) -> Guest:
    """Connect to the entry's guest; for SSH this checks the host key and authenticates now."""
    if cfg.guest.startswith("ssh://"):
        from vmlfs.backends.ssh_guest import (
            SshGuest,  # asyncssh is imported only when SSH is used
        )
        from vmlfs.backends.ssh_runner import SshConnection, SshOptions
        from vmlfs.backends.ssh_url import parse_ssh_url

        target = parse_ssh_url(cfg.guest)
        conn = SshConnection(target, SshOptions(accept_new_host_key=accept_new_host_key))
        return SshGuest(conn, target.path, target.display)
    if "://" in cfg.guest:
        raise InvalidRequest(f"unknown guest URL scheme in {cfg.guest!r}", hint="use a directory or ssh://[user@]host[:port]/path")
    return LocalGuest(cfg.guest, env_file=env_file or cfg.env_file, release=cfg.release)


def restore_to_ssh(manifest: Manifest, open_layer: Callable[[str], SeekableReader], url: str, paths: list[bytes],
                   *, overwrite: bool, on_bytes: Callable[[int], None], accept_new_host_key: bool = False) -> RestoreReport:
    """Restore into ``ssh://[user@]host[:port]/path`` with the local restore's safety rules (ssh_restore.py)."""
    from vmlfs.backends.ssh_restore import restore_to_guest
    from vmlfs.backends.ssh_runner import SshConnection, SshOptions
    from vmlfs.backends.ssh_url import parse_ssh_url

    target = parse_ssh_url(url)
    conn = SshConnection(target, SshOptions(accept_new_host_key=accept_new_host_key))
    try:
        return restore_to_guest(manifest, open_layer, conn, target.path, paths, overwrite=overwrite, on_bytes=on_bytes)
    finally:
        conn.close()


def open_store(location: str, *, create: bool = True, cache: FrameCache | None = None) -> StoreLayout:
    """The store at a directory or at ``ssh://[user@]host[:port]/path``."""
    if location.startswith("ssh://"):
        from vmlfs.backends.ssh_store import (
            SshStore,  # asyncssh is imported only when SSH is used
        )

        return SshStore(location, create=create, cache=cache)
    return LocalStore(location, create=create, cache=cache)
