"""Listening: where, with which protection, and the cheroot server that runs the gate.

Safe by default (docs/webdav.md, "Listening"):

* the default address is ``127.0.0.1:8765``: only this machine's users reach it;
* any address that is not loopback needs credentials (a password or token
  file) **and** TLS (a certificate and key), because HTTP Basic sends the
  password in clear; or an explicit ``insecure=True``, which the CLI's
  ``--insecure`` sets and which is the user's own decision.

cheroot runs the WSGI application in a pool of threads, so model calls that
touch the store (lookups, listings, frame decompression) block only their
own request. :func:`serve` returns when :meth:`Server.stop` is called (the
CLI calls it on SIGINT/SIGTERM), then closes the mount state.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from typing import Callable

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from wsgidav.wsgidav_app import WsgiDAVApp

from vmlfs.errors import InvalidRequest
from vmlfs.fs.state import MountState
from vmlfs.webdav.gate import Credentials, Gate, WSGIApp
from vmlfs.webdav.resources import TreeProvider

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8765"
THREADS = 16
BLOCK = 256 << 10  # bytes per read of a GET body: a quarter frame, few calls per MiB


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (``[::1]:8765`` for IPv6) as (address, port); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidRequest(f"--listen {text!r}: expected ADDRESS:PORT, e.g. {DEFAULT_LISTEN}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InvalidRequest(f"--listen {text!r}: {host!r} is not an IP address") from None
    return host, int(port)


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def check_exposure(host: str, *, credentials: bool, tls: bool, insecure: bool) -> None:
    """Refuse to listen beyond this machine without both a password and TLS, unless told ``insecure``."""
    if is_loopback(host) or insecure or (credentials and tls):
        return
    missing = " and ".join(m for m, ok in (("a password file", credentials), ("TLS", tls)) if not ok)
    raise InvalidRequest(f"listening on {host}, which is not loopback, needs {missing}",
                         hint="give --auth-file FILE --tls-cert CERT --tls-key KEY, or --insecure if you mean it")


def dav_app(state: MountState) -> WSGIApp:
    """WsgiDAV over the tree: class 1 (no locks), no dead properties, no authentication of its own."""
    return WsgiDAVApp({
        "provider_mapping": {"/": TreeProvider(state)},
        "simple_dc": {"user_mapping": {"*": True}},  # the gate authenticates
        "http_authenticator": {"domain_controller": None, "accept_basic": False, "accept_digest": False,
                               "default_to_digest": False},
        "lock_storage": None,
        "property_manager": None,
        "add_header_MS_Author_Via": False,
        "block_size": BLOCK,
        "verbose": 1,
        "logging": {"enable": False},
        "dir_browser": {"enable": True, "icon": False, "davmount": False, "ms_sharepoint_support": False,
                        "libre_office_support": False, "response_trailer": "vmlfs: backups, read-only"},
    })


@dataclass(frozen=True)
class Tls:
    cert: str
    key: str


class Server:
    """One listening socket serving the gate; ``url`` is known once :meth:`bind` returned."""

    def __init__(self, app: WSGIApp, host: str, port: int, tls: Tls | None = None) -> None:
        self.server = wsgi.Server((host, port), app, numthreads=THREADS, server_name="vmlfs")
        if tls is not None:
            self.server.ssl_adapter = BuiltinSSLAdapter(tls.cert, tls.key)
        self.scheme = "https" if tls else "http"
        self._stopped = threading.Event()

    def bind(self) -> str:
        """Open the socket (a taken port fails here, before anything is served); the URL it answers at."""
        try:
            self.server.prepare()
        except OSError as exc:
            raise InvalidRequest(f"cannot listen on {self.server.bind_addr}: {exc.strerror or exc}") from None
        host, port = self.server.bind_addr[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{port}/"

    def run(self) -> None:
        """Serve until :meth:`stop` (from another thread or a signal handler)."""
        thread = threading.Thread(target=self.server.serve, name="vmlfs-http", daemon=True)
        thread.start()
        self._stopped.wait()
        self.server.stop()
        thread.join(10)

    def stop(self) -> None:
        self._stopped.set()


def build(state: MountState, *, webdav: bool, web: WSGIApp | None, credentials: Credentials | None) -> Gate:
    return Gate(state, dav_app(state) if webdav else None, web=web, credentials=credentials)


def serve(state: MountState, server: Server, on_ready: Callable[[str], None] | None = None) -> None:
    """Bind, announce the URL, serve until stopped; then close the mount state."""
    try:
        url = server.bind()
        if on_ready is not None:
            on_ready(url)
        server.run()
    finally:
        for entry in state.active_jobs():
            log.warning("stopped while %s runs: that job is abandoned (the next backup cleans up)", entry)
        state.close()
