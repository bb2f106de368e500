"""Where a seekable layer's frames are, and keeping that proof (:mod:`vmlfs.archive.seekable` reads with them).

A frame's offset in a layer is the sum of the sizes its seek table lists
before it, so one lying entry for a frame never read would move every later
frame. :func:`misplacing` checks one frame against its entry from its headers
(never decompressing); a reader proves the frames before a read one by one
from the first, and :class:`PlacementProofs` keeps what it proved.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import zstandard

FRAME_MAGIC = b"\x28\xb5\x2f\xfd"  # 0xFD2FB528, little-endian: where a zstd frame starts
FRAME_HEADER_MAX = 18  # ZSTD_FRAMEHEADERSIZE_MAX: magic, descriptor, window, dictionary id, content size


def misplacing(read: Callable[[int, int], bytes | memoryview], pos: int, end: int, size: int, *, last: bool) -> str | None:
    """How the frame at ``pos`` contradicts its seek-table entry (``end``, ``size``), or None if it is
    where the entry says; ``read(offset, length)`` gives the compressed bytes, ``last`` says the
    frame is the last one (``end`` is then the end of the frames, which the table's total proves).

    The frame's header must parse and declare ``size``: without it the decompressed offset of
    every later frame is unknown. Its blocks must then end exactly at ``end``. A block header
    that cannot be parsed is damage inside the frame, not a lie about it (an intact frame walked
    from its real start always parses to its real end): the frame fails alone when it is read,
    and the next frame is still placed if a frame starts exactly at ``end``.
    """
    head = read(pos, min(FRAME_HEADER_MAX, end - pos))
    try:
        params = zstandard.get_frame_parameters(head)
        pos += zstandard.frame_header_size(head)
    except zstandard.ZstdError:
        return "its frame header is damaged"
    if params.content_size != size:
        return f"its header declares {params.content_size} bytes, the seek table {size}"
    while True:
        block = read(pos, 3)
        value = int.from_bytes(block, "little")
        kind, length = (value >> 1) & 3, value >> 3
        if len(block) != 3 or kind == 3 or length > zstandard.BLOCKSIZE_MAX:
            return None if last or bytes(read(end, 4)) == FRAME_MAGIC else "it is damaged and no frame starts where its entry ends"
        pos += 3 + (1 if kind == 1 else length)  # an RLE block holds one byte
        if pos > end:
            return "its blocks run past the end the seek table gives it"
        if value & 1:
            break
    if pos + (4 if params.has_checksum else 0) != end:
        return "its blocks end before the end the seek table gives it"
    return None


class PlacementProofs:
    """Where proofs of frame placement are kept between readers (a mount's, the next mount's).

    Proving where a layer's frames are (:meth:`vmlfs.archive.seekable.SeekableReader._check_placement`)
    walks the headers of every frame before a read: about 15 ms for a file at
    the end of a 500 MB layer, which a cold ``cat`` would pay at every mount.
    The proof holds for the seek table it was made for, whatever reads the
    layer later (damage to a frame is found when that frame is read), so it is
    kept under the reader's key (which names the layer file, its size and, for
    a local file, its inode and mtime) and the table's sha256: a layer whose
    table or file changed starts again. A proof that cannot be read or
    written only costs the walk again.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str, table_digest: str) -> Path:
        return self.directory / hashlib.sha256(f"{key}\0{table_digest}".encode()).hexdigest()

    def read(self, key: str, table_digest: str, frames: int) -> int:
        """How many leading frames an earlier reader proved placed (0 if none) of a table of ``frames``."""
        try:
            placed = int(self._path(key, table_digest).read_text())
        except (OSError, ValueError):
            return 0
        return placed if 0 <= placed <= frames else 0

    def write(self, key: str, table_digest: str, placed: int) -> None:
        path = self._path(key, table_digest)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.part")
            tmp.write_text(str(placed))
            os.replace(tmp, path)
        except OSError:
            pass
