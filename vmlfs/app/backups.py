"""Take a backup: the one orchestration behind ``vmlfs backup``, ``control/snapshot`` and every other front end.

What a request leaves open (VM snapshot, consistency, retries) comes from the
entry's backup defaults, so a ``touch control/snapshot`` on an entry whose
defaults ask for a libvirt snapshot takes it exactly as ``vmlfs backup``
does. The orchestration around the engine's :func:`run_backup`:

* the libvirt snapshot alongside and the consistent pause/freeze, bracketing
  the scan through the commit (the hook is built here, libvirt is reached
  through the session's one connection);
* ``strict_release``: the guest's release is checked before anything is read;
* retries: a dropped SSH connection (guest or store) starts over after a
  growing pause, nothing having been committed; a refused host key never
  retries;
* ``prune_after``: the entry's stored keep rules applied once it committed;
* the CernVM-FS cache (``cvmfs_cache``, the entry's ``cvmfs.cache`` by default):
  the guest rooted at the cache, found by :func:`vmlfs.app.cvmfs.cvmfs_source`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmlfs.app.cvmfs import cvmfs_source
from vmlfs.app.session import Session
from vmlfs.backends.connect import is_ssh, open_guest
from vmlfs.engine.backup import BackupOptions, Progress, run_backup
from vmlfs.engine.model import BackupMeta, EntryConfig
from vmlfs.errors import ConnectionFailed, HostKeyRejected, InvalidRequest
from vmlfs.release.detect import check_release

if TYPE_CHECKING:
    from vmlfs.app.prune import PruneResult


@dataclass(frozen=True)
class BackupRequest:
    """One request for a backup; ``None`` fields take the entry's defaults."""

    kind: str | None = None
    checksum: bool = False
    env_file: str | None = None
    vm_snapshot: bool | None = None
    consistent: bool | None = None
    retries: int | None = None
    strict_release: bool = False
    cvmfs_cache: bool | None = None
    cvmfs_cache_base: str | None = None
    """The guest's CernVM-FS cache base, instead of the entry's or its configuration's."""


def _vm_hook(session: Session, cfg: EntryConfig, snapshot: bool, consistent: bool):
    if not (snapshot or consistent):
        return None
    if not cfg.domain:
        raise InvalidRequest(f"entry {cfg.name!r} names no libvirt domain",
                             hint=f"vmlfs entry edit {cfg.name} --domain DOMAIN")
    from vmlfs.hypervisor import backup_hook

    # A paused guest cannot answer SSH: SSH guests are frozen through the guest agent or not at all.
    method = "freeze" if is_ssh(cfg.guest) else "auto"
    return backup_hook(session.libvirt().connection, cfg.domain, snapshot=snapshot,
                       consistency=method if consistent else None, description=f"vmlfs backup of entry {cfg.name}")


def take_backup(session: Session, name: str, request: BackupRequest = BackupRequest(), *,
                progress: Progress | None = None, on_retry: Callable[[str], None] = lambda line: None,
                on_prune: Callable[[PruneResult], None] = lambda result: None) -> BackupMeta:
    """Back up entry ``name`` as ``request`` and its defaults say; ``on_retry`` hears why it starts over.
    An entry whose keep rules say ``prune_after`` is pruned by them once the backup is committed
    (``on_prune`` hears what went); a failing prune leaves the new backup committed."""
    store = session.store()
    cfg = store.load_entry(name)
    defaults = cfg.backup
    retries = defaults.retries if request.retries is None else request.retries
    around = _vm_hook(session, cfg, defaults.vm_snapshot if request.vm_snapshot is None else request.vm_snapshot,
                      defaults.consistent if request.consistent is None else request.consistent)
    options = BackupOptions(kind=request.kind, checksum=request.checksum)
    with_cache = cfg.cvmfs.cache if request.cvmfs_cache is None else request.cvmfs_cache
    for attempt in range(retries + 1):
        guest = cache = None
        try:
            guest = open_guest(cfg, session.guest_keys, env_file=request.env_file)
            if request.strict_release:
                check_release(cfg.release, guest.release(), strict=True)
            cache = cvmfs_source(cfg, session.guest_keys, request.cvmfs_cache_base) if with_cache else None
            meta = run_backup(store, cfg, guest, options, progress=progress, around=around, cvmfs=cache)
            break
        except ConnectionFailed as exc:
            if isinstance(exc, HostKeyRejected) or attempt == retries:
                raise
            on_retry(f"{exc}; nothing was committed, retrying ({attempt + 1}/{retries})")
            time.sleep(min(2 ** attempt, 30))
            store = session.reopen_store()  # the dropped connection may have been the store's
        finally:
            for opened in (guest, cache.guest if cache is not None else None):
                if opened is not None:
                    opened.close()
    if cfg.prune is not None and cfg.prune.prune_after:
        from vmlfs.app.prune import plan_prune, prune  # with gc and verify: imported by the entries that prune

        on_prune(prune(session, plan_prune(session, [name])))
    return meta
