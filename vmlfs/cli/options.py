"""What every command shares: the resolved store, quiet/debug, entry@timestamp parsing."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import click

from vmlfs import names
from vmlfs.backends.factory import open_store
from vmlfs.backends.local_store import default_store_path
from vmlfs.backends.store_layout import StoreLayout
from vmlfs.errors import InvalidRequest, NotFound


@dataclass
class Context:
    store_path: str | None
    quiet: bool = False
    debug: bool = False
    _store: StoreLayout | None = field(default=None, repr=False)

    @property
    def show_progress(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    @property
    def store_location(self) -> str:
        return self.store_path or default_store_path()

    def store(self, *, create: bool = True) -> StoreLayout:
        if self._store is None:
            self._store = open_store(self.store_location, create=create)
        return self._store

    def reopen_store(self) -> StoreLayout:
        """A fresh connection to the store (after an SSH store's connection dropped)."""
        if self._store is not None:
            self._store.close()
            self._store = None
        return self.store()


pass_context = click.make_pass_decorator(Context)


def split_ref(ref: str) -> tuple[str, str | None]:
    """``NAME[@TS]`` -> (name, ts-or-prefix or None for latest)."""
    name, _, ts = ref.partition("@")
    names.entry_name(name)
    return name, (ts or None)


def resolve_backup(store: StoreLayout, ref: str) -> tuple[str, str]:
    """``NAME[@TS]``: the newest backup, ``@latest``, or a unique timestamp prefix."""
    name, ts = split_ref(ref)
    stamps = [r.timestamp for r in store.backups(name)]
    if not stamps:
        raise NotFound(f"entry {name!r} has no backups yet", hint=f"take one with 'vmlfs backup {name}'")
    if ts is None or ts == "latest":
        return name, stamps[-1]
    matches = [s for s in stamps if s.startswith(ts)]
    if len(matches) == 1:
        return name, matches[0]
    if not matches:
        raise NotFound(f"entry {name!r} has no backup matching {ts!r}", hint=f"see 'vmlfs list {name}'")
    raise InvalidRequest(f"{ts!r} matches {len(matches)} backups of {name!r}: {', '.join(matches[:5])}", hint="give more digits")


LIBVIRT_URI_ENV = "VMLFS_LIBVIRT_URI"
DEFAULT_LIBVIRT_URI = "qemu:///system"
F = TypeVar("F", bound=Callable[..., Any])


def libvirt_options(func: F) -> F:
    """``--libvirt-uri`` and ``--insecure``, shared by ``vm``, ``backup``, ``mount`` and ``provision``.

    Defined here, not beside the libvirt code, so that commands which only
    sometimes talk to libvirt do not import it at start-up.
    """
    func = click.option(
        "--insecure",
        is_flag=True,
        help="Allow libvirt URIs without verification (no_verify=1, known_hosts_verify=ignore) or encryption (+tcp).",
    )(func)
    return click.option(
        "--libvirt-uri",
        envvar=LIBVIRT_URI_ENV,
        default=DEFAULT_LIBVIRT_URI,
        show_default=True,
        metavar="URI",
        help=f"libvirt connection URI, e.g. qemu:///system, xen:///system, esx://host, test:///default [env {LIBVIRT_URI_ENV}].",
    )(func)
