"""Reading the small files of a batch of a local guest's files: whole, and ahead of the backup once a disk is waited for.

A small file (at most :data:`SMALL_READ` bytes) costs four system calls,
open, pread, fstat and close, and no generator: with a million tiny files
that per-file cost is much of a backup. (A larger file is streamed in chunks
without reading its holes, by :mod:`vmlfs.engine.holes`.)

On a cold cache each small file waits for the disk (50 µs and more, against
5 µs from the page cache), and a disk serves several requests at once while
one thread reading in turn waits for each. So once reads find their files not
in the page cache (a one-byte ``RWF_NOWAIT`` read says so without waiting;
four of the last sixteen: a tree mostly cached is read faster without them),
the rest of the batch is read one of two ways:

* **advised**: the backup's own thread opens the next :data:`ADVISED` files
  ahead of the one it reads and tells the kernel it will need them
  (``POSIX_FADV_WILLNEED``), so their reads are in flight together while it
  works on the first, instead of each waited for in turn. No thread and no
  GIL (each advice still costs its own request: on a virtual disk, a VM exit,
  but not a wait). Reading 30,000 evicted tiny files (their inodes
  cached, as after a scan) took 1.14-1.21 s instead of 1.97-2.25 s on one
  virtual disk; on a warm cache the advice changes nothing measurable.
* **readers**: :data:`READERS` threads read the rest of the batch just ahead
  of the backup, at most :data:`AHEAD` files and :data:`AHEAD_BYTES` ahead, so
  memory stays bounded. On a warm cache they never start: they would need the
  GIL between two system calls, and handing it to and fro costs more than the reads.

Which way pays depends on the disk, so each guest learns it
(:class:`ReadAheadChoice`). On one host readers read a cold tree of tiny files
in 0.70x the time; on a virtual disk that answers a miss in 30 µs they made
reading 100,000 evicted tiny files take 10.5 s instead of 6.7 s, with three
times the CPU (about 100 µs more per file, in handing the GIL over).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable

from vmlfs.engine.guest import FileChanged, ScanEntry

SMALL_READ = 1 << 20
READERS = 8  # a cold 50,000-file read: 2.2 s with 4, 1.7 s with 8, 1.5-1.8 s with 16
AHEAD, AHEAD_BYTES = 128, 32 << 20  # files read ahead of the consumer, and their bytes, at most
ADVISED = 64  # files opened and advised ahead of the one read (32 to 128 did alike; 512 was slower)
MISSES, RECENT = 4, (1 << 16) - 1  # this many misses among the last 16 probes make a batch cold
RETRY_EVERY = 8  # cold batches before the way that was slower is tried again (a disk's speed changes with its load)
MAX_RETRY_EVERY = 128  # the interval doubles at each retry while the choice stands, up to this
MIN_SAMPLE = 256  # files read after a batch turned cold, at least, for its time to be a measure of either way
_UNREAD = object()


class ReadAheadChoice:
    """Whether readers ahead pay on one guest's disk, or advised reads in turn, learnt from the cold part of each batch.

    The first cold batch is read with readers, the next advised; later ones
    the way that took less time per file, and now and then the other way, so
    that a choice made under a passing load is measured again: after
    :data:`RETRY_EVERY` batches, then after twice as many at each retry while
    the choice stands (up to :data:`MAX_RETRY_EVERY`), since every retry of the
    slower way costs a batch read slowly (on one virtual disk, readers cost
    about 100 µs more per file). When the choice changes, retries are frequent again.
    A batch's cold part is timed from its first misses to its end, the
    backup's own work on each file included: that is what readers should
    make faster.
    """

    def __init__(self) -> None:
        self._per_file: dict[bool, float] = {}  # seconds, the latest cold part read each way
        self._faster: bool | None = None  # the choice standing
        self._every = RETRY_EVERY  # batches between retries of the other way, while the choice stands
        self._since_retry = 0

    def readers(self) -> bool:
        """Whether the batch that just turned cold is read on with readers."""
        if True not in self._per_file:
            return True
        if False not in self._per_file:
            return False
        faster = self._per_file[True] < self._per_file[False]
        if faster != self._faster:
            self._faster, self._every, self._since_retry = faster, RETRY_EVERY, 0
        self._since_retry += 1
        if self._since_retry < self._every:
            return faster
        self._since_retry, self._every = 0, min(2 * self._every, MAX_RETRY_EVERY)
        return not faster

    def record(self, readers: bool, seconds: float, files: int) -> None:
        if files >= MIN_SAMPLE:
            self._per_file[readers] = seconds / files

    def per_file(self, readers: bool) -> float | None:
        """The latest measure of reading each way (seconds per file), None before one."""
        return self._per_file.get(readers)


class SmallReads:
    """The small files of one batch, handed out in order, each read whole and checked against its scan."""

    def __init__(self, open_file: Callable[[ScanEntry], int], entries: list[ScanEntry], choice: ReadAheadChoice) -> None:
        self._open, self._entries, self._choice = open_file, entries, choice
        self._results: list[object] = []
        self._claimed = 0  # entries before this one are taken, by a reader or by the consumer
        self._consumed = 0
        self._ahead_bytes = 0  # of the entries claimed by readers and not yet taken
        self._stop = False
        self._cond = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        self._probe = bytearray(1)
        self._missed = 0  # one bit per recent probe, 1 if its file was not in the page cache
        self._probing = True  # until the batch turns cold
        self._cold: tuple[float, int, bool] | None = None  # since when, from which entry, read with readers or not
        self._advised: deque[int | FileChanged] = deque()  # fds, opened and advised, of the entries after the one taken
        self._next_advised: int | None = None  # the next entry to open and advise; None: reads are not advised

    def take(self, i: int) -> bytes | FileChanged:
        """Entry ``i``'s content, or why it cannot be taken as scanned (entries are taken in order, each once)."""
        if not self._threads:
            self._consumed = i + 1
            if self._next_advised is not None:
                return self._take_advised(i)
            return self._read(i, probe=self._probing)
        cond = self._cond
        with cond:
            self._consumed = i + 1
            mine = self._claimed <= i
            if mine:
                self._claimed = i + 1
            else:
                while self._results[i] is _UNREAD:
                    cond.wait()
                self._ahead_bytes -= self._entries[i].size
            cond.notify_all()  # a reader may wait for room ahead
        if mine:
            return self._read(i, probe=False)
        result, self._results[i] = self._results[i], None
        return result  # type: ignore[return-value]

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        for fd in self._advised:
            if isinstance(fd, int):
                os.close(fd)
        self._advised.clear()
        if self._cold is not None:
            since, first, readers = self._cold
            self._choice.record(readers, time.perf_counter() - since, self._consumed - first)

    def _read(self, i: int, probe: bool) -> bytes | FileChanged:
        """Read entry ``i``; with ``probe``, see whether the batch has turned cold, and then how to read on."""
        try:
            fd = self._open(self._entries[i])
        except FileChanged as exc:
            return exc
        return self._read_open(i, fd, probe)

    def _read_open(self, i: int, fd: int, probe: bool = False) -> bytes | FileChanged:
        """Read entry ``i`` from ``fd``, which this closes.

        One fstat after the read checks the file against the scan: still a
        regular file of the scanned size and mtime. A hole reads as zeros.
        """
        entry = self._entries[i]
        try:
            size = entry.size
            if probe and size:
                self._missed = (self._missed << 1 | (not self._cached(fd))) & RECENT
                if self._missed.bit_count() >= MISSES:
                    self._turned_cold(i + 1)
            data = os.pread(fd, size, 0) if size else b""
            while 0 < len(data) < size:  # a short read before the end: some file systems do that
                more = os.pread(fd, size - len(data), len(data))
                if not more:
                    break
                data += more
            st = os.fstat(fd)
        except OSError as exc:
            return FileChanged(f"{os.fsdecode(entry.path)}: cannot read ({exc.strerror})")
        finally:
            os.close(fd)
        if len(data) != size:
            return FileChanged(f"{os.fsdecode(entry.path)}: shrank while it was read")
        if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime_ns != entry.mtime_ns:
            return FileChanged(f"{os.fsdecode(entry.path)}: changed while it was read")
        return data

    def _take_advised(self, i: int) -> bytes | FileChanged:
        """Entry ``i``, read from the fd opened for it ahead; first the next :data:`ADVISED` files are
        opened and the kernel told to read them (so it does while this one is read and packed)."""
        assert self._next_advised is not None
        last = min(len(self._entries), i + 1 + ADVISED)
        while self._next_advised < last:
            self._advised.append(self._advise(self._next_advised))
            self._next_advised += 1
        opened = self._advised.popleft()
        return opened if isinstance(opened, FileChanged) else self._read_open(i, opened)

    def _advise(self, i: int) -> int | FileChanged:
        """An fd of entry ``i``, its bytes asked of the disk already (advice only: a file system may ignore it)."""
        try:
            fd = self._open(self._entries[i])
        except FileChanged as exc:
            return exc
        if self._entries[i].size:
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
        return fd

    def _cached(self, fd: int) -> bool:
        """Whether the file's first byte is in the page cache (a file system that cannot tell: yes)."""
        try:
            os.preadv(fd, [self._probe], 0, os.RWF_NOWAIT)
        except BlockingIOError:
            return False
        except OSError:
            pass
        return True

    def _turned_cold(self, first: int) -> None:
        """Read the entries from ``first`` on as the guest's :class:`ReadAheadChoice` says, and time it."""
        self._probing = False
        readers = self._choice.readers()
        self._cold = (time.perf_counter(), first, readers)
        if readers:
            self._start(first)
        else:
            self._next_advised = first

    def _start(self, first: int) -> None:
        """Let :data:`READERS` threads read the entries from ``first`` on."""
        self._results = [_UNREAD] * len(self._entries)
        self._claimed = self._consumed = first
        self._threads = [threading.Thread(target=self._work, name="guest-read", daemon=True) for _ in range(READERS)]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        entries, cond = self._entries, self._cond
        while True:
            with cond:
                while not self._stop and self._claimed < len(entries) and (
                        self._claimed >= self._consumed + AHEAD or self._ahead_bytes >= AHEAD_BYTES):
                    cond.wait()
                if self._stop or self._claimed >= len(entries):
                    return
                i = self._claimed
                self._claimed += 1
                self._ahead_bytes += entries[i].size
            result = self._read(i, probe=False)
            with cond:
                self._results[i] = result
                cond.notify_all()
