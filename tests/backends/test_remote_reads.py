"""Ranged layer reads as remote stores do them: the seek table from the tail, several frames per fetch for read-ahead."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from vmlfs.archive.readahead import ReadAhead
from vmlfs.archive.placement import PlacementProofs
from vmlfs.archive.seekable import FrameCache, SeekableWriter, encode_seek_table, read_seek_table
from vmlfs.backends.remote_reads import TAIL, RangedLayerReader, seek_table_bytes
from vmlfs.errors import CorruptData


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


def reader(blob: bytes, reads: list[tuple[int, int]], per_fetch: int = 1, placed: Path | None = None) -> RangedLayerReader:
    def read_range(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return blob[offset:offset + length]

    return RangedLayerReader("k#sha", len(blob), blob[-TAIL:], read_range, cache=FrameCache(), name="layer",
                             proofs=PlacementProofs(placed) if placed else None, frames_per_fetch=per_fetch)


def test_read_ahead_fetches_adjacent_frames_with_one_read() -> None:
    plain, blob = layer(9)
    reads: list[tuple[int, int]] = []
    r = reader(blob, reads, per_fetch=4)
    assert r.read(0, 10) == plain[:10] and len(reads) == 1  # a sequential read starts at frame 0
    ahead = ReadAhead(frames=8, workers=1)
    frames = ahead.claim(r, 0, r.size)
    assert frames == list(range(1, 9))
    ahead.submit(r, frames)  # two fetches of four
    settle(ahead, r, frames)
    assert len(reads) == 3 and r.frames_decompressed == 9
    assert r.read(1 << 20, 8 << 20) == plain[1 << 20:9 << 20] and len(reads) == 3, "served from the cache"


def test_one_frame_per_fetch_reads_each_frame_alone() -> None:
    plain, blob = layer(3)
    reads: list[tuple[int, int]] = []
    r = reader(blob, reads, per_fetch=1)
    r.read(0, 1)
    ahead = ReadAhead(frames=2, workers=1)
    frames = ahead.claim(r, 0, r.size)
    ahead.submit(r, frames)
    settle(ahead, r, frames)
    assert len(reads) == 3 and r.read(0, len(plain)) == plain


def test_a_read_far_into_a_layer_proves_the_frames_before_it_once_for_every_reader(tmp_path: Path) -> None:
    """Where a frame starts follows from the frames before it; a remote reader fetches them in large
    reads to walk their headers, and keeps the proof, so the next reader of that layer (another mount)
    reads only the frame it needs."""
    plain, blob = layer(40)
    reads: list[tuple[int, int]] = []
    first = reader(blob, reads, placed=tmp_path / "placed")
    assert first.read(39 << 20, 10) == plain[39 << 20:(39 << 20) + 10]
    walked = sum(n for _, n in reads)
    assert len(reads) == 4 and walked > 39 << 20, reads  # 16 MiB per fetch, then the frame itself
    reads.clear()
    second = reader(blob, reads, placed=tmp_path / "placed")
    assert second.read(38 << 20, 10) == plain[38 << 20:(38 << 20) + 10] and len(reads) == 1
    frames, sizes = entries_of(blob)
    sizes[0:2] = [(sizes[0][0] + sizes[1][0], sizes[0][1])]  # another table for the same layer: no proof yet
    lying = frames + encode_seek_table(sizes)
    reads.clear()
    with pytest.raises(CorruptData, match="frame 0: its blocks end before the end"):
        reader(lying, reads, placed=tmp_path / "placed").read(30 << 20, 10)


def entries_of(blob: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    table = read_seek_table(io.BytesIO(blob), len(blob))
    sizes = [(table.c_offsets[i + 1] - table.c_offsets[i], table.d_offsets[i + 1] - table.d_offsets[i])
             for i in range(table.frames)]
    return blob[:table.c_offsets[-1]], sizes


def test_a_sequential_reader_s_read_ahead_fetches_a_group_per_request() -> None:
    """Claims are renewed once per fetch's worth of frames, so every request after the first read's
    fetches frames_per_fetch frames (renewed per frame, each would fetch one frame)."""
    plain, blob = layer(40)
    reads: list[tuple[int, int]] = []
    r = reader(blob, reads, per_fetch=4)
    ahead = ReadAhead(frames=8, workers=1)
    cursor = ahead.cursor(r, 0, r.size)
    for offset in range(0, 40 << 20, 128 << 10):  # a reader slower than the read-ahead
        assert r.read(offset, 128 << 10) == plain[offset:offset + (128 << 10)]
        started = cursor.after_read(offset, offset + (128 << 10))
        deadline = time.monotonic() + 30
        while not all(r.is_cached(i) for i in started) and time.monotonic() < deadline:
            time.sleep(0.005)
    ahead.close()
    sizes = [sum(1 for i in range(r.table.frames) if o <= r.table.c_offsets[i] < o + n) for o, n in reads]
    assert sizes[0] == 1 and set(sizes[1:-1]) == {4} and sum(sizes) == 40, sizes


def test_a_read_of_a_frame_being_fetched_waits_for_that_fetch() -> None:
    plain, blob = layer(4)
    reads: list[tuple[int, int]] = []
    started = threading.Event()

    def slow(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        started.set()
        time.sleep(0.3)
        return blob[offset:offset + length]

    r = RangedLayerReader("k#sha", len(blob), blob[-TAIL:], slow, cache=FrameCache(), name="layer", proofs=None,
                          frames_per_fetch=4)
    fetch = threading.Thread(target=r.load_frames, args=([0, 1, 2, 3],))
    fetch.start()
    started.wait(5)
    assert r.read(2 << 20, 10) == plain[2 << 20:(2 << 20) + 10]
    fetch.join()
    assert len(reads) == 1 and r.frames_decompressed == 4, "the read was served by the group's fetch"


def test_concurrent_read_ahead_fetches_every_frame_once() -> None:
    """Fetches running side by side do not prove the frames before them by fetching those again
    (which doubled a first sequential read's traffic): each frame's bytes cross once."""
    plain, blob = layer(24)
    reads: list[tuple[int, int]] = []
    lock = threading.Lock()
    first_batch = 1 << 20  # where frame 1 starts, near enough: the first read-ahead fetch is the slow one

    def read_range(offset: int, length: int) -> bytes:
        if offset and offset < first_batch + (64 << 10):
            time.sleep(0.3)  # the fetch of the first group answers last
        with lock:
            reads.append((offset, length))
        return blob[offset:offset + length]

    r = RangedLayerReader("k#sha", len(blob), blob[-TAIL:], read_range, cache=FrameCache(), name="layer",
                          proofs=None, frames_per_fetch=4)
    ahead = ReadAhead(frames=12, workers=3)
    cursor = ahead.cursor(r, 0, r.size)
    for offset in range(0, 24 << 20, 1 << 20):
        assert r.read(offset, 1 << 20) == plain[offset:offset + (1 << 20)]
        cursor.after_read(offset, offset + (1 << 20))
    ahead.close()
    frames = r.table.c_offsets[-1]
    assert sum(n for _, n in reads) == frames, sorted(reads)


def test_a_frame_fetched_ahead_is_not_served_before_the_frames_before_it_are_placed() -> None:
    plain, blob = layer(8)
    frames, sizes = entries_of(blob)
    sizes[2] = (sizes[2][0], sizes[2][1] - 1)  # frame 2's entry lies about its size
    lying = frames + encode_seek_table(sizes)
    reads: list[tuple[int, int]] = []
    r = reader(lying, reads, per_fetch=4)
    r.load_frames([4, 5, 6, 7])  # decompress on their own, as a read-ahead fetch does
    assert r.is_cached(5) and r.read_cached(5 << 20, 10) is None
    with pytest.raises(CorruptData, match="frame 2"):
        r.read(5 << 20, 10)
    good = reader(blob, [], per_fetch=4)
    good.load_frames([4, 5, 6, 7])
    assert good.read((5 << 20) - 1, 10) == plain[(5 << 20) - 1:(5 << 20) + 9]
    assert good.read_cached(5 << 20, 10) == plain[5 << 20:(5 << 20) + 10], "placed now: served from the cache"


def test_the_footer_says_how_long_the_seek_table_is() -> None:
    _, blob = layer(3)
    r = reader(blob, [], per_fetch=1)
    assert seek_table_bytes(blob) == len(blob) - r.table.c_offsets[-1] == seek_table_bytes(blob[-100:])
    assert seek_table_bytes(b"no footer here") == 0 == seek_table_bytes(b"")
