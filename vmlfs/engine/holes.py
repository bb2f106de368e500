"""Sparse files: reading one without reading its holes, and writing one back with holes.

The local guest, the local restore and the SSH agent share this code. The
agent gets this file's text in front of its own (``AGENT_SOURCE`` in
vmlfs/backends/ssh_guest.py), so like the agent it stays stdlib-only and runs
on python3.6: no ``from __future__`` import, annotations only as strings.

A layer stores a hole as zeros (docs/FORMAT.md, "Sparse files"): reading
skips what SEEK_DATA/SEEK_HOLE call a hole, and writing skips every aligned
block of zeros, so a restored file's allocation stays within one block of
its data runs.
"""

import errno
import os
from collections.abc import Iterator


def data_runs(fd: "int", size: "int") -> "Iterator[tuple[int, int, bool]]":
    """(offset, length, is data) pieces covering the file's first ``size`` bytes.

    Only a file with fewer allocated blocks than bytes is asked (one fstat);
    any other, or a file system that cannot tell, is one run of data. Moves the
    fd's offset: read with ``pread``.
    """
    if os.fstat(fd).st_blocks * 512 >= size:
        yield 0, size, True
        return
    pos = 0
    while pos < size:
        try:
            data = min(os.lseek(fd, pos, os.SEEK_DATA), size)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # the file system cannot tell: take the rest as data
                yield pos, size - pos, True
                return
            data = size  # ENXIO: only a hole up to the end
        if data > pos:
            yield pos, data - pos, False
        if data == size:
            return
        end = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        yield data, end - data, True
        pos = end


def read_with_holes(fd: "int", size: "int", chunk: "int") -> "Iterator[bytes]":
    """The file's first ``size`` bytes in pieces of at most ``chunk``, a hole as zeros it never
    reads; ends early if the file is shorter (the caller sees the bytes missing)."""
    for pos, length, is_data in data_runs(fd, size):
        end = pos + length
        while pos < end:
            n = min(chunk, end - pos)
            data = os.pread(fd, n, pos) if is_data else bytes(n)
            if not data:
                return
            pos += len(data)
            yield data


def write_with_holes(fd: "int", data: "bytes", pos: "int", block: "int") -> None:
    """Write ``data`` at offset ``pos``, leaving each whole aligned ``block`` of zeros a hole.

    The caller ends the file with ``ftruncate`` to its size, so a hole at the
    end still counts in the size.
    """
    zeros = bytes(block)
    start = 0  # the bytes not yet written begin here
    for at in range(-pos % block, len(data) - block + 1, block):
        if data[at:at + block] == zeros:
            if start < at:
                os.pwrite(fd, data[start:at], pos + start)
            start = at + block
    if start < len(data):
        os.pwrite(fd, data[start:], pos + start)
