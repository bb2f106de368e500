"""Restore a backup, into a local directory or over SSH into a guest, with the release check before writing."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from vmlfs.app.refs import resolve_backup
from vmlfs.app.session import Session
from vmlfs.backends.connect import HostKeys, guest_release, is_ssh, restore_to_ssh
from vmlfs.engine.restore import RestoreReport, restore_tree
from vmlfs.engine.store import StoreLayout
from vmlfs.release.detect import check_release


@dataclass
class Restored:
    entry: str
    ts: str
    report: RestoreReport
    warning: str | None
    """The release check's warning (None when the releases agree or nothing was compared)."""


def restore_into_ssh(store: StoreLayout, entry: str, ts: str, url: str, keys: HostKeys, *, strict_release: bool,
                     paths: list[bytes] = (), overwrite: bool = False, recorded: str | None = None,
                     on_bytes: Callable[[int], None] = lambda n: None) -> tuple[RestoreReport, str | None]:
    """Compare the backup's release with the guest's (``strict_release`` refuses before anything is
    written), then restore ``entry@ts`` into ``ssh://...``; returns the report and the warning."""
    recorded = recorded or store.meta(entry, ts).release
    warning = check_release(recorded, guest_release(url, keys), strict=strict_release) if recorded else None
    manifest = store.open_manifest(entry, ts)
    try:
        report = restore_to_ssh(manifest, lambda layer: store.open_layer(entry, layer), url, list(paths), keys,
                                overwrite=overwrite, on_bytes=on_bytes)
    finally:
        manifest.close()
    return report, warning


def restore_backup(session: Session, ref: str, target: str, paths: tuple[str, ...] = (), *, overwrite: bool = False,
                   strict_release: bool = False, on_bytes: Callable[[int], None] = lambda n: None) -> Restored:
    """Restore ``NAME[@TS]`` (or ``paths`` inside it) into the directory or ``ssh://`` URL ``target``."""
    store = session.store()
    name, ts = resolve_backup(store, ref)
    wanted = [os.fsencode(p) for p in paths]
    if is_ssh(target):
        report, warning = restore_into_ssh(store, name, ts, target, session.guest_keys, strict_release=strict_release,
                                           paths=wanted, overwrite=overwrite, on_bytes=on_bytes)
        return Restored(name, ts, report, warning)
    manifest = store.open_manifest(name, ts)
    try:
        report = restore_tree(manifest, lambda layer: store.open_layer(name, layer), target, wanted,
                              overwrite=overwrite, on_bytes=on_bytes)
    finally:
        manifest.close()
    return Restored(name, ts, report, None)
