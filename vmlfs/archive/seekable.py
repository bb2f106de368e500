"""The zstd seekable format: independent frames plus a seek table.

Layout (facebook/zstd ``contrib/seekable_format``, version 0.1): the data is a
sequence of ordinary zstd frames, followed by one *skippable* frame holding the
seek table::

    skippable magic 0x184D2A5E | u32 frame size
    per frame: u32 compressed size | u32 decompressed size
    footer: u32 number of frames | u8 descriptor | u32 magic 0x8F92EAB1

All integers are little-endian. Plain ``zstd -d`` and ``tar --zstd`` skip the
skippable frame, so a layer stays an ordinary ``.tar.zst``; vmlfs reads the
table to decompress only the frames covering a byte range. We do not set the
descriptor's checksum flag: each frame carries zstd's own XXH64 content
checksum instead, which the decompressor verifies.

This module does no I/O of its own choosing: it works on the file objects and
bytes it is given, and imports no adapter. It does hold state for readers: an
LRU of decompressed frames shared by a mount (:class:`FrameCache`) and the
writer's compression threads.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import struct
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from vmlfs.archive.placement import PlacementProofs, misplacing
from vmlfs.errors import CorruptData, write_failed

SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
FOOTER = struct.Struct("<IBI")
ENTRY = struct.Struct("<II")
FRAME_SIZE = 1 << 20
READ_FRAME_LIMIT = 64 << 20
"""The largest frame a reader accepts (decompressed), 64 times what vmlfs writes. The format would
allow 1 GiB; a layer claiming frames that big is hostile or damaged, and every reader (restore,
verify, the mount, SFTP range reads) would hold one whole in memory."""
READ_COMPRESSED_LIMIT = READ_FRAME_LIMIT + (READ_FRAME_LIMIT >> 7) + (1 << 16)  # ≥ ZSTD_compressBound
MAX_FRAMES = 0x8000000


@dataclass(frozen=True)
class SeekTable:
    """Cumulative offsets of every frame, compressed and decompressed.

    ``c_offsets[i]``/``d_offsets[i]`` is where frame i starts; the last element
    of each is the total size, so there are ``frames + 1`` elements.
    """

    c_offsets: tuple[int, ...]
    d_offsets: tuple[int, ...]
    digest: str = ""
    """The sha256 of the seek table's bytes: what a placement proof (:class:`~vmlfs.archive.placement.PlacementProofs`)
    is made for."""

    @property
    def frames(self) -> int:
        return len(self.c_offsets) - 1

    @property
    def decompressed_size(self) -> int:
        return self.d_offsets[-1]

    def frames_covering(self, offset: int, length: int) -> range:
        """Indices of the frames that hold bytes ``[offset, offset+length)``."""
        if length <= 0 or offset >= self.decompressed_size:
            return range(0)
        first = bisect.bisect_right(self.d_offsets, offset) - 1
        end = min(offset + length, self.decompressed_size)
        last = bisect.bisect_left(self.d_offsets, end) - 1
        return range(first, last + 1)

    def frames_after(self, offset: int, count: int, end: int) -> range:
        """Up to ``count`` frames following the one that holds ``offset``, those starting before ``end``."""
        first = bisect.bisect_right(self.d_offsets, offset)
        stop = min(first + count, self.frames, bisect.bisect_left(self.d_offsets, end))
        return range(first, max(first, stop))


def encode_seek_table(sizes: list[tuple[int, int]]) -> bytes:
    body = b"".join(ENTRY.pack(c, d) for c, d in sizes)
    body += FOOTER.pack(len(sizes), 0, SEEKABLE_MAGIC)
    return struct.pack("<II", SKIPPABLE_MAGIC, len(body)) + body


def read_seek_table(f: BinaryIO, file_size: int) -> SeekTable:
    """Parse and sanity-check the seek table at the end of ``f``."""
    if file_size < FOOTER.size + 8:
        raise CorruptData("layer too short to hold a seek table")
    f.seek(file_size - FOOTER.size)
    frames, descriptor, magic = FOOTER.unpack(f.read(FOOTER.size))
    if magic != SEEKABLE_MAGIC:
        raise CorruptData("layer has no zstd seek table (bad footer magic: truncated or trailing garbage?)")
    if descriptor & 0x7C:
        raise CorruptData("seek table descriptor has reserved bits set")
    entry_size = 12 if descriptor & 0x80 else 8
    if frames > MAX_FRAMES:
        raise CorruptData(f"seek table claims {frames} frames")
    table_size = 8 + frames * entry_size + FOOTER.size
    if table_size > file_size:
        raise CorruptData("seek table larger than the layer")
    f.seek(file_size - table_size)
    raw = f.read(table_size)
    magic, size = struct.unpack_from("<II", raw)
    if magic != SKIPPABLE_MAGIC or size != table_size - 8:
        raise CorruptData("seek table frame header is damaged")
    c_offsets, d_offsets = [0], [0]
    for i in range(frames):
        c, d = struct.unpack_from("<II", raw, 8 + i * entry_size)
        if d > READ_FRAME_LIMIT or c > READ_COMPRESSED_LIMIT or c == 0:
            raise CorruptData(f"seek table entry {i} is implausible or over the {READ_FRAME_LIMIT >> 20} MiB frame limit"
                              f" (compressed {c}, decompressed {d})")
        c_offsets.append(c_offsets[-1] + c)
        d_offsets.append(d_offsets[-1] + d)
    if c_offsets[-1] != file_size - table_size:
        raise CorruptData(
            f"frames add up to {c_offsets[-1]} bytes but the layer holds {file_size - table_size} before its seek table"
            " (truncated or extended)"
        )
    return SeekTable(tuple(c_offsets), tuple(d_offsets), hashlib.sha256(raw).hexdigest())


_local = threading.local()


def _compress_frame(data: bytes | memoryview, level: int) -> bytes:
    compressor = getattr(_local, "compressor", None)
    if compressor is None or _local.level != level:
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
        _local.compressor, _local.level = compressor, level
    return compressor.compress(data)


def decompress_frame(data: bytes, expected_size: int, where: str) -> bytes:
    """Decompress exactly one frame that fills ``data`` and holds exactly ``expected_size`` bytes.

    The frame must declare the size the seek table says, end exactly where the
    seek table says (``allow_extra_data=False``: bytes after it, such as a
    second frame that one seek-table entry covers, are refused, not ignored)
    and decompress to that size (zstd refuses a frame whose blocks produce
    more or less than it declares, and checks the frame's checksum). Output
    is bounded by the declared size, so memory stays within
    :data:`READ_FRAME_LIMIT`. One-shot decompression into a buffer of the
    declared size: a streaming decompressor copies through its window and
    joins its output, three times slower (2.3 against 0.7 ms per MiB here).
    """
    if expected_size > READ_FRAME_LIMIT:
        raise CorruptData(f"{where}: frame of {expected_size} bytes is over the {READ_FRAME_LIMIT >> 20} MiB limit")
    try:
        params = zstandard.get_frame_parameters(data)
        if params.content_size != expected_size:
            raise CorruptData(f"{where}: frame declares {params.content_size} bytes, seek table says {expected_size}")
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=expected_size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CorruptData(f"{where}: damaged zstd frame ({exc})") from None
    if len(out) != expected_size:
        raise CorruptData(f"{where}: frame decompressed to {len(out)} bytes, expected {expected_size}")
    return out


#: Frames a writer lets wait for compression before the caller waits. A backup's big files come
#: faster than two threads compress them, its small files slower than one thread can read them:
#: with room for 32 frames the reading runs on into the small files while the compression of the
#: big ones catches up. Bench tree, full backup, 9 runs each taking turns on a quiet machine:
#: median 1.70 -> 1.50 s, peak RSS 53 -> 87 MiB. (An earlier try, on a machine busy with other
#: runs, saw no gain over 9 runs and went back to 4: measure on a quiet machine.)
PENDING_FRAMES = 32

#: Niceness of the compressors over the caller, the bottleneck on small files (full backup, 8 rounds:
#: ratio 0.93 at +5, 0.89 at +19; +5 leaves them a quarter of a core on a busy host, not 1.5 %).
COMPRESSOR_NICENESS = 5


def _behind_the_caller() -> None:
    """Lower this thread's priority (only on Linux: elsewhere it would be the whole process's)."""
    me = threading.get_native_id()
    with contextlib.suppress(OSError):  # a sandbox that forbids it: equal priority, as before
        if sys.platform == "linux":
            os.setpriority(os.PRIO_PROCESS, me, os.getpriority(os.PRIO_PROCESS, me) + COMPRESSOR_NICENESS)


class SeekableWriter:
    """Write a byte stream as independent zstd frames, then the seek table.

    Frames are compressed by a small thread pool (zstd releases the GIL), and
    a single writer thread appends them in order and keeps the sha256 of the
    output, so reading and hashing the guest's files on the caller's thread
    overlaps with both. ``position`` is the number of uncompressed bytes
    written so far, which the tar writer uses for data offsets.
    """

    def __init__(self, f: BinaryIO, *, level: int = 3, frame_size: int = FRAME_SIZE, threads: int = 2) -> None:
        self._f = f
        self._level = level
        self._frame_size = frame_size
        self._parts: list[bytes | bytearray | memoryview] = []
        self._buffered = 0
        self._sizes: list[tuple[int, int]] = []
        self._pending: list[Future[None]] = []
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="zstd",
                                        initializer=_behind_the_caller)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layer-writer")
        self._max_pending = PENDING_FRAMES
        self._sha256 = hashlib.sha256()
        self.position = 0
        self.compressed_bytes = 0

    @property
    def sha256(self) -> str:
        """Hex sha256 of everything written to the file (valid after close)."""
        return self._sha256.hexdigest()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._parts.append(data)
        self._buffered += len(data)
        self.position += len(data)
        while self._buffered >= self._frame_size:
            self._cut()

    def _cut(self) -> None:
        """Submit the first frame's worth of the written parts, copied once (a part that crosses the
        frame's end is split as a view: a file's 1 MiB chunks are not copied again for what follows)."""
        parts, need, whole = self._parts, self._frame_size, 0
        while need and len(parts[whole]) <= need:
            need -= len(parts[whole])
            whole += 1
        frame = parts[:whole]
        if need:
            view = memoryview(parts[whole])
            frame.append(view[:need])
            parts[whole] = view[need:]
        del parts[:whole]
        self._buffered -= self._frame_size
        self._submit(frame[0] if len(frame) == 1 else b"".join(frame))

    def _submit(self, chunk: bytes | memoryview) -> None:
        compressed = self._pool.submit(_compress_frame, chunk, self._level)
        self._pending.append(self._writer.submit(self._append, compressed, len(chunk)))
        while len(self._pending) > self._max_pending:
            self._pending.pop(0).result()

    def _append(self, compressed: Future[bytes], size: int) -> None:
        """Runs on the writer thread, in submission order."""
        frame = compressed.result()
        self._emit(frame)
        self._sizes.append((len(frame), size))

    def _emit(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:  # an unbuffered file may take part of a write (a nearly full disk)
                view = view[self._f.write(view):]
        except OSError as exc:
            raise write_failed(exc, "cannot write layer") from exc
        self._sha256.update(data)
        self.compressed_bytes += len(data)

    def close(self) -> None:
        """Flush the last frame and append the seek table. The file stays open."""
        try:
            if self._parts:
                self._submit(b"".join(self._parts))
                self._parts, self._buffered = [], 0
            while self._pending:
                self._pending.pop(0).result()
            self._emit(encode_seek_table(self._sizes))
        finally:
            self.abort()

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True, cancel_futures=True)


class FrameCache:
    """A bounded LRU of decompressed frames, shared by readers, thread-safe."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._frames: OrderedDict[tuple[object, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[object, int]) -> bytes | None:
        with self._lock:
            frame = self._frames.get(key)
            if frame is not None:
                self._frames.move_to_end(key)
            return frame

    def put(self, key: tuple[object, int], frame: bytes) -> None:
        if len(frame) > self.max_bytes:
            return
        with self._lock:
            if key in self._frames:
                return
            self._frames[key] = frame
            self._bytes += len(frame)
            while self._bytes > self.max_bytes:
                _, old = self._frames.popitem(last=False)
                self._bytes -= len(old)


class SeekableReader:
    """Random access into a seekable zstd file by uncompressed offset.

    ``frames_decompressed`` counts the frames actually decompressed (cache
    misses), which tests use to prove a read touched only what it needed.
    """

    def __init__(self, path: str | os.PathLike[str], *, cache: FrameCache | None = None, name: str = "",
                 proofs: PlacementProofs | None = None) -> None:
        self.path = os.fspath(path)
        name = name or self.path
        try:
            self._f = open(self.path, "rb")
        except FileNotFoundError:
            raise CorruptData(f"{name}: layer file is missing") from None
        except OSError as exc:
            raise CorruptData(f"{name}: cannot open layer: {exc.strerror}") from None
        try:
            st = os.fstat(self._f.fileno())
            table = read_seek_table(self._f, st.st_size)
        except CorruptData as exc:
            self._f.close()
            raise CorruptData(f"{name}: {exc}") from None
        self._setup(self.path, name, cache, table, st.st_size, proofs, f"{self.path}:{st.st_size}:{st.st_ino}:{st.st_mtime_ns}")

    def _setup(self, key: str, name: str, cache: FrameCache | None, table: SeekTable, file_size: int,
               proofs: PlacementProofs | None, proof_key: str) -> None:
        """State shared by every source of frames; ``key`` names the layer in the frame cache,
        ``proof_key`` the layer file for placement proofs kept in ``proofs``."""
        self.path, self.name, self.table = key, name, table
        self.file_size = file_size
        """The layer file's size, seek table included (what a copy of the raw file reads: :meth:`raw`)."""
        self._cache = cache if cache is not None else FrameCache()
        self._lock = threading.Lock()
        # Single flight: concurrent readers of one frame (kernel readahead) decompress it once.
        self._loading = [threading.Lock() for _ in range(16)]
        self.frames_decompressed = 0
        self._proofs, self._proof_key = proofs, proof_key
        # Frames before this one are known to hold the sizes the seek table gives them.
        self._placed = proofs.read(proof_key, table.digest, table.frames) if proofs is not None else 0
        # Frames after it already checked on their own (a read-ahead decompressed them first): the
        # proof skips them, and ``_placed`` moves past them once the frames before are proved too.
        self._proven: set[int] = set()

    def _read_compressed(self, offset: int, length: int) -> bytes:
        """Raw bytes of the layer file (a remote store reads them over SFTP instead)."""
        return os.pread(self._f.fileno(), length, offset)

    def raw(self, offset: int, length: int) -> bytes:
        """Bytes of the layer file as stored, for copying it whole (an export): never decompressed."""
        return self._read_compressed(offset, length)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "SeekableReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def size(self) -> int:
        return self.table.decompressed_size

    def frame(self, index: int) -> bytes:
        key = (self.path, index)
        cached = self._cache.get(key)
        if cached is not None and index < self._placed:
            return cached
        with self._loading[index % len(self._loading)]:
            cached = self._cache.get(key)
            if cached is None:
                return self._load(index)
            # Decompressed ahead (it holds its entry's size) but not served before the frames before it are placed.
            self._check_placement(index)
            with self._lock:
                self._mark_placed(index)
            return cached

    def _check_placement(self, index: int) -> None:
        """Prove every frame before ``index`` is where and what the seek table says, once per reader.

        A frame's offset in the stream is the sum of the sizes listed before
        it: one lying entry for a frame never read (a wrong size, or one entry
        covering two frames) would shift every later frame, which would then
        decompress cleanly and serve other bytes. The proof runs from the first
        frame, whose start is known, through each frame's header and block
        headers to its end, which is where the next one starts
        (:func:`misplacing`). A frame whose header is damaged leaves the
        decompressed offset of the next one unknown, so the frames after it
        are refused too: damage, never other bytes. A frame damaged further in
        fails alone if a frame starts exactly where its entry ends.
        """
        with self._lock:
            todo = [j for j in range(self._placed, index) if j not in self._proven]
        if not todo:
            return
        self._place(todo)
        with self._lock:
            for j in todo:
                self._mark_placed(j)
            placed = self._placed
        if self._proofs is not None:
            self._proofs.write(self._proof_key, self.table.digest, placed)

    def _mark_placed(self, index: int) -> None:
        """Frame ``index`` holds the size its entry gives it; the caller holds ``_lock``."""
        if index == self._placed:
            self._placed += 1
            while self._placed in self._proven:
                self._proven.remove(self._placed)
                self._placed += 1
        elif index > self._placed:
            self._proven.add(index)

    def _place(self, frames: list[int]) -> None:
        """Check ``frames`` (ascending) from their headers (a few bytes each, never decompressed)."""
        t = self.table
        for j in frames:
            problem = misplacing(self._read_compressed, t.c_offsets[j], t.c_offsets[j + 1], t.d_offsets[j + 1] - t.d_offsets[j],
                                 last=j + 1 == t.frames)
            if problem:
                raise CorruptData(f"{self.name} frame {j}: {problem} (so the frames after it cannot be placed)")

    def _load(self, index: int) -> bytes:
        self._check_placement(index)
        t = self.table
        start, end = t.c_offsets[index], t.c_offsets[index + 1]
        return self._decode(index, self._read_compressed(start, end - start))

    def _decode(self, index: int, data: bytes | memoryview) -> bytes:
        """Frame ``index`` from its compressed bytes, checked, counted and cached."""
        t = self.table
        if len(data) != t.c_offsets[index + 1] - t.c_offsets[index]:
            raise CorruptData(f"{self.name}: frame {index} is truncated")
        frame = decompress_frame(bytes(data), t.d_offsets[index + 1] - t.d_offsets[index], f"{self.name} frame {index}")
        with self._lock:
            self.frames_decompressed += 1
            self._mark_placed(index)  # it decompressed to exactly its entry's size: it is where the entry says
        self._cache.put((self.path, index), frame)
        return frame

    #: Frames a read-ahead loads with one read of the file: one for a local file; a remote reader, whose
    #: every read costs a round trip, may fetch several adjacent frames at once (:meth:`load_frames`).
    frames_per_fetch = 1

    def load_frames(self, indices: list[int]) -> None:
        """Put frames ``indices`` (ascending, adjacent or nearly) into the cache, for read-ahead."""
        for index in indices:
            self.frame(index)

    def is_cached(self, index: int) -> bool:
        """Whether frame ``index`` is decompressed in the cache now (for read-ahead, which skips it)."""
        return self._cache.get((self.path, index)) is not None

    def read_cached(self, offset: int, length: int) -> bytes | memoryview | None:
        """The bytes if every frame covering them is already decompressed in the cache (no I/O), else None.

        Within one frame the answer is a view of the cached frame, not a copy:
        the FUSE adapter hands it straight to the kernel.
        """
        t = self.table
        covering = t.frames_covering(offset, length)
        if covering and covering[-1] >= self._placed:
            return None  # decompressed ahead, but the frames before are not all placed yet: frame() proves them
        parts = []
        for i in covering:
            frame = self._cache.get((self.path, i))
            if frame is None:
                return None
            parts.append(memoryview(frame)[max(offset - t.d_offsets[i], 0):min(offset + length - t.d_offsets[i], len(frame))])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read(self, offset: int, length: int) -> bytes:
        """Return up to ``length`` bytes from uncompressed ``offset`` (short only at EOF)."""
        t = self.table
        parts = []
        for i in t.frames_covering(offset, length):
            frame = self.frame(i)
            lo = max(offset - t.d_offsets[i], 0)
            hi = min(offset + length - t.d_offsets[i], len(frame))
            parts.append(frame[lo:hi] if (lo, hi) != (0, len(frame)) else frame)
        return b"".join(parts)
