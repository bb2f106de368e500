"""Packing one file's bytes into a backup's layer, unless they are already stored.

A small file is read whole and hashed before deciding; a large one is
hashed first only when another file of its size exists (the only way it can
be a copy), else streamed straight into the layer. A copy within the layer
becomes a tar hardlink, so ``tar -x`` of a full layer gives every file; a
copy in an older layer is pointed at by the tree.
"""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from vmlfs.archive.layer import LayerWriter, MemberInfo
from vmlfs.archive.manifest import Manifest, Node
from vmlfs.engine.guest import FileChanged, Guest, ScanEntry

SMALL_FILE = 4 << 20  # read whole into memory: hash before deciding to store
HASH_AHEAD = 8  # chunks of a streamed file given to its hashing thread and not yet hashed, at most
EMPTY_SHA256 = hashlib.sha256(b"").digest()


class _ChunkHasher:
    """The sha256 of a streamed file, taken on a thread of its own: hashlib lets go of the GIL for a
    chunk, so the caller reads and writes the next one meanwhile. At most :data:`HASH_AHEAD` chunks wait."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._pending: deque[Future[None]] = deque()

    def __enter__(self) -> "_ChunkHasher":
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)

    def update(self, chunk: bytes) -> None:
        self._pending.append(self._pool.submit(self._h.update, chunk))
        if len(self._pending) > HASH_AHEAD:
            self._pending.popleft().result()

    def digest(self) -> bytes:
        """The digest of every chunk given."""
        while self._pending:
            self._pending.popleft().result()
        return self._h.digest()


@dataclass
class Stats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    unchanged_files: int = 0
    packed_files: int = 0
    packed_bytes: int = 0
    deduplicated_files: int = 0
    changed_while_read: int = 0
    skipped_special: int = 0
    unreadable: int = 0
    xattr_files: int = 0  # paths with kept attributes: 0 lets a mount tell the kernel it has none (docs/mount.md)


def hardlink(e: ScanEntry, target: bytes) -> MemberInfo:
    """The member of a file whose bytes are those of ``target``, earlier in the same layer."""
    return MemberInfo(e.path, "h", e.mode, e.uid, e.gid, e.uname, e.gname, e.size, e.mtime_ns, target, e.xattrs)


class Packer:
    """Stores file contents in one layer, remembering what it holds (by sha256) for deduplication."""

    def __init__(self, ts: str, guest: Guest, base: Manifest | None, layer: LayerWriter, stats: Stats) -> None:
        self.ts, self.guest, self.base, self.layer, self.stats = ts, guest, base, layer, stats
        self.stored: dict[bytes, tuple[int, bytes]] = {}  # sha256 -> (offset, path) in this layer
        self.big_sizes: set[int] = set()

    def _known(self, digest: bytes) -> tuple[str, int] | None:
        here = self.stored.get(digest)
        if here is not None:
            return self.ts, here[0]
        if self.base is not None:
            hit = self.base.by_hash(digest)
            if hit is not None and hit.layer is not None and hit.data_offset is not None:
                return hit.layer, hit.data_offset
        return None

    def pack(self, node: Node, entry: ScanEntry, chunks) -> bool:
        """Store a file's bytes unless already stored; return whether this layer got a member."""
        if entry.size <= SMALL_FILE:
            data = b"".join(chunks)
            digest = hashlib.sha256(data).digest()
            return self._place(node, entry, digest, data)
        has_peer = entry.size in self.big_sizes or (self.base is not None and self.base.same_size_exists(entry.size))
        self.big_sizes.add(entry.size)
        if has_peer:
            digest = self.guest.digest(entry)
            if self._known(digest) is not None:
                chunks.close()
                return self._place(node, entry, digest, None)
        offset = self.layer.begin_file(entry)
        written = 0
        with _ChunkHasher() as h:
            try:
                for chunk in chunks:
                    self.layer.write(chunk)
                    h.update(chunk)
                    written += len(chunk)
            except FileChanged:
                # The header promised entry.size bytes: pad so the tar stays well-formed.
                # The manifest will not list this member (docs/FORMAT.md, "dead members").
                remaining = entry.size - written
                while remaining > 0:
                    self.layer.write(bytes(min(remaining, 1 << 20)))
                    remaining -= min(remaining, 1 << 20)
                self.layer.end_file()
                raise
            digest = h.digest()
        self.layer.end_file()
        self._record(node, entry, digest, offset)
        return True

    def _place(self, node: Node, entry: ScanEntry, digest: bytes, data: bytes | None) -> bool:
        known = self._known(digest)
        if known is not None:
            node.sha256, (node.layer, node.data_offset) = digest, known
            self.stats.deduplicated_files += 1
            here = self.stored.get(digest)
            if here is not None:  # a copy inside this layer: a tar hardlink keeps `tar -x` complete
                self.layer.add(hardlink(entry, here[1]))
                return True
            return False
        if entry.size == 0:
            node.sha256 = EMPTY_SHA256
            self.layer.add(entry)
            return True
        assert data is not None
        self._record(node, entry, digest, self.layer.add_file(entry, data))
        return True

    def _record(self, node: Node, entry: ScanEntry, digest: bytes, offset: int) -> None:
        node.sha256, node.layer, node.data_offset = digest, self.ts, offset
        self.stored.setdefault(digest, (offset, entry.path))
        self.stats.packed_files += 1
        self.stats.packed_bytes += entry.size
