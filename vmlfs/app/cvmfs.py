"""The CernVM-FS cache use cases: where a backup reads the guest's cache, and putting it back.

A backup (``vmlfs backup --with-cvmfs-cache``, or an entry whose ``cvmfs.cache``
is set) reads the cache base from the guest's configuration below the entry's
``cvmfs.root`` unless one is named, then the cache through a guest rooted at
``<base>/shared`` (:mod:`vmlfs.engine.cvmfs` decides what is captured). A
restore unpacks a backup's cache part into a local directory (the cache base
to be, nothing else done) or, over SSH as root, into the guest's cache base
with the steps of :mod:`vmlfs.backends.cvmfs_guest`; provisioning calls the
same function before anything mounts CernVM-FS in the new VM.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from vmlfs.app.refs import resolve_backup
from vmlfs.app.session import Session
from vmlfs.backends.connect import (
    HostKeys,
    cvmfs_steps,
    is_ssh,
    open_guest_at,
    parse_guest_url,
)
from vmlfs.engine.cvmfs import CvmfsSource, cache_base, read_config
from vmlfs.engine.model import EntryConfig
from vmlfs.engine.restore import RestoreReport, restore_tree
from vmlfs.engine.store import StoreLayout
from vmlfs.errors import InvalidRequest, NotFound


def _under(root: str, path: str) -> str:
    return os.path.normpath(os.path.join(root, path.lstrip("/")))


def cvmfs_source(cfg: EntryConfig, keys: HostKeys, cache_base_path: str | None = None) -> CvmfsSource:
    """The guest's cache for one backup: the base named (argument, else the entry's), or read from
    ``<root>/etc/cvmfs`` on the guest, CernVM 4's default when nothing sets it."""
    settings = cfg.cvmfs
    base = cache_base_path or settings.cache_base
    notes: list[str] = []
    if base is None:
        try:
            config = open_guest_at(cfg, _under(settings.root, "/etc/cvmfs"), keys)
        except NotFound:
            files = []
        else:
            try:
                files = read_config(config)
            finally:
                config.close()
        base, notes = cache_base(files)
    elif not base.startswith("/") or "/../" in base + "/":
        raise InvalidRequest(f"the CernVM-FS cache base {base!r} must be an absolute path without '..'")
    where = _under(settings.root, base + "/shared")
    try:
        guest = open_guest_at(cfg, where, keys)
    except NotFound:
        raise NotFound(f"no CernVM-FS cache at {where} on the guest of {cfg.name} (cache base {base})",
                       hint="name the cache base with --cvmfs-cache-base, or back up without --with-cvmfs-cache") from None
    return CvmfsSource(guest, base, notes)


@dataclass
class CacheRestored:
    entry: str
    ts: str
    where: str
    report: RestoreReport
    notes: list[str] = field(default_factory=list)
    """Steps the guest could not take (no cvmfs user, no cvmfs_config), said as one line each."""


def put_cache(store: StoreLayout, entry: str, ts: str, target: str, keys: HostKeys = HostKeys(),
              on_bytes: Callable[[int], None] = lambda n: None) -> CacheRestored:
    """Unpack ``entry@ts``'s cache part into ``target``: a local directory (it becomes the cache base:
    ``target/shared/...``), or ``ssh://root@host[:port][/base]`` (the base recorded in the backup
    unless the URL names one), with the root steps around it."""
    check_cache_target(target)
    part = store.meta(entry, ts).cvmfs
    tree = store.open_cvmfs_tree(entry, ts)
    try:
        layers = (lambda layer: store.open_layer(entry, layer))
        if not is_ssh(target):
            report = restore_tree(tree, layers, os.path.join(target, "shared"), overwrite=True, on_bytes=on_bytes)
            return CacheRestored(entry, ts, target, report)
        url = parse_guest_url(target)
        base = url.path if url.path.startswith("/") and url.path != "/" else part["base"]
        steps = cvmfs_steps(target, keys)
        try:
            report, notes = steps.restore(tree, layers, base, on_bytes)
        finally:
            steps.close()
        return CacheRestored(entry, ts, f"{steps.description.removesuffix(url.path)}{base}", report, notes)
    finally:
        tree.close()


def check_cache_target(target: str) -> None:
    """Refuse an SSH cache target that names a user other than root, before anything is written
    (without a user, the guest's steps check that the login is root)."""
    if is_ssh(target):
        user = parse_guest_url(target).user
        if user not in (None, "root"):
            raise InvalidRequest(f"the CernVM-FS cache belongs to the cvmfs user: putting it into a guest needs root, not {user}",
                                 hint="use ssh://root@HOST for the cache (provisioning logs in as root by itself)")


def guest_root_url(url: str) -> str:
    """``ssh://user@host:port`` of an SSH location, its path dropped: the cache goes to the recorded base."""
    target = parse_guest_url(url)
    return target.display.removesuffix(target.path) if target.path else target.display


def restore_cvmfs_cache(session: Session, ref: str, target: str,
                        on_bytes: Callable[[int], None] = lambda n: None) -> CacheRestored:
    """Put the CernVM-FS cache of backup ``NAME[@TS]`` back (see :func:`put_cache`)."""
    store = session.store()
    name, ts = resolve_backup(store, ref)
    return put_cache(store, name, ts, target, session.guest_keys, on_bytes)
