"""``vmlfs serve``: the mount's tree over HTTP, as WebDAV and/or the logbook's web page.

The server holds the same :class:`MountState` as ``vmlfs mount``, built from a
session the same way, so what a WebDAV client or a browser sees and starts
is what the mount shows and its control files start. It stays in the
foreground; SIGINT or SIGTERM stop it (a job still running is abandoned, as
at an unmount).
"""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path

import click

from vmlfs.app.session import DEFAULT_LIBVIRT_URI, Session
from vmlfs.app.vm import SessionVm
from vmlfs.archive.seekable import FrameCache
from vmlfs.cli.main import cli
from vmlfs.cli.options import LIBVIRT_URI_ENV, Context, guest_options, pass_context
from vmlfs.engine.throughput import serving_collections
from vmlfs.errors import InvalidRequest
from vmlfs.fs.control import Jobs
from vmlfs.fs.state import MountState
from vmlfs.webdav.gate import Credentials


def read_credentials(path: str) -> Credentials:
    """``USER:PASSWORD`` on the file's first line, or a bare token (the password of user ``vmlfs``)."""
    try:
        line = Path(path).read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read a password from {path}: {exc}") from None
    user, sep, password = line.partition(":")
    if not sep:
        user, password = "vmlfs", line
    if not user or not password:
        raise InvalidRequest(f"{path}: expected USER:PASSWORD or a token on the first line")
    return Credentials(user, password)


@cli.command()
@click.option("--webdav", "webdav", is_flag=True, help="Serve the tree as a read-only WebDAV share at /.")
@click.option("--web", "web", is_flag=True, help="Serve the logbook's web page at /web/.")
@click.option("--listen", default="127.0.0.1:8765", show_default=True, metavar="ADDRESS:PORT",
              help="Where to listen; an address that is not loopback needs --auth-file and TLS, or --insecure.")
@click.option("--auth-file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Require HTTP Basic authentication: USER:PASSWORD (or a token for user vmlfs) on the first line.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), metavar="PEM", help="Serve HTTPS with this certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), metavar="PEM", help="The certificate's private key.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address without a password or without TLS.")
@click.option("--store", "store_path", metavar="PATH", help="Store directory (default: the global --store).")
@click.option("--cache-size", type=click.IntRange(1, 1 << 16), default=64, show_default=True, metavar="MIB",
              help="Memory for decompressed frames (LRU).")
@click.option("--libvirt-uri", envvar=LIBVIRT_URI_ENV, default=DEFAULT_LIBVIRT_URI, show_default=True, metavar="URI",
              help=f"libvirt connection for vm/ and VM snapshots [env {LIBVIRT_URI_ENV}].")
@click.option("--insecure-libvirt", is_flag=True, help="Allow libvirt URIs without verification or encryption.")
@guest_options
@pass_context
def serve(ctx: Context, webdav: bool, web: bool, listen: str, auth_file: str | None, tls_cert: str | None,
          tls_key: str | None, insecure: bool, store_path: str | None, cache_size: int, libvirt_uri: str,
          insecure_libvirt: bool, accept_new_host_key: bool) -> None:
    """Serve every backup over HTTP: WebDAV (--webdav) and/or the web page (--web); both when neither is given.

    Example: vmlfs serve --webdav --web --listen 127.0.0.1:8765
    """
    from vmlfs.webdav import server as http

    if not (webdav or web):
        webdav = web = True
    if bool(tls_cert) != bool(tls_key):
        raise InvalidRequest("--tls-cert and --tls-key go together")
    host, port = http.parse_listen(listen)
    credentials = read_credentials(auth_file) if auth_file else None
    http.check_exposure(host, credentials=credentials is not None, tls=bool(tls_cert), insecure=insecure)
    checked = ctx.session(store_location=store_path, libvirt_uri=libvirt_uri, insecure=insecure_libvirt)
    checked.check_libvirt_uri()
    checked.store(create=False)  # a missing or newer store: one line, before listening
    session = Session(checked.store_location, guest_keys=replace(checked.guest_keys, accept_new=accept_new_host_key),
                      store_keys=checked.store_keys, libvirt_uri=libvirt_uri, insecure=insecure_libvirt,
                      frame_cache=FrameCache(cache_size << 20), shared_store=True)
    state = MountState(session.store(create=False), Jobs(session, SessionVm(session)))
    page = None
    if web:
        from vmlfs.webdav.page import WebPage

        page = WebPage(state)
    gate = http.build(state, webdav=webdav, web=page, credentials=credentials)
    server = http.Server(gate, host, port, http.Tls(tls_cert, tls_key) if tls_cert and tls_key else None)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.stop())
    what = " and ".join(w for w, on in (("WebDAV at /", webdav), ("the web page at /web/", web)) if on)

    def ready(url: str) -> None:
        click.echo(f"vmlfs: serving {url} ({what}); Ctrl-C stops", err=True)

    serving_collections()  # what lives now lives as long as the server
    http.serve(state, server, ready)
