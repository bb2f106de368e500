"""Ranged layer reads as remote stores do them: the seek table from the tail, several frames per fetch for read-ahead."""

from __future__ import annotations

import io
import os
import time

from vmlfs.archive.readahead import ReadAhead
from vmlfs.archive.seekable import FrameCache, SeekableWriter
from vmlfs.backends.remote_reads import TAIL, RangedLayerReader


def layer(mib: int) -> tuple[bytes, bytes]:
    plain = os.urandom(mib << 20)
    out = io.BytesIO()
    writer = SeekableWriter(out)
    writer.write(plain)
    writer.close()
    return plain, out.getvalue()


def settle(ahead: ReadAhead, r: RangedLayerReader, frames: list[int]) -> None:
    deadline = time.monotonic() + 30
    while not all(r.is_cached(i) for i in frames) and time.monotonic() < deadline:
        time.sleep(0.01)
    ahead.close()


def reader(blob: bytes, reads: list[tuple[int, int]], per_fetch: int) -> RangedLayerReader:
    def read_range(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return blob[offset:offset + length]

    return RangedLayerReader("k#sha", len(blob), blob[-TAIL:], read_range, cache=FrameCache(), name="layer",
                             frames_per_fetch=per_fetch)


def test_read_ahead_fetches_adjacent_frames_with_one_read() -> None:
    plain, blob = layer(9)
    reads: list[tuple[int, int]] = []
    r = reader(blob, reads, per_fetch=4)
    ahead = ReadAhead(frames=8, workers=1)
    frames = ahead.claim(r, 0, r.size)
    assert frames == list(range(1, 9))
    ahead.submit(r, frames)  # two fetches of four
    settle(ahead, r, frames)
    assert len(reads) == 2 and r.frames_decompressed == 8
    assert r.read(1 << 20, 8 << 20) == plain[1 << 20:9 << 20] and len(reads) == 2, "served from the cache"
    assert r.read(0, 10) == plain[:10] and len(reads) == 3


def test_one_frame_per_fetch_reads_each_frame_alone() -> None:
    plain, blob = layer(3)
    reads: list[tuple[int, int]] = []
    r = reader(blob, reads, per_fetch=1)
    ahead = ReadAhead(frames=2, workers=1)
    frames = ahead.claim(r, 0, r.size)
    ahead.submit(r, frames)
    settle(ahead, r, frames)
    assert len(reads) == 2 and r.read(0, len(plain)) == plain
