"""The front of the server: who may ask, which methods exist, and the few requests WsgiDAV does not serve.

In order, for every request:

1. **Authentication**, when credentials were given: HTTP Basic, compared in
   constant time; anything else is a 401 with a ``WWW-Authenticate``
   challenge. (Basic is only safe over TLS, which is why a server on a
   non-loopback address needs both; see :mod:`vmlfs.webdav.server`.)
2. **The web page** (``/web/...``), when it is served.
3. A path with a ``.`` or ``..`` component is a 404, whatever the method:
   nothing is served from outside the tree, or by a detour through it.
4. **Control files**: a PUT or POST to a control file takes the same path as
   a write through the mount. A body is written to the node's
   :meth:`~vmlfs.fs.protocol.FsNode.open_write` handle and flushed; an empty
   body is a ``touch`` (``setattr`` with new times). The :data:`Work` that
   comes back runs in a thread of its own; the answer is 202 and the outcome
   shows in ``control/status``. A PUT or POST anywhere else meets the node's
   own refusal (``ReadOnly``: 403).
5. **Every other writing method** (DELETE, MKCOL, COPY, MOVE, PROPPATCH, LOCK,
   UNLOCK, PATCH) is a 403: the tree is read-only.
6. ``PROPFIND`` with ``Depth: infinity`` (or no Depth, which means infinity)
   is a 403 with the RFC 4918 ``propfind-finite-depth`` condition: one request
   must not walk every backup.
7. ``GET dir?tar`` streams the directory as a tar (:mod:`vmlfs.webdav.tarstream`).
8. Everything else (OPTIONS, HEAD, GET with ranges, PROPFIND depth 0 and 1)
   is WsgiDAV's, over :class:`vmlfs.webdav.resources.TreeProvider`.
"""

from __future__ import annotations

import base64
import hmac
import logging
import stat
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from vmlfs.errors import InvalidRequest, NotFound, ReadOnly, VmlfsError
from vmlfs.fs.protocol import Work
from vmlfs.fs.state import MountState
from vmlfs.fs.winnames import from_windows
from vmlfs.webdav.resources import split, walk
from vmlfs.webdav.status import http_status, status_line
from vmlfs.webdav.tarstream import tar_stream

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
WRITES = frozenset({"PUT", "POST", "DELETE", "MKCOL", "COPY", "MOVE", "PROPPATCH", "LOCK", "UNLOCK", "PATCH"})
MAX_BODY = 4096  # a control request is one word; anything longer is refused unread
WEB_PREFIX = "/web"
FINITE_DEPTH = (b'<?xml version="1.0" encoding="utf-8"?>\n'
                b'<D:error xmlns:D="DAV:"><D:propfind-finite-depth/></D:error>\n')


@dataclass(frozen=True)
class Credentials:
    """The one user and password (or token) a server accepts, read from a file by the CLI."""

    user: str
    password: str

    def accepts(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        # Both compared, always: the time taken says nothing about which one was wrong.
        return hmac.compare_digest(user.encode(), self.user.encode()) & hmac.compare_digest(
            password.encode(), self.password.encode())


def request_path(environ: dict) -> str:
    """PATH_INFO as text: WSGI hands it over as latin-1 code points of the URL's UTF-8 bytes."""
    return environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace")


def reply(start_response: Callable, code: int, body: bytes = b"", headers: list | None = None,
          content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
    start_response(status_line(code), [("Content-Type", content_type), ("Content-Length", str(len(body)))]
                   + (headers or []))
    return [body]


def request_control(state: MountState, path: str, body: bytes) -> bool:
    """Write ``body`` to the control file at ``path`` as the mount does (empty: a touch); whether a job started.

    ``open_write``, ``write`` and ``flush`` (or ``setattr`` for a touch) check
    the request exactly as for a write through FUSE; the :data:`Work` that
    comes back runs in a thread of its own and records its outcome in status.
    """
    try:
        node = walk(state.root, path)
    except NotFound:
        raise ReadOnly("nothing can be created: backups are read-only") from None
    uid = state.owner_uid  # whoever passed the gate acts as the user serving the store
    if body:
        handle = node.open_write(uid)
        handle.write(body)
        work = handle.flush()
    else:
        work = node.setattr(uid, times=True, truncate=False, other=False)
    if work is None:
        return False
    start_work(work)
    return True


def start_work(work: Work) -> None:
    """A job's blocking part, in a thread of its own (it records its outcome; it never raises)."""
    threading.Thread(target=work, name="vmlfs-job", daemon=True).start()


class Gate:
    """The WSGI application ``vmlfs serve`` runs: policy first, then WsgiDAV (and the web page)."""

    def __init__(self, state: MountState, dav: WSGIApp | None, *, web: WSGIApp | None = None,
                 credentials: Credentials | None = None) -> None:
        self.state, self.dav, self.web, self.credentials = state, dav, web, credentials

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self.credentials and not self.credentials.accepts(environ.get("HTTP_AUTHORIZATION", "")):
            return reply(start_response, 401, b"authentication required\n",
                         [("WWW-Authenticate", 'Basic realm="vmlfs", charset="UTF-8"')])
        path, method = request_path(environ), environ["REQUEST_METHOD"].upper()
        if self.web is not None and (path == WEB_PREFIX or path.startswith(WEB_PREFIX + "/")):
            return self.web(environ, start_response)
        if self.dav is None:  # only the page is served: send browsers there
            if path == "/" and method in ("GET", "HEAD"):
                return reply(start_response, 302, b"", [("Location", WEB_PREFIX + "/")])
            return reply(start_response, 404, b"only the web page is served here, at /web/\n")
        try:
            split(path)  # '.' or '..' anywhere: 404 here, before any handler sees the path
            if method in ("PUT", "POST"):
                return self.control(environ, start_response, path)
            if method in WRITES:
                return reply(start_response, 403, b"vmlfs serves backups read-only\n")
            if method == "PROPFIND" and environ.get("HTTP_DEPTH", "infinity").lower() not in ("0", "1"):
                return reply(start_response, 403, FINITE_DEPTH, content_type="application/xml; charset=utf-8")
            if method in ("GET", "HEAD") and environ.get("QUERY_STRING", "") == "tar":
                return self.tar(environ, start_response, path)
        except VmlfsError as exc:
            return reply(start_response, http_status(exc), f"{exc.message}\n".encode())
        except OSError as exc:
            log.warning("%s %s: %s", method, path, exc)
            return reply(start_response, 500, b"the store failed to answer\n")
        return self.dav(environ, start_response)

    def control(self, environ: dict, start_response: Callable, path: str) -> list[bytes]:
        """A PUT or POST: a request to a control file, exactly as the mount's writes and touches."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise InvalidRequest("bad Content-Length") from None
        if length > MAX_BODY:
            raise InvalidRequest(f"a control request is one word, not {length} bytes")
        body = environ["wsgi.input"].read(length) if length else b""
        if not request_control(self.state, path, body):
            return reply(start_response, 204)
        return reply(start_response, 202, b"started; see control/status\n")

    def tar(self, environ: dict, start_response: Callable, path: str) -> Iterable[bytes]:
        node = walk(self.state.root, path)
        if not stat.S_ISDIR(node.attrs().mode):
            raise InvalidRequest("?tar is for directories; GET the file itself")
        parts = split(path)
        name = from_windows(parts[-1]) if parts else b"vmlfs"
        shown = name.decode("ascii", "replace").replace('"', "_")
        start_response("200 OK", [("Content-Type", "application/x-tar"),
                                  ("Content-Disposition", f'attachment; filename="{shown}.tar"')])
        if environ["REQUEST_METHOD"].upper() == "HEAD":
            return [b""]
        return self._logged(tar_stream(node, name), path)

    @staticmethod
    def _logged(chunks: Iterable[bytes], path: str) -> Iterable[bytes]:
        try:
            yield from chunks
        except Exception as exc:  # noqa: BLE001  (headers are sent: the truncated tar is the error)
            log.error("tar of %s cut short: %s", path, exc)
            raise
