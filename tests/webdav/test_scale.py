"""What costs: a 4 KiB range of a 1 GiB member, and a PROPFIND of 10,000 entries against the FUSE mount."""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pytest

from tests.fs.conftest import FUSE_MISSING, Mount, make_store
from vmlfs.app.session import Session
from vmlfs.fs.control import Jobs
from vmlfs.fs.state import MountState
from vmlfs.webdav import server as http


def serve_in_thread(state: MountState):
    """The server of ``vmlfs serve`` in this process, so the test can read the layer's counters."""
    server = http.Server(http.build(state, webdav=True, web=None, credentials=None), "127.0.0.1", 0)
    url = server.bind()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, thread, url


@pytest.mark.slow
def test_a_4k_range_of_a_1gib_member_decompresses_at_most_two_frames(tmp_path):
    s = make_store(tmp_path, big_mib=1)
    offset = 600 * (1 << 20) - 2048  # straddles a frame boundary (frames are 1 MiB)
    marker = os.urandom(4096)
    with open(s.home / "huge.bin", "wb") as f:
        f.truncate(1 << 30)  # sparse: cheap to write and fast to compress, still 1 GiB to the backup
        f.seek(offset)
        f.write(marker)
    ts = s.backup()
    state = MountState(s.store(), Jobs(Session(str(s.store_path))))
    server, thread, url = serve_in_thread(state)
    try:
        answer = httpx.get(f"{url}entries/e1/{ts}/home/huge.bin", headers={"Range": f"bytes={offset}-{offset + 4095}"})
        assert answer.status_code == 206 and answer.content == marker
        record = json.loads((s.store_path / "entries" / "e1" / "backups" / f"{ts}.json").read_text())
        layer = state.layer("e1", record["layer"]["sha256"])
        assert 1 <= layer.frames_decompressed <= 2, layer.frames_decompressed
    finally:
        server.stop()
        thread.join(15)


def best_of(runs: int, measure) -> float:
    return min(measure() for _ in range(runs))


@pytest.mark.slow
@pytest.mark.fuse
@pytest.mark.skipif(FUSE_MISSING, reason="needs /dev/fuse and fusermount3")
def test_propfind_of_10000_entries_within_twice_the_fuse_listing(tmp_path, serve_factory):
    s = make_store(tmp_path, big_mib=1)
    many = s.home / "many"
    many.mkdir()
    for i in range(10_000):
        (many / f"file-{i:05d}.txt").write_text(str(i))
    ts = s.backup()
    rel = f"entries/e1/{ts}/home/many"

    def fuse_listing() -> float:
        """ls -l on a fresh mount: names and attributes of every entry (the manifest opened beforehand)."""
        m = Mount(s.store_path, tmp_path / "mnt", tmp_path / "mount.log").start()
        try:
            os.stat(m.path / rel)
            t0 = time.perf_counter()
            found = [e.stat(follow_symlinks=False).st_size for e in os.scandir(m.path / rel)]
            elapsed = time.perf_counter() - t0
        finally:
            m.stop()
        assert len(found) == 10_000
        return elapsed

    server = serve_factory(s.store_path)
    with httpx.Client(timeout=120) as client:
        client.request("PROPFIND", server.path(rel), headers={"Depth": "0"})  # the manifest, opened beforehand

        def propfind() -> float:
            t0 = time.perf_counter()
            answer = client.request("PROPFIND", server.path(rel), headers={"Depth": "1"})
            elapsed = time.perf_counter() - t0
            assert answer.status_code == 207 and answer.content.count(b"<D:response>") == 10_001
            return elapsed

        dav = best_of(3, propfind)
    fuse = best_of(2, fuse_listing)
    print(f"PROPFIND depth 1 of 10,000 entries: {dav:.2f} s; the same listing through FUSE: {fuse:.2f} s")
    assert dav <= 2 * fuse
