"""A seek table that lies, and frames of hostile sizes: damage, never other bytes, never unbounded memory.

Every frame read must end exactly where the seek table says and hold exactly
the size it declares; frames over READ_FRAME_LIMIT are refused before any
decompression. All readers (restore, verify, the mount, SFTP range reads)
decompress through SeekableReader, so these tests cover them at one place;
tests/cli/test_faults.py shows the damage as a named file in restore and verify.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.archive.test_seekable import write_stream
from vmlfs.archive.seekable import (
    READ_FRAME_LIMIT,
    FrameCache,
    SeekableReader,
    encode_seek_table,
    read_seek_table,
)
from vmlfs.archive.placement import PlacementProofs
from vmlfs.backends.remote_reads import TAIL, RangedLayerReader
from vmlfs.errors import CorruptData

FRAME = 1000
DATA = os.urandom(3 * FRAME) + b"z" * (3 * FRAME) + os.urandom(FRAME // 2)  # 7 frames, the last one short


def entries(path: Path) -> tuple[bytes, list[tuple[int, int]]]:
    """The frames' bytes and the (compressed, decompressed) size of each, as the seek table lists them."""
    with open(path, "rb") as f:
        table = read_seek_table(f, os.path.getsize(path))
    sizes = [(table.c_offsets[i + 1] - table.c_offsets[i], table.d_offsets[i + 1] - table.d_offsets[i])
             for i in range(table.frames)]
    return path.read_bytes()[:table.c_offsets[-1]], sizes


def rewrite(path: Path, frames: bytes, sizes: list[tuple[int, int]]) -> None:
    path.write_bytes(frames + encode_seek_table(sizes))


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    path = tmp_path / "layer.zst"
    write_stream(path, DATA, frame_size=FRAME)
    return path


def read_all(path: Path) -> bytes:
    with SeekableReader(path) as r:
        return r.read(0, r.size)


def open_reader(path: Path, how: str) -> SeekableReader:
    """The layer read as a local store reads it, or by ranged reads as the SSH and S3 stores do; for
    "ranged, read ahead", every frame was first decompressed on its own as a remote read-ahead does
    (frames before it unproved), so a frame fetched ahead must still not be served through a lie."""
    if how == "local":
        return SeekableReader(path)
    blob = path.read_bytes()
    r = RangedLayerReader("k#sha", len(blob), blob[-TAIL:], lambda o, n: blob[o:o + n], cache=FrameCache(),
                          name=str(path), proofs=None)
    if how == "ranged, read ahead":
        for i in reversed(range(r.table.frames)):
            try:
                r.load_frames([i])
            except CorruptData:
                pass  # as the read-ahead does: the real read reports it
    return r


READERS = pytest.mark.parametrize("how", ["local", "ranged", "ranged, read ahead"])


@READERS
@pytest.mark.parametrize("lie", ["one entry covers two frames", "two frames, the first one's size",
                                 "frame shorter than listed", "frame longer than listed", "size off by one"])
def test_a_lying_entry_is_damage(layer: Path, lie: str, how: str) -> None:
    frames, sizes = entries(layer)
    (c0, d0), (c1, d1) = sizes[0], sizes[1]
    if lie == "one entry covers two frames":
        sizes[0:2] = [(c0 + c1, d0 + d1)]
    elif lie == "two frames, the first one's size":  # the frames that follow shift by one frame
        sizes[0:2] = [(c0 + c1, d0)]
    elif lie == "frame shorter than listed":
        sizes[0:2] = [(c0 - 1, d0), (c1 + 1, d1)]
    elif lie == "frame longer than listed":
        sizes[0:2] = [(c0 + 1, d0), (c1 - 1, d1)]
    else:
        sizes[0] = (c0, d0 - 1)
    rewrite(layer, frames, sizes)
    with open_reader(layer, how) as r:
        with pytest.raises(CorruptData, match="frame 0"):
            r.read(0, 10)
        with pytest.raises(CorruptData, match="frame 0.*cannot be placed"):
            r.read(r.size - 1, 1)  # a later frame: the lie before it moved it


@READERS
@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_seek_table_corruptions_never_yield_wrong_bytes(layer: Path, how: str, data: st.DataObject) -> None:
    write_stream(layer, DATA, frame_size=FRAME)  # the fixture is shared by every example: start pristine
    frames, sizes = entries(layer)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(sizes) - 1))
        c, d = sizes[i]
        how = data.draw(st.sampled_from(["c", "d", "merge", "split", "shift"]))
        delta = data.draw(st.integers(-FRAME, FRAME))
        if how == "c":
            sizes[i] = (max(1, c + delta), d)
        elif how == "d":
            sizes[i] = (c, max(0, d + delta))
        elif how == "merge" and i + 1 < len(sizes):
            sizes[i:i + 2] = [(c + sizes[i + 1][0], data.draw(st.sampled_from([d, d + sizes[i + 1][1], sizes[i + 1][1]])))]
        elif how == "split" and c > 1:
            cut = data.draw(st.integers(1, c - 1))
            sizes[i:i + 1] = [(cut, d // 2), (c - cut, d - d // 2)]
        elif how == "shift" and i + 1 < len(sizes) and 0 < c + delta and 0 < sizes[i + 1][0] - delta:
            sizes[i], sizes[i + 1] = (c + delta, d), (sizes[i + 1][0] - delta, sizes[i + 1][1])
    rewrite(layer, frames, sizes)
    offset = data.draw(st.integers(0, len(DATA)))
    length = data.draw(st.integers(1, len(DATA)))
    try:
        with open_reader(layer, how) as r:
            got = r.read(offset, length)
    except CorruptData:
        return
    if got != DATA[offset:offset + len(got)]:  # not a bare assert: pytest would diff megabytes
        pytest.fail(f"a lying seek table served other bytes: {len(got)} bytes at {offset}, table {sizes}")


@READERS
def test_a_counterexample_random_tables_found(layer: Path, how: str) -> None:
    """A table a random run once found serving a wrong byte, when frames too damaged to parse were
    taken to fail alone (an entry claiming two frames' size over one frame, after entries too short
    to parse): the property test above is derandomized so CI is repeatable, and this keeps the example."""
    frames, _ = entries(layer)
    rewrite(layer, frames, [(1, 500), (2027, 500), (1014, 1000), (23, 1000), (23, 1000), (23, 1000), (514, 500)])
    with open_reader(layer, how) as r, pytest.raises(CorruptData, match="frame 0: its frame header is damaged"):
        r.read(1000, 1)


BOMB = r"""
import sys
from vmlfs.archive.seekable import SeekableReader
from vmlfs.archive.placement import PlacementProofs
from vmlfs.backends.remote_reads import TAIL, RangedLayerReader
from vmlfs.errors import CorruptData
try:
    with SeekableReader(sys.argv[1]) as r:
        r.read(0, 4096)
    print("read")
except CorruptData as exc:
    print("refused:", exc)
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])  # KiB; not
# ru_maxrss, which Linux carries across exec from the (large) test process that started this one
"""


def one_frame_of(size: int) -> bytes:
    """A tiny frame that decompresses to ``size`` zero bytes, made without holding them."""
    cctx = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True)
    chunks = []
    writer = cctx.chunker(size=size, chunk_size=1 << 20)
    zero = bytes(1 << 20)
    for _ in range(size >> 20):
        chunks.extend(writer.compress(zero))
    chunks.extend(writer.finish())
    return b"".join(chunks)


@pytest.mark.parametrize("table_says", ["the truth", "a small frame"])
def test_a_huge_frame_is_refused_in_bounded_memory(tmp_path: Path, table_says: str) -> None:
    size = 1 << 30
    frame = one_frame_of(size)
    assert len(frame) < 64 << 10
    path = tmp_path / "bomb.zst"
    rewrite(path, frame, [(len(frame), size if table_says == "the truth" else 1 << 20)])
    out = subprocess.run([sys.executable, "-c", BOMB, str(path)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))).stdout.splitlines()
    assert out[0].startswith("refused:"), out
    assert int(out[1]) < 150_000, f"peak RSS {out[1]} KiB"  # a Python with zstandard is ~30 MiB; the frame is 1 GiB


def test_a_frame_at_the_limit_is_still_read(tmp_path: Path) -> None:
    frame = one_frame_of(READ_FRAME_LIMIT)
    path = tmp_path / "big.zst"
    rewrite(path, frame, [(len(frame), READ_FRAME_LIMIT)])
    with SeekableReader(path) as r:
        assert r.read(READ_FRAME_LIMIT - 10, 10) == bytes(10)


@READERS
@pytest.mark.parametrize("where", ["block header", "frame header"])
def test_damage_inside_a_frame_costs_that_frame_only_while_later_frames_can_be_placed(tmp_path: Path, where: str,
                                                                                     how: str) -> None:
    """The table is honest; frame 1's bytes are damaged. Past a damaged block header the frames after
    it are still placed (a frame starts where frame 1's entry ends); past a damaged frame header the
    decompressed offset of every later frame is unknown, so they are refused, never served shifted."""
    data = os.urandom(4 * FRAME)
    path = tmp_path / "layer.zst"
    write_stream(path, data, frame_size=FRAME)
    with open(path, "rb") as f:
        table = read_seek_table(f, os.path.getsize(path))
    blob = bytearray(path.read_bytes())
    start = table.c_offsets[1]
    header = zstandard.frame_header_size(bytes(blob[start:start + 18]))
    at = start + header if where == "block header" else start
    blob[at:at + 4] = b"\xff\xff\xff\xff"  # a reserved block type / no zstd magic
    path.write_bytes(bytes(blob))
    with open_reader(path, how) as r:
        with pytest.raises(CorruptData, match="frame 1"):
            r.read(FRAME, 10)
        if where == "block header":
            assert r.read(3 * FRAME, FRAME) == data[3 * FRAME:]
        else:
            with pytest.raises(CorruptData, match="frame 1: its frame header is damaged"):
                r.read(3 * FRAME, 10)
        assert r.read(0, 10) == data[:10]


def test_a_local_reader_keeps_its_placement_proof_for_the_next_reader(tmp_path: Path) -> None:
    """The walk of the frames before a read happens once per layer and table, not once per mount; a
    layer file written again (another inode and time) or another table is walked again."""
    data = os.urandom(40 * FRAME)
    path = tmp_path / "layer.zst"
    write_stream(path, data, frame_size=FRAME)
    proofs = PlacementProofs(tmp_path / "proofs")
    reads: list[int] = []

    class Counting(SeekableReader):
        def _read_compressed(self, offset: int, length: int) -> bytes:
            reads.append(offset)
            return super()._read_compressed(offset, length)

    with Counting(path, proofs=proofs) as first:
        assert first.read(39 * FRAME, 10) == data[39 * FRAME:39 * FRAME + 10]
    walked, reads[:] = len(reads), []
    assert walked > 39
    with Counting(path, proofs=proofs) as second:
        assert second.read(38 * FRAME, 10) == data[38 * FRAME:38 * FRAME + 10]
    assert len(reads) == 1, "the proof was kept"
    frames, sizes = entries(path)
    sizes[0:2] = [(sizes[0][0] + sizes[1][0], sizes[0][1])]
    rewrite(path, frames, sizes)  # another table (and another file): no proof for it
    with Counting(path, proofs=proofs) as lying, pytest.raises(CorruptData, match="frame 0"):
        lying.read(30 * FRAME, 10)
