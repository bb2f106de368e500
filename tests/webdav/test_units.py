"""The server's pure parts: error statuses, --listen parsing, who may listen where."""

from __future__ import annotations

import pytest

from vmlfs import errors
from vmlfs.webdav.gate import Credentials
from vmlfs.webdav.server import check_exposure, parse_listen
from vmlfs.webdav.status import http_status


@pytest.mark.parametrize("exc, status", [
    (errors.NotFound("x"), 404), (errors.PermissionDenied("x"), 403), (errors.ReadOnly("x"), 403),
    (errors.InvalidRequest("x"), 400), (errors.UnsafePath("x"), 400), (errors.Busy("x"), 409),
    (errors.CorruptData("x"), 500), (errors.UnsupportedVersion("x"), 500), (errors.ConnectionFailed("x"), 502),
    (errors.HostKeyRejected("x"), 502), (errors.HypervisorError("x"), 502), (errors.VmlfsError("x"), 500),
    (RuntimeError("bug"), 500),
])
def test_each_error_has_one_status(exc, status):
    assert http_status(exc) == status


def test_listen_addresses():
    assert parse_listen("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("8765", "localhost:1", "1.2.3.4:99999", "1.2.3.4:x"):
        with pytest.raises(errors.InvalidRequest):
            parse_listen(bad)


def test_exposure_rules():
    check_exposure("127.0.0.1", credentials=False, tls=False, insecure=False)
    check_exposure("::1", credentials=False, tls=False, insecure=False)
    check_exposure("10.0.0.1", credentials=True, tls=True, insecure=False)
    check_exposure("0.0.0.0", credentials=False, tls=False, insecure=True)
    for credentials, tls in ((False, False), (True, False), (False, True)):
        with pytest.raises(errors.InvalidRequest):
            check_exposure("0.0.0.0", credentials=credentials, tls=tls, insecure=False)


def test_basic_credentials():
    import base64

    c = Credentials("alice", "pw:with:colons")
    good = "Basic " + base64.b64encode(b"alice:pw:with:colons").decode()
    assert c.accepts(good)
    assert not c.accepts("Basic " + base64.b64encode(b"alice:pw").decode())
    assert not c.accepts("Basic !!!") and not c.accepts("Bearer x") and not c.accepts("")


def test_status_lines():
    from vmlfs.webdav.status import status_line

    assert [status_line(c) for c in (202, 204, 302, 409)] == ["202 Accepted", "204 No Content", "302 Found", "409 Conflict"]
