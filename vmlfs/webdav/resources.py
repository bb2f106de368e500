"""The tree model as WsgiDAV resources: one provider, one collection class, one file class.

* Paths are walked from the mount's root one component at a time through
  ``FsNode.lookup``; each component is a name as :mod:`vmlfs.fs.winnames`
  shows it, so names Windows cannot hold are served under the same reversible
  mapping as the WinFsp bridge. ``.`` and ``..`` never reach a lookup, so no
  request leaves the tree.
* WebDAV has no symlinks: :func:`vmlfs.fs.links.follow` serves a symlink to
  a sibling (``latest``) as that sibling and leaves every other one out, as
  borg's WebDAV server does, so a client is never led outside the tree.
* Listings come page by page from ``FsNode.listing()`` and become resources
  directly, without a lookup per member: a PROPFIND of a directory of 10,000
  files is one pass over the manifest.
* Files of committed backups (``immutable``) stream through their
  :class:`~vmlfs.fs.protocol.Handle` with ranges, so a range decompresses
  only the frames covering it; other files (``status``, control files, ``vm/``)
  are read whole at the first request, so their length and content agree.
* Every vmlfs error becomes a ``DAVError`` with the status of
  :mod:`vmlfs.webdav.status`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import mimetypes
import stat
from typing import Iterator

from wsgidav.dav_error import DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from vmlfs.errors import NotFound, VmlfsError
from vmlfs.fs.links import follow
from vmlfs.fs.protocol import Attrs, FsNode, Handle
from vmlfs.fs.state import MountState
from vmlfs.fs.winnames import from_windows, to_windows
from vmlfs.webdav import propfind
from vmlfs.webdav.status import http_status

log = logging.getLogger(__name__)

PAGE = 1024


@contextlib.contextmanager
def dav_errors(what: str) -> Iterator[None]:
    """Turn a vmlfs error (or a store's OSError) into the DAVError WsgiDAV answers with."""
    try:
        yield
    except DAVError:
        raise
    except VmlfsError as exc:
        log.debug("%s: %s", what, exc)
        raise DAVError(http_status(exc), context_info=exc.message) from None
    except OSError as exc:
        log.warning("%s: %s", what, exc)
        raise DAVError(500, context_info="the store failed to answer") from None


def split(path: str) -> list[str]:
    """The components of a request path; NotFound for '.' or '..' (nothing climbs out of the tree)."""
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise NotFound(f"{path}: '.' and '..' are not served")
    return parts


def walk(root: FsNode, path: str) -> FsNode:
    """The node at a request path (Windows names), following only sibling symlinks."""
    node = root
    for part in split(path):
        name = from_windows(part)
        if b"/" in name or b"\0" in name:
            raise NotFound(f"{part!r}: no such name")
        node = follow(node, node.lookup(name))
    return node


def members(node: FsNode) -> Iterator[tuple[str, FsNode]]:
    """The served children of a directory (Windows names), symlinks followed or left out as above."""
    listing = node.listing()
    offset = 0
    while True:
        batch = listing.entries(offset, PAGE)
        if not batch:
            return
        for next_offset, name, child in batch:
            try:
                yield to_windows(name), follow(node, child)
            except NotFound:
                pass
            offset = next_offset


def read_all(handle: Handle) -> bytes:
    """A small file's whole content (read until a read returns nothing)."""
    out = bytearray()
    while chunk := handle.read(len(out), 1 << 20):
        out += chunk
    return bytes(out)


class HandleFile(io.RawIOBase):
    """A seekable file object over a :class:`Handle` (what WsgiDAV reads GET bodies from)."""

    def __init__(self, handle: Handle, size: int) -> None:
        super().__init__()
        self.handle, self.size, self.pos = handle, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, size: int = -1) -> bytes:
        size = self.size - self.pos if size is None or size < 0 else min(size, self.size - self.pos)
        if size <= 0:
            return b""
        data = self.handle.read_cached(self.pos, size)
        if data is None:
            with dav_errors("read"):
                data = self.handle.read(self.pos, size)
        if data:
            self.handle.readahead(self.pos, self.pos + len(data))
        self.pos += len(data)
        return bytes(data)


def content_type(name: str, node: FsNode) -> str:
    guessed = mimetypes.guess_type(name, strict=False)[0]
    if guessed:
        return guessed
    # Only the virtual files change (status, control files, vm/tree): all of them are text.
    return "application/octet-stream" if node.immutable else "text/plain; charset=utf-8"


def etag(a: Attrs) -> str:
    return f"{a.ino:x}-{a.size:x}-{a.mtime_ns:x}"


class _Common:
    """What files and directories share: times and ETags from the node's attributes."""

    def __init__(self, path: str, environ: dict, node: FsNode, attrs: Attrs) -> None:
        super().__init__(path, environ)  # type: ignore[call-arg]  (the WsgiDAV resource class after this one)
        self.node, self.attrs = node, attrs

    def get_creation_date(self) -> float:
        return self.attrs.mtime_ns / 1e9

    def get_last_modified(self) -> float:
        return self.attrs.mtime_ns / 1e9

    def get_etag(self) -> str | None:
        return etag(self.attrs) if self.node.immutable else None

    def support_etag(self) -> bool:
        return self.node.immutable


class NodeDir(_Common, DAVCollection):
    def get_member_names(self) -> list[str]:
        with dav_errors(self.path):
            return [name for name, _ in members(self.node)]

    def get_member(self, name: str):
        with dav_errors(self.path):
            try:
                child = follow(self.node, self.node.lookup(from_windows(name)))
            except NotFound:
                return None
        return resource(self.path.rstrip("/") + "/" + name, self.environ, child)

    def get_member_list(self) -> list:
        base = self.path.rstrip("/") + "/"
        with dav_errors(self.path):
            return [resource(base + name, self.environ, child) for name, child in members(self.node)]


class NodeFile(_Common, DAVNonCollection):
    _content: bytes | None = None
    _type: str | None = None

    def _fixed(self) -> bytes:
        """A changing file's content, read once per request so its length and bytes agree."""
        if self._content is None:
            with dav_errors(self.path):
                self._content = read_all(self.node.open_read())
        return self._content

    def get_content_length(self) -> int:
        return self.attrs.size if self.node.immutable else len(self._fixed())

    def get_content_type(self) -> str:
        if self._type is None:  # asked several times per PROPFIND entry
            self._type = content_type(self.name, self.node)
        return self._type

    def support_ranges(self) -> bool:
        return True

    def get_content(self):
        if not self.node.immutable:
            return io.BytesIO(self._fixed())
        with dav_errors(self.path):
            return HandleFile(self.node.open_read(), self.attrs.size)


def resource(path: str, environ: dict, node: FsNode):
    attrs = node.attrs()
    return (NodeDir if stat.S_ISDIR(attrs.mode) else NodeFile)(path, environ, node, attrs)


class TreeProvider(DAVProvider):
    """Serves one :class:`MountState`'s tree at ``/``, read-only (writes are the gate's business)."""

    def __init__(self, state: MountState) -> None:
        super().__init__()
        self.state = state

    def is_readonly(self) -> bool:
        return True

    def custom_request_handler(self, environ: dict, start_response, default_handler):
        """PROPFIND of live properties is rendered in one pass (:mod:`vmlfs.webdav.propfind`); the rest is WsgiDAV's."""
        if environ["REQUEST_METHOD"] == "PROPFIND":
            return propfind.handle(environ, start_response, self.get_resource_inst, default_handler)
        return default_handler(environ, start_response)

    def get_resource_inst(self, path: str, environ: dict):
        with dav_errors(path):
            try:
                node = walk(self.state.root, path)
            except NotFound:
                return None
            return resource(path, environ, node)
