"""A fake CernVM release repository served on 127.0.0.1, laid out like cernvm.cern.ch/releases.

Small synthetic images (a few hundred KiB) use the real names
(``ucernvm-images.<V>.cernvm.<arch>/ucernvm-<branch>.<V>.cernvm.<arch>.<fmt>``)
and ``.sha256`` files in both published forms (bare hex, and ``sha256sum``'s
two columns). The root has a ``tree -H`` style ``list.html`` and a ``latest``;
release directories have none, so the server's own index is read there.

Faults can be injected per path: ``cut[path] = n`` sends the full
Content-Length but only ``n`` bytes of body, once; ``fail[path] = status``
answers with that HTTP status; ``loop`` paths redirect to themselves; ``flood[path] = n`` sends
the file and then ``n`` more bytes without a Content-Length (``flooded[path]`` counts what the client
took before it hung up). Every request is recorded with its headers.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PREFIX = "/releases/"
V_NEW, V_OLD, V_LEGACY = "2021.05-1", "2020.07-1", "1.16-3"


def image_bytes(name: str, size: int = 200 * 1024) -> bytes:
    return random.Random(name).randbytes(size)


@dataclass
class FakeRepo:
    root: Path
    url: str = ""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    cut: dict[str, int] = field(default_factory=dict)
    fail: dict[str, int] = field(default_factory=dict)
    loop: set[str] = field(default_factory=set)
    flood: dict[str, int] = field(default_factory=dict)
    flooded: dict[str, int] = field(default_factory=dict)

    def write(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def add_image(self, version: str, branch: str, fmt: str, *, checksum: str | None = "two-column") -> bytes:
        directory = f"ucernvm-images.{version}.cernvm.x86_64"
        name = f"ucernvm-{branch}.{version}.cernvm.x86_64.{fmt}"
        data = image_bytes(name)
        self.write(f"{directory}/{name}", data)
        digest = hashlib.sha256(data).hexdigest()
        if checksum == "two-column":
            self.write(f"{directory}/{name}.sha256", f"{digest}  {directory}/{name}\n".encode())
        elif checksum == "hex":
            self.write(f"{directory}/{name}.sha256", f"{digest}\n".encode())
        return data

    def write_root_listing(self, extra_hrefs: tuple[str, ...] = ()) -> None:
        """A ``tree -lhs -C -H <base> -L 1`` style page: absolute links under the base URL."""
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in self.root.iterdir() if p.name != "list.html")
        lines = [f'[&nbsp;4.0K]&nbsp;&nbsp;<a href="{self.url}{n}">{n}</a><br>' for n in names]
        lines += [f'<a href="{h}">{h}</a><br>' for h in extra_hrefs]
        page = f'<html><body><p><a href="{self.url}">{self.url}</a><br>\n' + "\n".join(lines) + "\n</p></body></html>\n"
        self.write("list.html", page.encode())

    def served(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def flooded_bytes(self, rel: str, timeout: float = 30.0) -> int:
        """What the client took of a ``flood`` before it hung up (waits for the server to notice)."""
        deadline = time.monotonic() + timeout
        while rel not in self.flooded:
            assert time.monotonic() < deadline, f"the flood of {rel} never ended"
            time.sleep(0.02)
        return self.flooded[rel]

    def gets(self, suffix: str = "") -> list[dict[str, str]]:
        """Headers of the GET requests whose path ends with ``suffix``."""
        return [h for p, h in self.requests if p.endswith(suffix)]


def _handler(repo: FakeRepo) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(repo.root), **kwargs)

        def log_message(self, *args) -> None:
            pass

        def translate_path(self, path: str) -> str:
            return super().translate_path("/" + path.split("?", 1)[0][len(PREFIX):])

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            repo.requests.append((path, dict(self.headers)))
            if not path.startswith(PREFIX):
                return self.send_error(404)
            rel = path[len(PREFIX):]
            if rel in repo.fail:
                return self.send_error(repo.fail[rel])
            if rel in repo.loop:
                self.send_response(302)
                self.send_header("Location", path)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if rel in repo.flood:
                return self._flood(rel)
            target = Path(self.translate_path(self.path))
            if not target.is_file():
                return super().do_GET()
            self._send_file(rel, target.read_bytes())

        def _flood(self, rel: str) -> None:
            """The file (if any), then bytes on and on without a Content-Length, counting what the client took."""
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            target = repo.root / rel
            head = target.read_bytes() if target.is_file() else b""
            sent, limit, chunk = 0, len(head) + repo.flood[rel], bytes(1 << 16)
            try:
                self.wfile.write(head)
                sent = len(head)
                while sent < limit:
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            repo.flooded[rel] = sent

        def _send_file(self, rel: str, data: bytes) -> None:
            start, status = 0, 200
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if m:
                start, status = int(m[1]), 206
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if rel in repo.cut:
                body = body[: repo.cut.pop(rel)]
                self.close_connection = True
            self.wfile.write(body)

    return Handler


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads the user's cache, image dirs, repository or proxies."""
    for name in ("VMLFS_CERNVM_IMAGE_DIRS", "VMLFS_CERNVM_REPO", "http_proxy", "https_proxy", "all_proxy",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "vmlfs" / "cernvm"


@pytest.fixture
def release_repo(tmp_path: Path):
    """A running fake repository with 2021.05-1 (iso/hdd/qcow2), 2020.07-1 (v4prod hdd) and 1.16-3 (iso, no checksum)."""
    repo = FakeRepo(tmp_path / "served")
    repo.root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(repo))
    server.daemon_threads = True
    repo.url = f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    repo.add_image(V_NEW, "prod", "qcow2")
    repo.add_image(V_NEW, "prod", "hdd")
    repo.add_image(V_NEW, "prod", "iso", checksum="hex")
    repo.add_image(V_OLD, "v4prod", "hdd")
    repo.add_image(V_LEGACY, "prod", "iso", checksum=None)
    repo.write("latest", f"{V_NEW}\n".encode())
    repo.write_root_listing()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield repo
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
