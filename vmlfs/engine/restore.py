"""Restore a backup's tree (or parts of it) into a local directory, safely.

Everything is done relative to open directory file descriptors with
no-follow operations: names come from the manifest one component at a time
(validated on read), directories are entered with ``O_NOFOLLOW|O_DIRECTORY``,
files are created with ``O_EXCL|O_NOFOLLOW``. A symlink already present in the
target is never followed, and a manifest node below a symlink is unreachable
because only directory nodes are descended into. Python's tarfile filters
are not relied upon.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from typing import Callable

from vmlfs import names
from vmlfs.archive.xattr_io import apply_xattrs
from vmlfs.archive.manifest import Manifest, Node
from vmlfs.archive.seekable import SeekableReader
from vmlfs.engine.content import Layers, file_chunks
from vmlfs.engine.holes import write_with_holes
from vmlfs.engine.tree_check import LinkGroups
from vmlfs.errors import AlreadyExists, CorruptData, NotFound, UnsafePath, VmlfsError

log = logging.getLogger(__name__)


@dataclass
class RestoreReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    damaged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # one line per kind of attribute the target refused


def _show(path: tuple[bytes, ...]) -> str:
    return os.fsdecode(b"/".join(path)) or "."


class _Restorer:
    def __init__(self, manifest: Manifest, open_layer: Callable[[str], SeekableReader], target_fd: int,
                 overwrite: bool, on_bytes: Callable[[int], None]) -> None:
        self.manifest, self.target_fd = manifest, target_fd
        self.overwrite, self.on_bytes = overwrite, on_bytes
        self.as_root = os.geteuid() == 0
        self.layers = Layers(open_layer)
        self.linked: dict[int, bytes] = {}  # hardlink group -> path (relative to target) of the restored first member
        self.report = RestoreReport()
        self.groups = LinkGroups()
        self.refused: set[str] = set()

    def close(self) -> None:
        self.layers.close()

    def enter_dir(self, parent_fd: int, name: bytes, create: bool, mode: int = 0o700) -> int:
        """Open (creating if asked) a real directory ``name`` below ``parent_fd``; never a symlink."""
        names.component(name)
        if create:
            try:
                os.mkdir(name, mode, dir_fd=parent_fd)
            except FileExistsError:
                pass
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                if self.overwrite and create:
                    os.unlink(name, dir_fd=parent_fd)
                    return self.enter_dir(parent_fd, name, create, mode)
                raise AlreadyExists(
                    f"{os.fsdecode(name)} exists in the target and is not a directory (a symlink is never followed)",
                    hint="remove it or pass --overwrite",
                ) from None
            raise

    def restore(self, parent_fd: int, path: tuple[bytes, ...], node: Node) -> None:
        name = path[-1] if path else None
        if node.is_dir:
            self._tree(self.enter_dir(parent_fd, name, True) if name is not None else os.dup(parent_fd), path, node)
        elif name is None:
            raise UnsafePath("only a directory can be restored as the target itself")
        else:
            self._leaf(parent_fd, path, node)

    def _tree(self, fd: int, path: tuple[bytes, ...], top: Node) -> None:
        """Restore the directory open at ``fd`` (closed here) and everything below it, without recursion.

        A tree may be deeper than Python's recursion limit and than the fd
        limit, so only the current directory stays open: going back up opens
        ``..`` and checks it is the very directory (device, inode) that was
        entered, so a directory moved meanwhile can never redirect the restore.
        """
        stack = [(top, path, iter(self.manifest.children(top.id)), os.fstat(fd))]
        self.report.dirs += 1
        try:
            while stack:
                node, here, kids, _ = stack[-1]
                child = next(kids, None)
                if child is None:
                    stack.pop()
                    parent = self._parent(fd, stack[-1][3]) if stack else None  # before a chmod may forbid it
                    try:
                        self._metadata(fd, node)
                    except BaseException:
                        if parent is not None:
                            os.close(parent)
                        raise
                    os.close(fd)
                    fd = parent  # type: ignore[assignment]
                    continue
                where = here + (child.name,)
                if child.is_dir:
                    inner = self.enter_dir(fd, child.name, True)
                    os.close(fd)
                    fd = inner
                    self.report.dirs += 1
                    stack.append((child, where, iter(self.manifest.children(child.id)), os.fstat(fd)))
                else:
                    self._leaf(fd, where, child)
        finally:
            if fd is not None:
                os.close(fd)

    @staticmethod
    def _parent(fd: int, expected: os.stat_result) -> int:
        parent = os.open(b"..", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        st = os.fstat(parent)
        if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
            os.close(parent)
            raise VmlfsError("a directory of the target was moved while it was being restored; restore stopped")
        return parent

    def _leaf(self, parent_fd: int, path: tuple[bytes, ...], node: Node) -> None:
        name = path[-1]
        if node.is_symlink:
            self._replace(parent_fd, name, lambda: os.symlink(node.target, name, dir_fd=parent_fd))  # type: ignore[arg-type]
            if self.as_root:
                os.chown(name, node.uid, node.gid, dir_fd=parent_fd, follow_symlinks=False)
            os.utime(name, ns=(node.mtime_ns, node.mtime_ns), dir_fd=parent_fd, follow_symlinks=False)
            self.report.symlinks += 1
        else:
            self._file(parent_fd, path, node)

    def _replace(self, parent_fd: int, name: bytes, create: Callable[[], object]) -> object:
        try:
            return create()
        except FileExistsError:
            if not self.overwrite:
                raise AlreadyExists(f"{os.fsdecode(name)} already exists in the target", hint="pass --overwrite to replace it") from None
            try:
                os.unlink(name, dir_fd=parent_fd)
            except IsADirectoryError:
                raise AlreadyExists(f"{os.fsdecode(name)} is a directory in the target; not replaced by a file") from None
            return create()

    def _file(self, parent_fd: int, path: tuple[bytes, ...], node: Node) -> None:
        name = path[-1]
        rel = b"/".join(path)
        problem = self.groups.disagreement(node)
        if problem:
            self.report.damaged.append(f"{_show(path)}: {problem}")
            log.error("not restored: %s: %s", _show(path), problem)
            return
        if node.link_group is not None and node.link_group in self.linked:
            first = self.linked[node.link_group]
            self._replace(parent_fd, name, lambda: os.link(first, name, src_dir_fd=self.target_fd, dst_dir_fd=parent_fd, follow_symlinks=False))
            self.report.hardlinks += 1
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = self._replace(parent_fd, name, lambda: os.open(name, flags, 0o600, dir_fd=parent_fd))
        assert isinstance(fd, int)
        try:
            self._write_content(fd, node)
            self._metadata(fd, node)
        except CorruptData as exc:
            os.close(fd)
            os.unlink(name, dir_fd=parent_fd)
            self.report.damaged.append(f"{_show(path)}: {exc}")
            log.error("not restored: %s: %s", _show(path), exc)
            return
        os.close(fd)
        if node.link_group is not None:
            self.linked[node.link_group] = rel
        self.report.files += 1

    def _write_content(self, fd: int, node: Node) -> None:
        block = os.fstat(fd).st_blksize
        pos = 0
        for chunk in file_chunks(self.layers, node):
            write_with_holes(fd, chunk, pos, block)
            pos += len(chunk)
            self.on_bytes(len(chunk))
        os.ftruncate(fd, node.size)
        self.report.bytes += node.size

    def _refused(self, kind: str, exc: OSError) -> None:
        """The target (its file system, or a user who is not root) cannot take one kind of attribute:
        said once per restore, and the files are restored without them."""
        if kind not in self.refused:
            self.refused.add(kind)
            self.report.warnings.append(f"the target does not take {kind} ({exc.strerror}): they are not restored")
            log.warning("%s", self.report.warnings[-1])

    def _metadata(self, fd: int, node: Node) -> None:
        """Owner, then attributes (a chown clears capabilities), then mode (an ACL's mask is the group bits), times."""
        if self.as_root:
            os.fchown(fd, node.uid, node.gid)
        if node.xattrs is not None:
            apply_xattrs(fd, node.xattrs, self._refused)
        os.fchmod(fd, node.mode & 0o7777)
        os.utime(fd, ns=(node.mtime_ns, node.mtime_ns))


def restore_tree(manifest: Manifest, open_layer: Callable[[str], SeekableReader], target: str,
                 paths: list[bytes] | None = None, *, overwrite: bool = False,
                 on_bytes: Callable[[int], None] = lambda n: None) -> RestoreReport:
    """Write the backup (or the subtrees at ``paths``) below ``target``.

    Damaged files are skipped and listed in the report; everything else is
    still restored. Raises on unsafe or conflicting targets before writing them.
    """
    os.makedirs(target, exist_ok=True)
    target_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    restorer = _Restorer(manifest, open_layer, target_fd, overwrite, on_bytes)
    try:
        for raw in paths or [b""]:
            parts = names.relative_path(raw)
            node = manifest.lookup(parts)
            fd = os.dup(target_fd)
            try:
                for part in parts[:-1]:
                    inner = restorer.enter_dir(fd, part, True, 0o755)
                    os.close(fd)
                    fd = inner
                restorer.restore(fd, parts, node)
            finally:
                os.close(fd)
    except NotFound:
        raise
    except OSError as exc:
        raise VmlfsError(f"restore into {target} failed: {exc.strerror} ({os.fsdecode(exc.filename or b'')})") from exc
    finally:
        restorer.close()
        os.close(target_fd)
    return restorer.report
