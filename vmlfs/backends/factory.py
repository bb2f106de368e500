"""Turn an entry's ``guest`` string into a Guest: a local directory or an SSH URL."""

from __future__ import annotations

from vmlfs.backends.local_guest import LocalGuest
from vmlfs.engine.guest import Guest
from vmlfs.engine.model import EntryConfig
from vmlfs.errors import InvalidRequest


def open_guest(cfg: EntryConfig, *, env_file: str | None = None) -> Guest:
    if cfg.guest.startswith("ssh://"):
        raise InvalidRequest(f"SSH guests are not supported by this build: {cfg.guest}")
    if "://" in cfg.guest:
        raise InvalidRequest(f"unknown guest URL scheme in {cfg.guest!r}", hint="use a directory or ssh://[user@]host[:port]/path")
    return LocalGuest(cfg.guest, env_file=env_file or cfg.env_file, release=cfg.release)
