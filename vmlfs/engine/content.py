"""A regular file's bytes, read back from the layer that holds them, and checked.

Restore (local and over SSH) and verify all need the same thing: the bytes of
a manifest file in chunks, from lazily opened layers, ending with a check
that nothing was short and the sha256 matches. Damage surfaces as
:class:`CorruptData` once the last chunk has been handed out.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterator

from vmlfs.archive.manifest import Node
from vmlfs.archive.seekable import SeekableReader
from vmlfs.errors import CorruptData

CHUNK = 1 << 20


class Layers:
    """Layers opened on first use, by backup timestamp, and closed together."""

    def __init__(self, open_layer: Callable[[str], SeekableReader]) -> None:
        self._open = open_layer
        self._readers: dict[str, SeekableReader] = {}

    def __call__(self, ts: str) -> SeekableReader:
        if ts not in self._readers:
            self._readers[ts] = self._open(ts)
        return self._readers[ts]

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


def file_chunks(layers: Callable[[str], SeekableReader], node: Node) -> Iterator[bytes]:
    """The file's content in chunks of at most 1 MiB; CorruptData if it is short or its sha256 differs."""
    h = hashlib.sha256()
    pos = 0
    if node.size:
        if node.layer is None or node.data_offset is None:
            raise CorruptData("file has no data location")
        layer = layers(node.layer)
        while pos < node.size:
            chunk = layer.read(node.data_offset + pos, min(CHUNK, node.size - pos))
            if not chunk:
                raise CorruptData(f"layer {node.layer} ends inside the file")
            h.update(chunk)
            pos += len(chunk)
            yield chunk
    if h.digest() != node.sha256:
        raise CorruptData("content does not match its sha256 in the manifest")
