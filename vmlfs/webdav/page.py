"""The logbook's web page (``vmlfs serve --web``, at ``/web/``): entries, backups, a tree to browse, actions.

Reads go through the mount's tree model (what a backup holds, ``info.json``,
``status``) and the store's listings (entries and their backups, one page of
metadata at a time, so an entry with 500 backups renders as fast as one with
five). Actions are POSTs with the server's CSRF token, and each is a write
into a control file through :func:`vmlfs.webdav.gate.request_control`, the
path a write through the mount takes (the same validation, the same jobs,
the same status):

=================================  =============================================
POST /web/e/<entry>/backup kind    ``entries/<entry>/control/snapshot``
POST /web/e/<entry>/vm-snapshot    ``entries/<entry>/control/vm-snapshot`` (touch)
POST /web/provision target         ``/control/provision`` (``NAME@TS``)
=================================  =============================================

Progress and the last result are on the entry page, polled from
``/web/e/<entry>/status``.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import stat
from datetime import datetime, timezone
from typing import Callable, Iterable
from urllib.parse import parse_qs, quote

from vmlfs.errors import InvalidRequest, NotFound, PermissionDenied, VmlfsError
from vmlfs.fs.protocol import FsNode
from vmlfs.fs.state import MountState
from vmlfs.webdav import html
from vmlfs.webdav.gate import reply, request_control, request_path
from vmlfs.webdav.resources import content_type, members, read_all, walk
from vmlfs.webdav.status import http_status
from vmlfs.webdav.tarstream import tar_stream

log = logging.getLogger(__name__)

PER_PAGE = 100
VERSIONS = 50  # backups searched for a file's versions (each opens that backup's manifest)
MAX_FORM = 4096
CHUNK = 1 << 20
HTML = "text/html; charset=utf-8"


def utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


class WebPage:
    """The WSGI application behind ``/web/``."""

    def __init__(self, state: MountState) -> None:
        self.state = state
        self.store = state.store
        self.token = secrets.token_urlsafe(32)
        """The CSRF token: another site's page can post here but cannot read it from ours."""

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = request_path(environ).removeprefix("/web")
        method = environ["REQUEST_METHOD"].upper()
        try:
            if method == "POST":
                return self.post(environ, start_response, path)
            if method not in ("GET", "HEAD"):
                return reply(start_response, 405, b"GET, HEAD or POST\n", [("Allow", "GET, HEAD, POST")])
            return self.get(environ, start_response, path)
        except VmlfsError as exc:
            code = http_status(exc)
            body = html.page("Refused" if code < 500 else "Error", f"<p>{html.e(exc.message)}</p>"
                             f"<p>{html.e(exc.hint)}</p><p><a href='javascript:history.back()'>back</a></p>")
            return reply(start_response, code, body, content_type=HTML)

    # reading ---------------------------------------------------------------------------

    def get(self, environ: dict, start_response: Callable, path: str) -> Iterable[bytes]:
        parts = path.strip("/").split("/") if path.strip("/") else []  # PATH_INFO is already unquoted
        if path in ("", "/"):
            return reply(start_response, 200, self.entries(), content_type=HTML)
        if parts == ["status"]:
            return reply(start_response, 200, self.state.jobs.status(None))
        if parts[0] in ("file", "tree", "tar", "versions"):
            tree_path = path.split("/", 2)[2] if len(parts) > 1 else ""
            return getattr(self, parts[0])(environ, start_response, "/" + tree_path)
        if parts[0] == "e" and len(parts) == 3 and parts[2] == "status":
            return reply(start_response, 200, self.state.jobs.status(parts[1]))
        if parts[0] == "e" and len(parts) == 2:
            start = parse_qs(environ.get("QUERY_STRING", "")).get("from", ["0"])[0]
            return reply(start_response, 200, self.entry(parts[1], int(start) if start.isdigit() else 0),
                         content_type=HTML)
        if parts[0] == "e" and len(parts) == 3:
            return reply(start_response, 200, self.backup(parts[1], parts[2]), content_type=HTML)
        raise NotFound(f"no page {path}")

    def entries(self) -> bytes:
        rows = []
        for name in self.store.entry_names():
            cfg = self.store.load_entry(name)
            rows.append((name, cfg.release, cfg.domain, len(self.store.timestamps(name))))
        return html.entries_page(rows, self.token, self.state.jobs.status(None).decode())

    def entry(self, name: str, start: int) -> bytes:
        cfg = self.store.load_entry(name)
        stamps = list(reversed(self.store.timestamps(name)))  # newest first
        shown = []
        for ts in stamps[start:start + PER_PAGE]:
            meta = self.store.backup_record(name, ts).meta
            shown.append({"timestamp": ts, "kind": meta.kind if meta else "damaged",
                          "bytes": meta.stats.get("bytes") if meta else None,
                          "duration": meta.duration_s if meta else None,
                          "release": meta.release if meta else None, "vm_snapshot": meta.vm_snapshot if meta else None})
        return html.entry_page(name, cfg.release, cfg.domain, shown, self.token,
                               self.state.jobs.status(name).decode(), start, len(stamps), PER_PAGE)

    def backup(self, entry: str, ts: str) -> bytes:
        node = walk(self.state.root, f"/entries/{entry}/{ts}")
        names = [name for name, _ in members(node)]
        info = json.loads(read_all(walk(node, "info.json").open_read()))
        return html.backup_page(entry, ts, info, [n for n in names if n in ("env.txt", "history.txt", "info.json")])

    def tree(self, environ: dict, start_response: Callable, path: str) -> list[bytes]:
        node = walk(self.state.root, path)
        if not stat.S_ISDIR(node.attrs().mode):
            raise InvalidRequest(f"{path} is not a directory")
        rows = []
        for name, child in members(node):
            a = child.attrs()
            rows.append((name, stat.S_ISDIR(a.mode), a.size, utc(a.mtime_ns)))
        return reply(start_response, 200, html.tree_page(path, rows), content_type=HTML)

    def file(self, environ: dict, start_response: Callable, path: str) -> Iterable[bytes]:
        node = walk(self.state.root, path)
        a = node.attrs()
        if not stat.S_ISREG(a.mode):
            raise InvalidRequest(f"{path} is not a file")
        name = path.rsplit("/", 1)[-1]
        kind = content_type(name, node)
        headers = [("Content-Type", kind)]
        if not kind.startswith(("text/", "application/json")):
            headers.append(("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name)}"))
        if not node.immutable:
            data = read_all(node.open_read())
            start_response("200 OK", headers + [("Content-Length", str(len(data)))])
            return [data]
        start_response("200 OK", headers + [("Content-Length", str(a.size))])
        if environ["REQUEST_METHOD"].upper() == "HEAD":
            return [b""]
        return self._stream(node, a.size)

    @staticmethod
    def _stream(node: FsNode, size: int) -> Iterable[bytes]:
        handle = node.open_read()
        for offset in range(0, size, CHUNK):
            data = handle.read(offset, min(CHUNK, size - offset))
            handle.readahead(offset, offset + len(data))
            yield bytes(data)

    def versions(self, environ: dict, start_response: Callable, path: str) -> list[bytes]:
        """The same path in the entry's newest :data:`VERSIONS` backups: changed, the same as the next older, or absent."""
        where = path.split("/", 4)
        if len(where) != 5 or where[1] != "entries" or not where[4].startswith("home/"):
            raise InvalidRequest("versions are shown for files below a backup's home")
        entry, rest = where[2], where[4]
        rows: list[tuple[str, str, int | None, str]] = []
        for ts in reversed(self.store.timestamps(entry)[-VERSIONS:]):
            try:
                a = walk(self.state.root, f"/entries/{entry}/{ts}/{rest}").attrs()
            except NotFound:
                rows.append((ts, "absent", None, ""))
                continue
            rows.append((ts, "", a.size, utc(a.mtime_ns)))
        for i, (ts, state, nbytes, mtime) in enumerate(rows):  # compared with the next older backup
            if state != "absent":
                older = rows[i + 1] if i + 1 < len(rows) else None
                same = older is not None and older[2:] == (nbytes, mtime)
                rows[i] = (ts, "same as the older" if same else "changed" if older and older[1] != "absent" else "new",
                           nbytes, mtime)
        return reply(start_response, 200, html.versions_page(path, rows, VERSIONS), content_type=HTML)

    def tar(self, environ: dict, start_response: Callable, path: str) -> Iterable[bytes]:
        node = walk(self.state.root, path)
        if not stat.S_ISDIR(node.attrs().mode):
            raise InvalidRequest(f"{path} is not a directory")
        name = path.rstrip("/").rsplit("/", 1)[-1] or "vmlfs"
        start_response("200 OK", [("Content-Type", "application/x-tar"),
                                  ("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name)}.tar")])
        return tar_stream(node, name.encode())

    # actions -----------------------------------------------------------------------------

    def post(self, environ: dict, start_response: Callable, path: str) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > MAX_FORM:
            raise InvalidRequest("form too large")
        form = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace")) if length else {}
        if not hmac.compare_digest(form.get("csrf", [""])[0].encode(), self.token.encode()):
            raise PermissionDenied("missing or wrong CSRF token: reload the page and try again")
        parts = path.strip("/").split("/")
        if parts == ["provision"]:
            target = form.get("target", [""])[0]
            request_control(self.state, "/control/provision", target.encode())
            back = "/web/"
        elif len(parts) == 3 and parts[0] == "e" and parts[2] == "backup":
            kind = form.get("kind", ["default"])[0]
            request_control(self.state, f"/entries/{parts[1]}/control/snapshot", b"" if kind == "default" else kind.encode())
            back = html.url("e", parts[1], trailing=True)
        elif len(parts) == 3 and parts[0] == "e" and parts[2] == "vm-snapshot":
            request_control(self.state, f"/entries/{parts[1]}/control/vm-snapshot", b"")
            back = html.url("e", parts[1], trailing=True)
        else:
            raise NotFound(f"no action {path}")
        start_response("303 See Other", [("Location", back), ("Content-Length", "0")])
        return [b""]
