"""What every remote store reads the same way: layers by ranged reads of whole frames, trees through a local cache.

A remote store (SSH, S3) gives a callable that reads ``length`` bytes at
``offset`` of one stored file; :class:`RangedLayerReader` reads the seek
table from the file's tail and then only the frames a read needs, through
the shared in-memory :class:`FrameCache` (keyed by the layer's sha256, so a
replaced layer never meets stale frames). :func:`cached_tree` keeps trees in
a local directory under their sha256 — the name a record gives them — and
checks each download against it, so a cached tree is never stale.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Callable

from vmlfs.archive.placement import PlacementProofs, misplacing
from vmlfs.archive.seekable import FOOTER, SEEKABLE_MAGIC, FrameCache, SeekableReader, read_seek_table
from vmlfs.errors import CorruptData

TREE_CACHE_BYTES = 2 << 30
PLACE_FETCH = 16 << 20  # compressed bytes fetched per read while proving where a layer's frames are
TAIL = 1 << 20  # bytes read from a layer's end for its seek table (1 MiB covers 100 000 frames)
#: What a first read of a layer's end takes: the seek table of a layer of up to 8000 frames (8 GiB),
#: read again up to TAIL for a bigger one (1 MiB each time would cost 80 ms on a 100 Mbit/s link).
FIRST_TAIL = 64 << 10


def cache_root(kind: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vmlfs" / kind


class RangedLayerReader(SeekableReader):
    """A SeekableReader whose frames come from ranged reads of a remote file.

    Proving where the frames before a read are (:meth:`SeekableReader._check_placement`)
    needs the headers of every block of those frames, spread through them: a
    remote reader fetches those frames whole, in large reads, and walks their
    headers without decompressing; the proof is kept in ``proofs`` (the
    store's local cache) for later readers, as for a local layer.
    """

    def __init__(self, key: str, size: int, tail: bytes, read_range: Callable[[int, int], bytes], *,
                 cache: FrameCache, name: str, proofs: PlacementProofs | None, frames_per_fetch: int = 1) -> None:
        self._read_range = read_range
        self.frames_per_fetch = frames_per_fetch
        try:
            table = read_seek_table(_Tail(tail, size), size)
        except CorruptData as exc:
            raise CorruptData(f"{name}: {exc}") from None
        self._setup(key, name, cache, table, size, proofs, f"{key}:{size}")

    def _read_compressed(self, offset: int, length: int) -> bytes:
        return self._read_range(offset, length)

    def load_frames(self, indices: list[int]) -> None:
        """The frames not cached yet, fetched with one read from the first to the last of them.

        Their single-flight locks are held meanwhile (taken in one order, so two fetches never wait
        on each other): a read that needs one of these frames waits for this fetch instead of
        fetching the frame again on its own."""
        slots = sorted({i % len(self._loading) for i in indices})
        held = []
        try:
            for slot in slots:
                self._loading[slot].acquire()
                held.append(slot)
            todo = [i for i in indices if not self.is_cached(i)]
            if not todo:
                return
            # No proof of the frames before first: another read-ahead is fetching them now, and fetching
            # them again to walk their headers doubled a first read's traffic. Decompressing proves each
            # of these, and none is served before the frames before it are placed (frame(), read_cached()).
            t = self.table
            base = t.c_offsets[todo[0]]
            data = memoryview(self._read_compressed(base, t.c_offsets[todo[-1] + 1] - base))
            for i in todo:
                self._decode(i, data[t.c_offsets[i] - base:t.c_offsets[i + 1] - base])
        finally:
            for slot in held:
                self._loading[slot].release()

    def _place(self, frames: list[int]) -> None:
        t = self.table
        at = 0
        while at < len(frames):
            first = last = frames[at]  # one read: a run of adjacent frames, up to PLACE_FETCH bytes
            at += 1
            while at < len(frames) and frames[at] == last + 1 and t.c_offsets[last + 2] - t.c_offsets[first] <= PLACE_FETCH:
                last = frames[at]
                at += 1
            base = t.c_offsets[first]  # and the next frame's magic, which a damaged frame's placement looks at
            data = memoryview(self._read_compressed(base, min(t.c_offsets[last + 1] + 4, t.c_offsets[-1]) - base))

            def read(offset: int, length: int) -> memoryview:
                return data[offset - base:offset - base + length]

            for j in range(first, last + 1):
                problem = misplacing(read, t.c_offsets[j], t.c_offsets[j + 1], t.d_offsets[j + 1] - t.d_offsets[j],
                                     last=j + 1 == t.frames)
                if problem:
                    raise CorruptData(f"{self.name} frame {j}: {problem} (so the frames after it cannot be placed)")

    def close(self) -> None:
        """Nothing to close: reads go through the store's connection."""


def seek_table_bytes(tail: bytes) -> int:
    """How many bytes at the layer's end its seek table takes, by the footer ending ``tail``; 0 if
    there is no footer (the reader then says what is wrong)."""
    if len(tail) < FOOTER.size:
        return 0
    frames, descriptor, magic = FOOTER.unpack_from(tail, len(tail) - FOOTER.size)
    return 8 + frames * (12 if descriptor & 0x80 else 8) + FOOTER.size if magic == SEEKABLE_MAGIC else 0


class _Tail(io.RawIOBase):
    """The last bytes of a remote file, seekable by absolute offset (enough for the seek table)."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.base, self.pos = data, size - len(data), 0

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset
        return offset

    def read(self, n: int = -1) -> bytes:
        if self.pos < self.base:
            raise CorruptData("seek table larger than the part of the layer read for it")
        lo = self.pos - self.base
        out = self.data[lo:lo + n if n >= 0 else None]
        self.pos += len(out)
        return out


def cached_tree_path(cache_dir: Path, digest: str) -> str | None:
    """The tree ``digest`` if ``cache_dir`` holds it (marked as just used), else None."""
    local = cache_dir / "trees" / f"{digest}.sqlite"
    try:
        os.utime(local)
    except FileNotFoundError:
        return None
    return str(local)


def cached_tree(cache_dir: Path, digest: str, where: str, download: Callable[[str], None]) -> str:
    """The tree ``digest`` from ``cache_dir``, downloaded with ``download(local_path)`` (which raises
    FileNotFoundError if the tree is missing) and checked against ``digest`` if not cached yet."""
    local = cache_dir / "trees" / f"{digest}.sqlite"
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, suffix=".part")
        os.close(fd)
        try:
            try:
                download(tmp)
            except FileNotFoundError:
                raise CorruptData(f"{where}: tree {digest[:12]} is missing from the store") from None
            h = hashlib.sha256()
            with open(tmp, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            if h.hexdigest() != digest:
                raise CorruptData(f"{where}: tree {digest[:12]} differs from the sha256 its record names (damaged)")
            os.replace(tmp, local)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _trim(cache_dir)
    os.utime(local)
    return str(local)


def _trim(cache_dir: Path) -> None:
    """Keep the cache bounded: the least recently used trees go first."""
    files = sorted(cache_dir.glob("trees/*.sqlite"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for path in files:
        total += path.stat().st_size
        if total > TREE_CACHE_BYTES:
            path.unlink(missing_ok=True)
