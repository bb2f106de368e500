"""A trivial pyfuse3 file system serving a directory tree's metadata from memory: the floor for ``ls -lR``.

It reads every entry's ``lstat`` once at start, then answers lookup,
getattr and readdir from dicts, on the same pyfuse3 + trio stack, mount
options and cache timeouts as the vmlfs mount. Whatever vmlfs spends beyond
this is its own (tree decoding, inode table, worker threads), so
bench/mount_bench.py compares ``ls -lR`` against it (target <= 2x). File
contents are not served: ``ls -lR`` never reads them.

    python bench/memfs.py SOURCE MOUNTPOINT     (foreground; unmount with fusermount3 -u)
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3
import trio

TIMEOUT = 86400.0  # as vmlfs gives immutable backup nodes


class MemFs(pyfuse3.Operations):
    def __init__(self, source: str) -> None:
        super().__init__()
        self.attrs: dict[int, pyfuse3.EntryAttributes] = {}
        self.children: dict[int, dict[bytes, int]] = {}
        self._load(os.fsencode(source), pyfuse3.ROOT_INODE)

    def _attr(self, path: bytes, ino: int) -> None:
        st = os.lstat(path)
        e = pyfuse3.EntryAttributes()
        e.st_ino, e.generation = ino, 0
        e.entry_timeout = e.attr_timeout = TIMEOUT
        e.st_mode, e.st_nlink, e.st_uid, e.st_gid = st.st_mode, st.st_nlink, st.st_uid, st.st_gid
        e.st_size, e.st_blocks, e.st_blksize = st.st_size, st.st_blocks, 4096
        e.st_atime_ns, e.st_mtime_ns, e.st_ctime_ns = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        self.attrs[ino] = e

    def _load(self, root: bytes, root_ino: int) -> None:
        self._attr(root, root_ino)
        todo = [(root, root_ino)]
        while todo:
            path, ino = todo.pop()
            names = self.children[ino] = {}
            for name in sorted(os.listdir(path)):
                child = len(self.attrs) + pyfuse3.ROOT_INODE
                names[name] = child
                self._attr(os.path.join(path, name), child)
                if stat.S_ISDIR(self.attrs[child].st_mode):
                    todo.append((os.path.join(path, name), child))

    async def lookup(self, parent_inode, name, ctx=None):
        ino = self.children.get(parent_inode, {}).get(bytes(name))
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attrs[ino]

    async def getattr(self, inode, ctx=None):
        return self.attrs[inode]

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        names = list(self.children[fh].items())
        for i in range(start_id, len(names)):
            name, ino = names[i]
            if not pyfuse3.readdir_reply(token, name, self.attrs[ino], i + 1):
                return


def main() -> None:
    source, mountpoint = sys.argv[1:3]
    fs = MemFs(source)
    options = set(pyfuse3.default_options) | {"default_permissions", "fsname=memfs"}
    pyfuse3.init(fs, mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
