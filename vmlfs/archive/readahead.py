"""Read-ahead for sequential readers of seekable layers, in one place.

A reader that goes through a file front to back should find the next frames
already decompressed: its reads then overlap decompression (on every core)
with serving. A reader that seeks (``dd skip=``, a database, ``tail``) must
not pay for frames it never reads. One :class:`ReadAhead` per mount owns all
of it:

* the worker pool, one thread per core, separate from any event loop and from
  the pool that serves reads, so read-ahead never delays a read;
* the claims: a frame being decompressed ahead is claimed once, so two readers
  (or two requests of one reader) never decompress it twice; cached frames are
  not claimed at all;
* per open file, a :class:`Cursor` that tells sequential reads from seeks
  (the kernel's requests may overtake each other, so "sequential" allows two
  frames of slack) and renews the claims once per frame the reader advances
  (once per ``frames_per_fetch`` frames for a remote reader, so that each
  renewal is one request of several frames), so most reads cost two comparisons.

Nothing else looks at the seek table for read-ahead; the frames themselves
come from :meth:`SeekableReader.frame`, with its single-flight loading and the
shared frame cache. Pure: threads only, no event loop.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from vmlfs.archive.seekable import FRAME_SIZE, SeekableReader
from vmlfs.errors import VmlfsError

READAHEAD_FRAMES = 6  # 6 MiB ahead: keeps both cores decompressing during a sequential read
_NEVER = -(1 << 62)  # where the previous read ended, before the first one: no read continues it


class ReadAhead:
    """The read-ahead of one mount: a pool of decompressing threads and the frames claimed for it."""

    def __init__(self, frames: int = READAHEAD_FRAMES, workers: int | None = None) -> None:
        self.frames = frames
        self._pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2, thread_name_prefix="readahead")
        self._lock = threading.Lock()
        self._claimed: set[tuple[SeekableReader, int]] = set()

    def cursor(self, reader: SeekableReader, start: int, size: int) -> "Cursor":
        """Follow one open file, whose bytes are ``[start, start + size)`` of ``reader``'s stream."""
        return Cursor(self, reader, start, size)

    def claim(self, reader: SeekableReader, offset: int, end: int) -> list[int]:
        """Up to :attr:`frames` frames after the one holding ``offset`` and starting before
        ``end``, that are neither cached nor claimed; the caller must :meth:`submit` them."""
        with self._lock:
            claimed = [i for i in reader.table.frames_after(offset, self.frames, end)
                       if (reader, i) not in self._claimed and not reader.is_cached(i)]
            self._claimed.update((reader, i) for i in claimed)
        return claimed

    def submit(self, reader: SeekableReader, frames: list[int]) -> None:
        """Decompress claimed frames in the pool (never blocks), ``reader.frames_per_fetch`` per task."""
        step = max(1, reader.frames_per_fetch)
        for at in range(0, len(frames), step):
            self._pool.submit(self._load, reader, frames[at:at + step])

    def _load(self, reader: SeekableReader, indices: list[int]) -> None:
        try:
            reader.load_frames(indices)
        except (VmlfsError, OSError):
            pass  # a damaged or unreadable frame fails the real read that needs it, with its log line
        finally:
            with self._lock:
                self._claimed.difference_update((reader, index) for index in indices)

    def close(self) -> None:
        """Stop: frames not yet started are dropped, running ones are waited for."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class Cursor:
    """One open file's reads: whether they are sequential, and how far ahead frames were claimed.

    Races between concurrent reads of one open file only blur these hints.
    """

    __slots__ = ("_owner", "_reader", "_start", "_size", "_last_end", "_claimed_at")

    def __init__(self, owner: ReadAhead, reader: SeekableReader, start: int, size: int) -> None:
        self._owner, self._reader, self._start, self._size = owner, reader, start, size
        self._last_end = _NEVER  # a first read is not yet sequential
        self._claimed_at = _NEVER  # the first sequential read claims

    def after_read(self, offset: int, end: int) -> list[int]:
        """After a read of ``[offset, end)`` of the file: start decompressing the frames ahead
        of a sequential reader; return the frames started (none for a seek or a first read)."""
        sequential = abs(offset - self._last_end) <= 2 * FRAME_SIZE
        self._last_end = end
        # Renewed once per fetch's worth of frames: each renewal then claims that many frames at the
        # far end of the window, which a remote reader fetches with one request (not one each).
        step = FRAME_SIZE * max(1, self._reader.frames_per_fetch)
        if not sequential or self._claimed_at <= end < self._claimed_at + step or end >= self._size:
            return []
        frames = self._owner.claim(self._reader, self._start + end - 1, self._start + self._size)
        self._claimed_at = end
        self._owner.submit(self._reader, frames)
        return frames
