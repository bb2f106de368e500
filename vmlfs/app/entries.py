"""Entries: added and edited through one validation, so a bad setting is refused when it is written.

Everything an entry records is checked here before it reaches the store: the
name, the guest location (a directory or an SSH URL whose user and host pass
the SSH validator, so ``-oProxyCommand=...`` or shell text never gets in),
the release, the domain name and the provisioning settings. A backup later
never has to refuse what ``entry add`` accepted.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vmlfs import names
from vmlfs.app.session import Session
from vmlfs.backends.connect import check_location, is_ssh, parse_guest_url, ssh_endpoint
from vmlfs.engine.model import EntryConfig, VmSettings
from vmlfs.release.detect import parse_release


def check_entry(cfg: EntryConfig) -> EntryConfig:
    """``cfg`` if every field is valid; InvalidRequest naming the first bad one otherwise."""
    names.entry_name(cfg.name)
    check_location(cfg.guest, "guest")
    if is_ssh(cfg.guest):
        parse_guest_url(cfg.guest)
    if cfg.release is not None:
        parse_release(cfg.release)
    if cfg.domain is not None:
        names.domain_name(cfg.domain)  # it names the domain's volumes when provisioning
    settings = VmSettings.from_entry(cfg.vm)
    if settings.ssh is not None:
        ssh_endpoint(settings.ssh)
    cfg.cvmfs.check()
    return cfg


def add_entry(session: Session, cfg: EntryConfig) -> EntryConfig:
    session.store().add_entry(check_entry(cfg))
    return cfg


def edit_entry(session: Session, name: str, changes: dict[str, Any], vm: dict[str, Any],
               backup: dict[str, Any], cvmfs: dict[str, Any] | None = None) -> EntryConfig:
    """Change the given fields of entry ``name`` (None values in ``vm`` remove a setting), validated as a whole."""
    store = session.store()
    cfg = store.load_entry(name)
    settings = {k: v for k, v in {**cfg.vm, **vm}.items() if v is not None}
    edited = check_entry(replace(cfg, **changes, vm=settings, backup=replace(cfg.backup, **backup),
                                 cvmfs=replace(cfg.cvmfs, **(cvmfs or {}))))
    store.save_entry(edited)
    return edited
