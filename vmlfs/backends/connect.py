"""The one place that turns a location and a host-key policy into a Guest, a Store or an SSH session.

Every front end reaches guests and stores through these functions, so the
host-key rules (accept a new key only when asked, never a changed one), the
URL checks and the choice between a local directory and SSH are made once.
A guest (or restore target) and a store each have their own
:class:`HostKeys` policy: trusting a new guest must never silently trust a
new store host, and the hint of a refused key names the option that applies.
asyncssh is imported only when an SSH location is used, botocore only for an S3 store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from vmlfs.archive.manifest import Manifest
from vmlfs.archive.seekable import FrameCache, SeekableReader
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.engine.guest import Guest
from vmlfs.engine.model import EntryConfig
from vmlfs.engine.restore import RestoreReport
from vmlfs.engine.store import StoreLayout
from vmlfs.engine.throughput import held_collections
from vmlfs.errors import InvalidRequest

GUEST_OPTION = "--accept-new-host-key"
STORE_OPTION = "--accept-new-store-host-key"


@dataclass(frozen=True)
class HostKeys:
    """How to trust an SSH server: ``known_hosts`` None means ``~/.ssh/known_hosts``.

    ``option`` is the command-line flag that sets ``accept_new`` for this kind
    of connection, named in the hint when an unknown key is refused.
    """

    accept_new: bool = False
    known_hosts: str | None = None
    option: str = GUEST_OPTION


def is_ssh(location: str) -> bool:
    return location.startswith("ssh://")


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def check_location(location: str, what: str) -> None:
    """A directory, ``ssh://``, or for a store ``s3://``; any other URL scheme is refused, never
    taken for a directory name (the URL is not echoed: it may hold what looks like a password)."""
    scheme, sep, _ = location.partition("://")
    allowed = ("ssh", "s3") if what == "store" else ("ssh",)
    if sep and scheme not in allowed:
        raise InvalidRequest(f"unknown URL scheme {scheme!r} in the {what} location",
                             hint="use a directory or ssh://[user@]host[:port]/path"
                                  + (" or s3://BUCKET/PREFIX" if what == "store" else ""))


def _options(keys: HostKeys):
    from vmlfs.backends.ssh_runner import SshOptions  # asyncssh only when SSH is used

    return SshOptions(accept_new_host_key=keys.accept_new, known_hosts=keys.known_hosts, accept_option=keys.option)


def ssh_session(url: str, keys: HostKeys):
    """An open SSH connection to ``url``'s host (host key checked, authenticated) and the parsed URL."""
    from vmlfs.backends.ssh_runner import SshConnection
    from vmlfs.backends.ssh_url import parse_ssh_url

    target = parse_ssh_url(url)
    return SshConnection(target, _options(keys)), target


def open_guest(cfg: EntryConfig, keys: HostKeys = HostKeys(), *, env_file: str | None = None) -> Guest:
    """Connect to the entry's guest; for SSH this checks the host key and authenticates now."""
    check_location(cfg.guest, "guest")
    if is_ssh(cfg.guest):
        from vmlfs.backends.ssh_guest import SshGuest

        conn, target = ssh_session(cfg.guest, keys)
        return SshGuest(conn, target.path, target.display)
    return LocalGuest(cfg.guest, env_file=env_file or cfg.env_file, release=cfg.release)


def open_guest_at(cfg: EntryConfig, path: str, keys: HostKeys = HostKeys()) -> Guest:
    """A guest rooted at the absolute ``path`` of the entry's guest machine instead of its home
    (the CernVM-FS configuration and cache); NotFound if it is not a directory there."""
    check_location(cfg.guest, "guest")
    if is_ssh(cfg.guest):
        from vmlfs.backends.ssh_guest import SshGuest

        conn, target = ssh_session(cfg.guest, keys)
        return SshGuest(conn, path, f"{target.display.removesuffix(target.path)}{path}")
    return LocalGuest(path)


def cvmfs_steps(url: str, keys: HostKeys = HostKeys()):
    """The root steps around unpacking a CernVM-FS cache into the guest at ``url`` (cvmfs_guest.py)."""
    from vmlfs.backends.cvmfs_guest import CacheSteps

    conn, target = ssh_session(url, keys)
    return CacheSteps(conn, target.display)


def guest_release(url: str, keys: HostKeys = HostKeys()) -> str | None:
    """The CernVM release an SSH guest runs now (the probe a backup uses), or None if it cannot be told."""
    from vmlfs.backends.ssh_guest import SshGuest

    conn, target = ssh_session(url, keys)
    guest = SshGuest(conn, "/", target.display)
    try:
        return guest.release()
    finally:
        guest.close()


def restore_to_ssh(manifest: Manifest, open_layer: Callable[[str], SeekableReader], url: str, paths: list[bytes],
                   keys: HostKeys = HostKeys(), *, overwrite: bool = False,
                   on_bytes: Callable[[int], None] = lambda n: None) -> RestoreReport:
    """Restore into ``ssh://[user@]host[:port]/path`` with the local restore's safety rules (ssh_restore.py)."""
    from vmlfs.backends.ssh_restore import restore_to_guest

    conn, target = ssh_session(url, keys)
    try:
        return restore_to_guest(manifest, open_layer, conn, target.path or ".", paths, overwrite=overwrite,
                                on_bytes=on_bytes)
    finally:
        conn.close()


def open_store(location: str, keys: HostKeys = HostKeys(option=STORE_OPTION), *, create: bool = True,
               cache: FrameCache | None = None, s3_endpoint: str | None = None) -> StoreLayout:
    """The store at a directory, at ``ssh://[user@]host[:port]/path`` or at ``s3://BUCKET/PREFIX``
    (``s3_endpoint``: a non-AWS server; botocore is imported only for an S3 store)."""
    check_location(location, "store")
    if is_s3(location):
        with held_collections():  # botocore's import and client build some 50,000 objects
            from vmlfs.backends.s3_store import S3Store

            return S3Store(location, create=create, cache=cache, endpoint=s3_endpoint)
    if is_ssh(location):
        from vmlfs.backends.ssh_store import SshStore

        return SshStore(location, create=create, cache=cache, options=_options(keys))
    return LocalStore(location, create=create, cache=cache)


def parse_guest_url(url: str):
    """The parts of an ``ssh://`` guest URL (user, host, port, path), validated."""
    from vmlfs.backends.ssh_url import parse_ssh_url

    return parse_ssh_url(url)


def ssh_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) checked like an SSH URL's host and port."""
    from vmlfs.backends.ssh_url import parse_ssh_url

    target = parse_ssh_url(f"ssh://{text}")
    if target.port is None or target.path or target.user:
        raise InvalidRequest(f"invalid SSH endpoint {text!r}", hint="use HOST:PORT, e.g. 127.0.0.1:2222")
    return target.host, target.port
