"""PROPFIND of the live properties, rendered directly: the one request WsgiDAV's generic path makes slow.

WsgiDAV answers a PROPFIND by asking every resource for every property name
through its property and lock machinery (several URL quotings and lookups
per property), about 70 µs per entry here: a directory of 10,000 files took
twice as long as listing it through the FUSE mount. Our properties are all
live and come from one :class:`~vmlfs.fs.protocol.Attrs` value, so the
provider's ``custom_request_handler`` hook (WsgiDAV's own extension point)
renders them in one pass when a request asks for ``allprop`` (an empty body
counts), ``propname`` or a ``prop`` list of only these properties. Everything
else (dead or unknown properties, a missing resource) goes on to WsgiDAV
unchanged, with the body put back.
"""

from __future__ import annotations

import io
from email.utils import formatdate
from time import gmtime, strftime
from typing import Callable, Iterable
from urllib.parse import quote
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from defusedxml.ElementTree import ParseError, fromstring

LIVE = ("resourcetype", "creationdate", "getlastmodified", "displayname", "getetag", "getcontentlength",
        "getcontenttype")
MAX_BODY = 1 << 16
PROPNAME = ("propname",)  # the request for names only (a sentinel, compared by identity)
BATCH = 512  # responses per piece of the body: one chunk of about 400 KB, not one per entry
SAFE = "/!*'(),$-_|.~"  # what WsgiDAV leaves unquoted in hrefs (Nautilus chokes on '%28')


def requested(body: bytes) -> tuple[str, ...] | None:
    """The live properties a PROPFIND body asks for, or None if it asks for anything else."""
    if not body.strip():
        return LIVE
    try:
        root = fromstring(body)
    except (ParseError, ValueError):
        return None
    children = [c for c in root if isinstance(c, Element) and isinstance(c.tag, str)]
    if root.tag != "{DAV:}propfind" or len(children) != 1:
        return None
    what = children[0]
    if what.tag == "{DAV:}allprop":
        return LIVE
    if what.tag == "{DAV:}propname":
        return PROPNAME
    if what.tag != "{DAV:}prop":
        return None
    names = tuple(c.tag for c in what if isinstance(c.tag, str))
    if not names or not all(n.startswith("{DAV:}") and n[6:] in LIVE for n in names):
        return None
    return tuple(n[6:] for n in names)


def _props(res, names: tuple[str, ...]) -> str:
    a, directory = res.attrs, res.is_collection
    if names is PROPNAME:
        own = [n for n in LIVE if not (n == "getetag" and not res.node.immutable)
               and not (directory and n in ("getcontentlength", "getcontenttype"))]
        return "".join(f"<D:{n}/>" for n in own)
    out = []
    for name in names:
        if name == "resourcetype":
            out.append("<D:resourcetype><D:collection/></D:resourcetype>" if directory else "<D:resourcetype/>")
        elif name == "creationdate":
            out.append(f"<D:creationdate>{strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(a.mtime_ns // 10**9))}</D:creationdate>")
        elif name == "getlastmodified":
            out.append(f"<D:getlastmodified>{formatdate(a.mtime_ns // 10**9, usegmt=True)}</D:getlastmodified>")
        elif name == "displayname":
            out.append(f"<D:displayname>{escape(res.name)}</D:displayname>")
        elif name == "getetag" and res.node.immutable:
            out.append(f'<D:getetag>"{res.get_etag()}"</D:getetag>')
        elif name == "getcontentlength" and not directory:
            out.append(f"<D:getcontentlength>{res.get_content_length()}</D:getcontentlength>")
        elif name == "getcontenttype" and not directory:
            out.append(f"<D:getcontenttype>{escape(res.get_content_type())}</D:getcontenttype>")
    return "".join(out)


def render(resources: Iterable, names: tuple[str, ...]) -> Iterable[bytes]:
    """A 207 multistatus body, one response per resource, sent in pieces of :data:`BATCH` responses."""
    piece = ['<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">']
    for res in resources:
        href = quote(res.get_preferred_path(), safe=SAFE)
        piece.append(f"<D:response><D:href>{href}</D:href><D:propstat><D:prop>{_props(res, names)}</D:prop>"
                     "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>")
        if len(piece) >= BATCH:
            yield "".join(piece).encode()
            piece = []
    piece.append("</D:multistatus>\n")
    yield "".join(piece).encode()


def handle(environ: dict, start_response: Callable, resource_at: Callable, default: Callable) -> Iterable[bytes]:
    """Answer a PROPFIND of live properties at depth 0 or 1, or hand it to WsgiDAV (``default``)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if 0 < length <= MAX_BODY else b""
    environ["wsgi.input"] = io.BytesIO(body)  # for WsgiDAV, should it answer after all
    names = requested(body) if length <= MAX_BODY else None
    res = resource_at(environ["PATH_INFO"], environ) if names else None
    if names is None or res is None or environ.get("HTTP_DEPTH") not in ("0", "1"):
        return default(environ, start_response)
    found = [res] + (res.get_member_list() if res.is_collection and environ["HTTP_DEPTH"] == "1" else [])
    start_response("207 Multi-Status", [("Content-Type", "application/xml; charset=utf-8"), ("DAV", "1")])
    return render(found, names)
