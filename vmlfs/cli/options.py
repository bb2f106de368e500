"""What every command shares: the session (store, host-key policies, libvirt), quiet/debug, shared options."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import click

from vmlfs.app.session import DEFAULT_LIBVIRT_URI, Session
from vmlfs.backends.connect import GUEST_OPTION, STORE_OPTION, HostKeys
from vmlfs.backends.local_store import default_store_path
from vmlfs.engine.store import StoreLayout


@dataclass
class Context:
    store_path: str | None
    quiet: bool = False
    debug: bool = False
    accept_new_store_host_key: bool = False
    s3_endpoint: str | None = None
    _session: Session | None = field(default=None, repr=False)

    @property
    def show_progress(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    @property
    def store_location(self) -> str:
        return self.store_path or default_store_path()

    def session(self, *, accept_new_host_key: bool = False, libvirt_uri: str = DEFAULT_LIBVIRT_URI,
                insecure: bool = False, image_repo: str | None = None, store_location: str | None = None) -> Session:
        """The command's session, made by its first caller with the command's options; closed when the command ends."""
        if self._session is None:
            self._session = Session(
                store_location or self.store_location,
                guest_keys=HostKeys(accept_new=accept_new_host_key, option=GUEST_OPTION),
                store_keys=HostKeys(accept_new=self.accept_new_store_host_key, option=STORE_OPTION),
                libvirt_uri=libvirt_uri, insecure=insecure, image_repo=image_repo, s3_endpoint=self.s3_endpoint,
            )
            click.get_current_context().call_on_close(self._session.close)
        return self._session

    def store(self, *, create: bool = True) -> StoreLayout:
        return self.session().store(create=create)


pass_context = click.make_pass_decorator(Context)


LIBVIRT_URI_ENV = "VMLFS_LIBVIRT_URI"
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


def guest_options(func: F) -> F:
    """``--accept-new-host-key`` for commands that reach an SSH guest (or restore into one)."""
    return click.option(
        GUEST_OPTION, "accept_new_host_key", is_flag=True,
        help="SSH guest: trust an unknown host key and add it to known_hosts (a changed key is always refused).",
    )(func)
