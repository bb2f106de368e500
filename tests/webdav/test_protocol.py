"""The raw protocol, through curl against a real ``vmlfs serve``: PROPFIND XML, ranges, refusals, names."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from email.utils import formatdate
from urllib.parse import quote, unquote

import pytest

from tests.fs.conftest import make_store
from tests.webdav.conftest import code, curl
from vmlfs.fs.winnames import to_windows

D = "{DAV:}"
WRITES = ("PUT", "DELETE", "MKCOL", "MOVE", "COPY", "PROPPATCH", "LOCK", "POST")


def propfind(url: str, depth: str) -> dict[str, dict[str, str | None]]:
    """href (unquoted) -> {property: text} of a PROPFIND allprop answer."""
    body = curl("-X", "PROPFIND", "-H", f"Depth: {depth}", url).stdout
    out = {}
    for response in ET.fromstring(body).iter(f"{D}response"):
        props = {}
        for prop in response.iter(f"{D}prop"):
            for child in prop:
                collection = child.find(f"{D}collection") is not None
                props[child.tag.removeprefix(D)] = "collection" if collection else child.text
        out[unquote(response.findtext(f"{D}href"))] = props
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One store with odd names, one server, shared by the read-only tests of this module."""
    from tests.webdav.conftest import start_server

    root = tmp_path_factory.mktemp("dav")
    s = make_store(root)
    for odd in ("a:b?.txt", "CON", "trail.", "nul.tar.gz"):
        (s.home / odd).write_text(f"odd {odd}\n")
    s.ts = s.backup()
    server = start_server(s.store_path, root / "serve.log", "--webdav", "--listen", "127.0.0.1:0")
    yield s, server
    server.stop()


def test_options_advertise_a_read_only_class_1_server(served):
    _, server = served
    headers = curl("-i", "-X", "OPTIONS", server.url).stdout.decode()
    assert "DAV: 1" in headers and "Allow: OPTIONS, HEAD, GET, PROPFIND" in headers


def test_propfind_sizes_mtimes_etags_types(served):
    s, server = served
    home = f"/entries/e1/{s.ts}/home/"
    listing = propfind(server.path(home), "1")
    st = os.stat(s.home / "src" / "main.py")
    main = propfind(server.path(home + "src/main.py"), "0")[home + "src/main.py"]
    assert main["getcontentlength"] == str(st.st_size)
    assert main["getlastmodified"] == formatdate(st.st_mtime_ns // 10**9, usegmt=True)
    assert main["getcontenttype"] == "text/x-python" and main["getetag"]
    leaf = propfind(server.path(home + "src/deep/er/leaf.txt"), "0")
    assert leaf[home + "src/deep/er/leaf.txt"]["getlastmodified"] == formatdate(1_600_000_000, usegmt=True)
    assert listing[home + "src/"]["resourcetype"] == "collection"
    # Every guest name under the Windows mapping; symlinks that leave their directory are left out.
    names = {p.encode() if isinstance(p, str) else p for p in os.listdir(os.fsencode(s.home))}
    shown = {to_windows(n) for n in names if not os.path.islink(s.home / os.fsdecode(n))}
    assert {h[len(home):].rstrip("/") for h in listing if h != home} == shown
    assert "a\uf03ab\uf03f.txt" in shown and "\uf043ON" in shown and "trail\uf02e" in shown
    info = propfind(server.path(f"/entries/e1/{s.ts}/info.json"), "0")
    assert next(iter(info.values()))["getcontenttype"] == "application/json"
    entry = propfind(server.path("/entries/e1/"), "1")
    assert entry["/entries/e1/latest/"]["resourcetype"] == "collection", "latest is served as the newest backup"


def test_depth_infinity_is_refused(served):
    _, server = served
    for depth in (["-H", "Depth: infinity"], []):
        done = curl("-X", "PROPFIND", *depth, "-w", "\n%{http_code}", server.url)
        body, status = done.stdout.rsplit(b"\n", 1)
        assert status == b"403" and b"propfind-finite-depth" in body


def test_get_range_head_and_mapped_names(served):
    s, server = served
    big = server.path(f"/entries/e1/{s.ts}/home/data/big.bin")
    want = (s.home / "data" / "big.bin").read_bytes()
    assert curl("-r", "1048000-1052095", big).stdout == want[1048000:1052096]
    headers = curl("-I", big).stdout.decode()
    assert f"Content-Length: {len(want)}" in headers and "Accept-Ranges: bytes" in headers and "ETag:" in headers
    odd = server.path(f"/entries/e1/{s.ts}/home/" + quote(to_windows(b"a:b?.txt")))
    assert curl(odd).stdout == b"odd a:b?.txt\n"
    assert curl(server.path(f"/entries/e1/{s.ts}/home/a%3Ab%3F.txt")).stdout == b"odd a:b?.txt\n", "raw names work too"


@pytest.mark.parametrize("method", WRITES)
def test_every_writing_method_is_forbidden(served, method):
    s, server = served
    for target in (f"/entries/e1/{s.ts}/home/src/main.py", f"/entries/e1/{s.ts}/home/new-file", "/entries/e1/"):
        assert code("-X", method, "-H", f"Destination: {server.path('/x')}", "--data", "x", server.path(target)) == 403
    assert (s.home / "src" / "main.py").read_text() == "print('hello')\n" * 50


def test_nothing_outside_the_tree_is_reachable(served):
    s, server = served
    for climb in (f"/entries/e1/{s.ts}/home/../../../../etc/passwd", f"/entries/e1/{s.ts}/home/link-to-main",
                  f"/entries/e1/{s.ts}/home/dangling", f"/entries/e1/{s.ts}/home/%2e%2e/?tar"):
        assert code("--path-as-is", server.path(climb)) == 404, climb
    assert code("--path-as-is", server.path("/entries/%2e%2e/%2e%2e/etc/passwd")) == 404
    assert code("--path-as-is", "-X", "PUT", "--data", "full", server.path("/entries/e1/control/../control/snapshot")) == 404


def test_propfind_bodies_prop_lists_propname_and_etags_agree_with_get(served):
    s, server = served
    url = server.path(f"/entries/e1/{s.ts}/home/src/main.py")
    asked = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/><D:getetag/>'
             '</D:prop></D:propfind>')
    body = curl("-X", "PROPFIND", "-H", "Depth: 0", "--data", asked, url).stdout.decode()
    assert "<D:getcontentlength>750</D:getcontentlength>" in body and "getlastmodified" not in body
    etag = curl("-I", url).stdout.decode().split("ETag: ", 1)[1].split("\r\n", 1)[0]
    assert f"<D:getetag>{etag}</D:getetag>" in body, "the PROPFIND ETag is the GET ETag, quoted"
    names = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>'
    listed = curl("-X", "PROPFIND", "-H", "Depth: 0", "--data", names, url).stdout.decode()
    assert "getcontentlength" in listed and "750" not in listed, "propname: names without values"
    unknown = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:X="urn:x"><D:prop><X:color/></D:prop>'
               '</D:propfind>')
    assert "404" in curl("-X", "PROPFIND", "-H", "Depth: 0", "--data", unknown, url).stdout.decode()
    bomb = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
            '<D:propfind xmlns:D="DAV:"><D:prop>&b;</D:prop></D:propfind>')
    assert code("-X", "PROPFIND", "-H", "Depth: 0", "--data", bomb, url) in (400, 403, 415, 500)
