"""A guest that is a directory on this machine (the embedded demo, tests, a mounted guest disk)."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import stat
from functools import lru_cache
from operator import attrgetter
from typing import Iterable, Iterator

from vmlfs.archive.xattr_io import read_xattrs
from vmlfs.backends.local_reads import SMALL_READ, ReadAheadChoice, SmallReads
from vmlfs.engine.guest import FileChanged, ScanEntry, ScanReport, UnreadXattrs
from vmlfs.engine.holes import read_with_holes
from vmlfs.engine.rules import Rules
from vmlfs.errors import GuestError, NotFound

CHUNK = 1 << 20


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


_KINDS = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l"}
_NAME = attrgetter("name")  # a sort key in C: a Python function was called once per path


def _entry(path: bytes, st: os.stat_result, kind: str, target: bytes | None,
           xattrs: bytes | UnreadXattrs | None) -> ScanEntry:
    uid, gid = st.st_uid, st.st_gid
    return ScanEntry(path, kind, st.st_mode & 0o7777, uid, gid, user_name(uid), group_name(gid),
                     st.st_size if kind == "f" else 0, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, st.st_dev,
                     st.st_ino, target, xattrs)


class LocalGuest:
    """Reads a home directory on the local file system."""

    def __init__(self, home: str | os.PathLike[str], *, env_file: str | None = None, release: str | None = None) -> None:
        # The home is followed as the path it is (a symlink to the real directory, as a shell's cd
        # would): only what lies below it is read without following links.
        self.description = os.path.abspath(os.fsdecode(home))
        self.home = os.fsencode(os.path.realpath(home))
        self._env_file = env_file
        self._release = release
        self._read_ahead = ReadAheadChoice()
        if not os.path.isdir(self.home):
            raise NotFound(f"guest home {self.description} is not a directory")

    def _abs(self, rel: bytes) -> bytes:
        return os.path.join(self.home, rel) if rel else self.home

    def scan(self, rules: Rules, report: ScanReport, xattrs_since: int | None = None) -> Iterator[ScanEntry]:
        """Depth-first, siblings in byte order; iterative, since nested generators cost
        a frame switch per level for every entry. The root's attributes are always read."""
        st = os.lstat(self.home)
        yield _entry(b"", st, _KINDS.get(stat.S_IFMT(st.st_mode), "?"), None, read_xattrs(self.home, report.warn))
        unread = None
        if xattrs_since is not None:
            unread = (UnreadXattrs(lambda rel: read_xattrs(self._abs(rel), report.warn)), xattrs_since)
        todo: list[Iterator[ScanEntry]] = [self._children(b"", rules, report, unread)]
        while todo:
            entry = next(todo[-1], None)
            if entry is None:
                todo.pop()
                continue
            yield entry
            if entry.type == "d":
                todo.append(self._children(entry.path, rules, report, unread))

    def _children(self, rel: bytes, rules: Rules, report: ScanReport,
                  unread: tuple[UnreadXattrs, int] | None) -> Iterator[ScanEntry]:
        """One directory's entries: per child one lstat (scandir's), a link's readlink, and one
        listxattr unless ``unread`` = (its marker, the ctime before which they may be left)."""
        try:
            with os.scandir(self._abs(rel)) as it:
                children = sorted(it, key=_NAME)
        except OSError as exc:
            report.unreadable += 1
            report.warn(f"cannot list {os.fsdecode(rel) or '.'}: {exc.strerror}; its contents are left out")
            return
        prefix = rel + b"/" if rel else b""
        check_rules = bool(rules.exclude)
        warn = report.warn
        marker, since = unread if unread is not None else (None, None)
        for child in children:
            path = prefix + child.name
            try:
                st = child.stat(follow_symlinks=False)
                kind = _KINDS.get(stat.S_IFMT(st.st_mode))
                target = os.readlink(child.path) if kind == "l" else None
            except FileNotFoundError:
                continue  # vanished between listing and stat: it simply is not in this backup
            except OSError as exc:
                report.unreadable += 1
                report.warn(f"cannot stat {os.fsdecode(path)}: {exc.strerror}")
                continue
            if kind is None:
                report.skipped_special += 1
                report.warn(f"skipped {os.fsdecode(path)}: not a regular file, directory or symlink")
                continue
            if check_rules and rules.excluded(path, kind == "d"):
                continue
            if since is not None and st.st_ctime_ns < since:
                yield _entry(path, st, kind, target, marker)
            else:
                yield _entry(path, st, kind, target, read_xattrs(child.path, warn))

    def _open(self, entry: ScanEntry) -> int:
        """An fd of the file to read; O_NONBLOCK keeps a file replaced by a FIFO from hanging the
        open (the fstat after reading then sees it is no longer the regular file scanned)."""
        try:
            return os.open(self.home + b"/" + entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise FileChanged(f"{os.fsdecode(entry.path)}: cannot open ({exc.strerror})") from None

    def _chunks(self, entry: ScanEntry) -> Iterator[bytes]:
        """A large file's bytes (its holes not read), checked against the scan by one fstat after reading."""
        name = os.fsdecode(entry.path)
        fd = self._open(entry)
        try:
            remaining = entry.size
            for chunk in read_with_holes(fd, entry.size, CHUNK):
                remaining -= len(chunk)
                yield chunk
            if remaining:
                raise FileChanged(f"{name}: shrank while it was read")
            st = os.fstat(fd)
        except OSError as exc:
            raise FileChanged(f"{name}: cannot read ({exc.strerror})") from None
        finally:
            os.close(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
            raise FileChanged(f"{name}: changed while it was read")

    def read_many(self, entries: Iterable[ScanEntry]) -> Iterator[tuple[ScanEntry, Iterator[bytes]]]:
        """Small files come whole, read ahead by a few threads (:mod:`vmlfs.backends.local_reads`)."""
        batch = list(entries)
        small = [e for e in batch if e.size <= SMALL_READ]
        reads = SmallReads(self._open, small, self._read_ahead)
        try:
            taken = 0
            for entry in batch:
                if entry.size > SMALL_READ:
                    yield entry, self._chunks(entry)
                    continue
                data = reads.take(taken)
                taken += 1
                yield entry, iter((data,)) if isinstance(data, bytes) else _Failed(data)
        finally:
            reads.close()

    def digest(self, entry: ScanEntry) -> bytes:
        h = hashlib.sha256()
        for chunk in self._chunks(entry):
            h.update(chunk)
        return h.digest()

    def environment(self) -> bytes:
        if self._env_file:
            try:
                with open(self._env_file, "rb") as f:
                    return f.read()
            except OSError as exc:
                raise GuestError(f"cannot read env file {self._env_file}: {exc.strerror}") from None
        return b"".join(k + b"=" + v + b"\n" for k, v in sorted(os.environb.items()))

    def history(self) -> bytes | None:
        for name in (b".bash_history", b".zsh_history"):
            try:
                with open(os.path.join(self.home, name), "rb", opener=_nofollow) as f:
                    return f.read()
            except OSError:
                continue
        return None

    def release(self) -> str | None:
        """A local directory has no OS of its own: report the release it was declared with."""
        return self._release

    def close(self) -> None:
        pass


class _Failed:
    """The chunks of a file that cannot be taken as scanned: they raise why, as read_many promises."""

    __slots__ = ("exc",)

    def __init__(self, exc: FileChanged) -> None:
        self.exc = exc

    def __iter__(self) -> "_Failed":
        return self

    def __next__(self) -> bytes:
        raise self.exc

    def close(self) -> None:
        pass


def _nofollow(path: str | bytes, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)
