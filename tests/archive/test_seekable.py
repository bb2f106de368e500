"""The seekable zstd format: random access, standard readers, and damage detection."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
import zstandard

from vmlfs.archive.layer import LayerWriter, MemberInfo
from vmlfs.archive.seekable import FrameCache, SeekableReader, SeekableWriter, decompress_frame
from vmlfs.errors import CorruptData


def write_stream(path: Path, data: bytes, frame_size: int = 1 << 16) -> None:
    with open(path, "wb") as f:
        w = SeekableWriter(f, frame_size=frame_size)
        for i in range(0, len(data), 7000):
            w.write(data[i : i + 7000])
        w.close()


def test_roundtrip_any_range(tmp_path: Path) -> None:
    data = os.urandom(300_000) + b"x" * 300_000
    path = tmp_path / "s.zst"
    write_stream(path, data)
    with SeekableReader(path) as r:
        assert r.size == len(data)
        for offset, length in [(0, 10), (65535, 2), (65536, 65536), (123_456, 400_000), (599_990, 100)]:
            assert r.read(offset, length) == data[offset : offset + length]
    assert zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True).read() == data
    subprocess.run(["zstd", "-t", "-q", str(path)], check=True)
    assert subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout == data


def test_reading_4k_from_the_middle_of_a_256_mib_member_touches_at_most_two_frames(tmp_path: Path) -> None:
    path = tmp_path / "layer.tar.zst"
    size = 256 << 20
    block = os.urandom(1 << 16)
    with open(path, "wb") as f:
        w = LayerWriter(f, level=1)
        offset = w.begin_file(MemberInfo(b"big.root", "f", 0o644, 0, 0, "", "", size, 0))
        for _ in range(size // len(block)):
            w.write(block)
        w.end_file()
        w.close()
    with SeekableReader(path, cache=FrameCache()) as r:
        middle = offset + size // 2 - 2048 + 512 * 1024  # straddles a 1 MiB frame boundary
        got = r.read(middle, 4096)
        assert len(got) == 4096
        start = (middle - offset) % len(block)
        assert got == (block + block)[start : start + 4096]
        assert 1 <= r.frames_decompressed <= 2
        assert r.table.frames > 200


def test_frame_cache_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "s.zst"
    write_stream(path, os.urandom(1 << 20), frame_size=1 << 16)
    cache = FrameCache(max_bytes=3 << 16)
    with SeekableReader(path, cache=cache) as r:
        r.read(0, 1 << 20)
        assert cache._bytes <= 3 << 16
        r.read(0, 10)
        assert r.frames_decompressed == 17  # frame 0 was evicted and decompressed again


@pytest.mark.parametrize("damage", ["truncate100", "flipbit", "garbage", "empty"])
def test_damage_is_detected(tmp_path: Path, damage: str) -> None:
    data = bytes(range(256)) * 4096
    path = tmp_path / "s.zst"
    write_stream(path, data)
    raw = bytearray(path.read_bytes())
    if damage == "truncate100":
        raw = raw[:-100]
    elif damage == "flipbit":
        raw[len(raw) // 3] ^= 0x10
    elif damage == "garbage":
        raw += b"trailing garbage"
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptData):
        with SeekableReader(path) as r:
            r.read(0, len(data))


def test_a_frame_is_decompressed_only_whole_alone_and_at_its_declared_size() -> None:
    compress = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress
    data = bytes(range(256)) * 400
    frame, other = compress(data), compress(b"next")
    assert decompress_frame(frame, len(data), "f") == data
    flipped = bytearray(frame)
    flipped[len(frame) // 2] ^= 0x10
    for bad, size, why in [(frame + other, len(data), "unused data"), (frame + b"xyz", len(data), "unused data"),
                           (frame[:-5], len(data), "full frame"), (bytes(flipped), len(data), "damaged"),
                           (frame, len(data) - 1, "declares")]:
        with pytest.raises(CorruptData, match=why):
            decompress_frame(bad, size, "f")


def test_flipped_bit_only_breaks_its_frame(tmp_path: Path) -> None:
    data = os.urandom(8 << 16)
    path = tmp_path / "s.zst"
    write_stream(path, data)
    with SeekableReader(path) as r:
        first_frame_end = r.table.c_offsets[1]
    raw = bytearray(path.read_bytes())
    raw[first_frame_end // 2] ^= 1
    path.write_bytes(bytes(raw))
    with SeekableReader(path) as r:
        with pytest.raises(CorruptData, match="frame 0"):
            r.read(0, 100)
        assert r.read(1 << 16, 100) == data[1 << 16 : (1 << 16) + 100]


def test_missing_layer_is_corrupt_data(tmp_path: Path) -> None:
    with pytest.raises(CorruptData, match="missing"):
        SeekableReader(tmp_path / "nope.tar.zst")


def test_write_errors_become_storage_full() -> None:
    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            raise OSError(28, "No space left on device")

    from vmlfs.errors import StorageFull

    w = SeekableWriter(Full(), frame_size=1024)  # type: ignore[arg-type]
    with pytest.raises(StorageFull, match="No space left"):
        w.write(os.urandom(10_000))
        w.close()
    w.abort()


def test_the_writer_lets_the_caller_run_ahead_of_compression_by_a_bounded_number_of_frames(monkeypatch) -> None:
    """A backup reads on while the big files it read are compressed (PENDING_FRAMES frames, bounded)."""
    import threading

    from vmlfs.archive import seekable

    gate = threading.Event()
    real = seekable._compress_frame
    monkeypatch.setattr(seekable, "_compress_frame", lambda data, level: gate.wait(30) and real(data, level))
    out = io.BytesIO()
    writer = SeekableWriter(out, frame_size=1024)
    written = threading.Semaphore(0)

    def write(frames: int) -> None:
        for _ in range(frames):
            writer.write(os.urandom(1024))
            written.release()

    caller = threading.Thread(target=write, args=(seekable.PENDING_FRAMES + 2,))
    caller.start()
    for _ in range(seekable.PENDING_FRAMES):
        assert written.acquire(timeout=10), "the caller waited for compression before the bound"
    assert not written.acquire(timeout=0.5) or not written.acquire(timeout=0.5), "nothing bounds the frames waiting"
    gate.set()
    caller.join(10)
    writer.close()
    assert len(out.getvalue()) > (seekable.PENDING_FRAMES + 2) * 1024 * 0.9


@pytest.mark.skipif(not hasattr(os, "getpriority") or os.uname().sysname != "Linux", reason="a thread's own nice value is Linux's")
def test_frames_are_compressed_at_a_lower_priority_than_the_caller_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's per-file work cannot be shared out; the compressors' can wait for a free core."""
    import threading

    from vmlfs.archive import seekable

    seen: list[int] = []
    real = seekable._compress_frame

    def recording(data, level):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real(data, level)

    monkeypatch.setattr(seekable, "_compress_frame", recording)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    out = io.BytesIO()
    w = SeekableWriter(out, frame_size=4096)
    w.write(os.urandom(3 * 4096))
    w.close()
    assert seen and all(nice == min(mine + seekable.COMPRESSOR_NICENESS, 19) for nice in seen)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine, "the caller keeps its priority"
