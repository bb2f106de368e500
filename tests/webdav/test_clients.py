"""Real clients: the kernel's davfs2 mount (diff -r, cp -a) and a Python HTTP client speaking WebDAV."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import httpx
import pytest

from tests.fs.conftest import make_store
from vmlfs.fs.winnames import to_windows

DAVFS_MISSING = os.geteuid() != 0 or shutil.which("mount.davfs") is None or not os.path.exists("/dev/fuse")

# buf_size 64: davfs2 1.6 answers EINVAL to every readdir on Linux >= 6.16 with its default buffer
# (alisarctl/davfs2#22); ask_auth 0: never prompt; use_locks 0: the server has no LOCK (class 1).
DAVFS_CONF = "ask_auth 0\nuse_locks 0\nbuf_size 64\n"


def expected_tree(s, dst):
    """The guest as a WebDAV client must see it: symlinks that leave their directory left out,
    names under the Windows mapping (here: the one name that is not UTF-8)."""
    subprocess.run(["cp", "-a", str(s.home), str(dst)], check=True)
    for link in ("link-to-main", "dangling"):
        os.unlink(dst / link)
    raw = os.fsencode(dst) + b"/raw-\xff-name"
    os.rename(raw, os.fsencode(dst) + b"/" + to_windows(b"raw-\xff-name").encode())
    return dst


@pytest.mark.skipif(DAVFS_MISSING, reason="needs root, davfs2 (mount.davfs) and /dev/fuse")
def test_davfs2_mount_diff_and_copy(tmp_path, serve_factory):
    s = make_store(tmp_path)
    ts = s.backup()
    want = expected_tree(s, tmp_path / "want")
    server = serve_factory(s.store_path)
    conf, mnt = tmp_path / "davfs2.conf", tmp_path / "davmnt"
    conf.write_text(DAVFS_CONF)
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "davfs", "-o", f"ro,conf={conf}", server.url, str(mnt)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    try:
        home = mnt / "entries" / "e1" / ts / "home"
        diff = subprocess.run(["diff", "-r", str(want), str(home)], capture_output=True, text=True, timeout=120)
        assert diff.returncode == 0, diff.stdout + diff.stderr
        assert sorted(os.listdir(mnt / "entries" / "e1")) == sorted([ts, "control", "latest", "versions"])
        copy = tmp_path / "copied.bin"
        subprocess.run(["cp", "-a", str(home / "data" / "big.bin"), str(copy)], check=True, timeout=60)
        assert copy.read_bytes() == (s.home / "data" / "big.bin").read_bytes()
        assert int(copy.stat().st_mtime) == int((s.home / "data" / "big.bin").stat().st_mtime)
        with pytest.raises(OSError):
            (home / "new-file").write_text("x")
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60)
    assert not os.path.ismount(mnt)


def test_python_client_propfind_conditional_get_and_range(tmp_path, serve_factory):
    s = make_store(tmp_path)
    ts = s.backup()
    server = serve_factory(s.store_path)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.request("PROPFIND", f"/entries/e1/{ts}/home/data/", headers={"Depth": "1"})
        assert answer.status_code == 207
        sizes = {r.findtext("{DAV:}href"): r.findtext(".//{DAV:}getcontentlength")
                 for r in ET.fromstring(answer.content).iter("{DAV:}response")}
        assert sizes[f"/entries/e1/{ts}/home/data/big.bin"] == str(3 << 20)
        first = client.get(f"/entries/e1/{ts}/home/data/big.bin")
        assert first.content == (s.home / "data" / "big.bin").read_bytes()
        again = client.get(f"/entries/e1/{ts}/home/data/big.bin", headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304
        part = client.get(f"/entries/e1/{ts}/home/data/big.bin", headers={"Range": "bytes=2097150-2097160"})
        assert part.status_code == 206 and part.content == first.content[2097150:2097161]
        status = client.get("/entries/e1/control/status")
        assert status.headers["Content-Type"].startswith("text/plain") and b"running: none" in status.content
        assert int(status.headers["Content-Length"]) == len(status.content)
        assert client.get(f"/entries/e1/{ts}/").status_code == 200, "a browser GET of a directory: an HTML listing"
