"""vmlfs errors as HTTP status codes: the one place the WebDAV server and the web page map them.

The FUSE adapter answers an errno; here the same errors answer a status, chosen
by the error's class (the most specific class listed wins, so ``UnsafePath``
is a 400 as an ``InvalidRequest``):

=================================  =====  ==========================================
NotFound                           404    no such node
PermissionDenied, ReadOnly         403    the request is understood and refused
InvalidRequest (UnsafePath)        400    a malformed control request, a bad name
Busy                               409    the entry is backing up (a conflict, retry later)
CorruptData, UnsupportedVersion    500    stored data this server cannot serve
ConnectionFailed, HypervisorError  502    a store over SSH or libvirtd failed us
anything else                      500
=================================  =====  ==========================================
"""

from __future__ import annotations

from http import HTTPStatus

from vmlfs.errors import (
    Busy,
    ConnectionFailed,
    CorruptData,
    HypervisorError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ReadOnly,
    UnsupportedVersion,
)

STATUS = {
    NotFound: 404,
    PermissionDenied: 403,
    ReadOnly: 403,
    InvalidRequest: 400,
    Busy: 409,
    CorruptData: 500,
    UnsupportedVersion: 500,
    ConnectionFailed: 502,
    HypervisorError: 502,
}


def http_status(exc: BaseException) -> int:
    """The status answering ``exc``: by its nearest listed class, else 500."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def status_line(code: int) -> str:
    """``"202 Accepted"``: the status line WSGI's ``start_response`` wants."""
    return f"{code} {HTTPStatus(code).phrase}"
