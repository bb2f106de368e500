"""Read-ahead: claims are handed out once, only sequential readers get them, seeks cost nothing extra."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.archive.test_seekable import write_stream
from vmlfs.archive.readahead import ReadAhead
from vmlfs.archive.seekable import FRAME_SIZE, FrameCache, SeekableReader


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "read-ahead did not finish"
        time.sleep(0.005)


@pytest.fixture
def readahead():
    owner = ReadAhead(frames=3, workers=2)
    yield owner
    owner.close()


def test_claims_each_uncached_frame_once(tmp_path: Path, readahead: ReadAhead) -> None:
    data = os.urandom(6 << 16)
    path = tmp_path / "s.zst"
    write_stream(path, data)
    with SeekableReader(path, cache=FrameCache()) as r:
        r.read(0, 10)
        assert readahead.claim(r, 5, r.size) == [1, 2, 3]
        assert readahead.claim(r, 5, r.size) == [], "claimed frames are not handed out twice"
        readahead.submit(r, [1, 2, 3])
        wait_for(lambda: r.frames_decompressed == 4)
        assert r.read_cached(1 << 16, 3 << 16) == data[1 << 16 : 4 << 16]
        readahead.frames = 10
        assert readahead.claim(r, 5, r.size) == [4, 5], "cached frames are skipped, the end is respected"
        assert readahead.claim(r, 5, 5 << 16) == [], "frames past the end given are not claimed"


def test_cursor_reads_ahead_only_for_sequential_readers(tmp_path: Path, readahead: ReadAhead) -> None:
    frame = os.urandom(FRAME_SIZE)
    path = tmp_path / "s.zst"
    write_stream(path, frame * 12, frame_size=FRAME_SIZE)
    step = 128 << 10
    with SeekableReader(path, cache=FrameCache(64 << 20)) as r:
        file_start, file_size = FRAME_SIZE // 2, 10 * FRAME_SIZE  # a file inside the layer: frames 0 to 10
        cursor = readahead.cursor(r, file_start, file_size)
        assert cursor.after_read(0, step) == [], "a first read is not yet sequential"
        assert cursor.after_read(step, 2 * step) == [1, 2, 3], "a continuing read claims the next frames"
        assert cursor.after_read(2 * step, 3 * step) == [], "claims are renewed once per frame, not per read"
        wait_for(lambda: r.frames_decompressed == 3)

        other = readahead.cursor(r, file_start, file_size)
        far = file_size - 3 * step
        assert other.after_read(far, far + step) == [], "a read elsewhere (a seek) decompresses nothing ahead"
        assert other.after_read(far + step, far + 2 * step) == [], "the last frame of the file has none after it"
        assert other.after_read(4 * FRAME_SIZE, 4 * FRAME_SIZE + step) == [], "a jump back is a seek"
        assert other.after_read(4 * FRAME_SIZE + step, 4 * FRAME_SIZE + 2 * step) == [5, 6, 7]
        wait_for(lambda: r.frames_decompressed == 6)
        assert r.frames_decompressed == 6, "nothing but the claimed frames was decompressed"
