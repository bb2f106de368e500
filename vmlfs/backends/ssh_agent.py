"""vmlfs guest agent: sent to the guest and run there as ``python3 -c <this file> MODE ROOT [FLAGS]``
(with ``PYTHONCOERCECLOCALE=0``, so Python adds no LC_CTYPE to the environment it passes on).

It is never imported by vmlfs: :mod:`vmlfs.backends.ssh_guest` sends this file's text, after those
of vmlfs/engine/holes.py and vmlfs/archive/xattr_io.py, as one argv element, so all stay stdlib-only
and run on the oldest python3 a CernVM guest has (3.6: no walrus, no ``X | Y``). Tests run it
locally as a subprocess. ROOT ('' = home, '~/x' = below home) arrives in argv, never inside shell
text. Modes (wire format in docs/ssh.md):

- ``serve``: answer requests read from stdin, one after another (one session serves a backup):
  ``S`` walk ROOT with lstat, depth first, siblings in byte order, one binary record per entry
  (with its kept extended attributes; rules are applied by the caller); ``R``/``H`` for each
  (path, size, mtime) check the file still matches, then stream its bytes / its sha256; ``Y`` the
  shell history; ``V`` the environment of an interactive login shell; ``P`` a release probe.
- ``lock``: hold an entry's flock (ROOT is the lock file) until stdin ends.
- ``restore``: apply a stream of operations below ROOT with the same rules as the local restore:
  directory fds, O_NOFOLLOW, O_EXCL, one validated name component at a time, never through a symlink.

Errors end the agent with a line ``vmlfs-agent: KIND: message`` on stderr and
exit code 3 (not found), 4 (exists), 5 (unsafe name) or 1 (anything else).
"""

import hashlib
import json
import operator
import os
import stat
import struct
import sys

if __name__ != "__main__":  # imported by a linter or a test; on the guest this text follows theirs
    from vmlfs.archive.xattr_io import apply_xattrs, read_xattrs
    from vmlfs.backends.ssh_agent_info import blob, command_output, history, login_environment
    from vmlfs.engine.holes import read_with_holes, write_with_holes

ENTRY = struct.Struct("<cIIIIQqqQQII")  # type mode uid gid nlink size mtime ctime dev ino pathlen targetlen
NAME = struct.Struct("<cII")  # b'U'/b'G' id namelen | b'S'/b'R' pathlen msglen
REQUEST = struct.Struct("<IQq")  # pathlen size mtime_ns
META = struct.Struct("<IIIqI")  # mode uid gid mtime_ns namelen
FILE = struct.Struct("<IIIqQQI")  # mode uid gid mtime_ns size link_group namelen
LINK = struct.Struct("<IIqII")  # uid gid mtime_ns namelen targetlen
HARD = struct.Struct("<QI")  # link_group namelen
NO_META = 0xFFFFFFFF  # mode of a 'D' operation for a parent directory restored without its metadata
CHUNK = 1 << 20
_NAME = operator.attrgetter("name")  # the sort key of a listing, in C
EXIT = {"notfound": 3, "exists": 4, "unsafe": 5}


class Fail(Exception):
    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind


def resolve_root(root):
    if root == b"" or root == b"~":
        root = os.path.expanduser(b"~")
    elif root.startswith(b"~/"):
        root = os.path.join(os.path.expanduser(b"~"), root[2:])
    return root


def existing_dir(root):
    try:
        st = os.stat(root)
    except OSError as exc:
        raise Fail("notfound", "%s: %s" % (os.fsdecode(root), exc.strerror))
    if not stat.S_ISDIR(st.st_mode):
        raise Fail("notfound", "%s is not a directory" % os.fsdecode(root))
    return st


def read_exact(inp, size):
    data = inp.read(size)
    if len(data) != size:
        raise Fail("io", "input ended early")
    return data


# scan ----------------------------------------------------------------------

class Scanner:
    def __init__(self, root, out):
        self.root, self.out = root, out
        self.users, self.groups = {}, {}

    def names(self, st):
        if st.st_uid not in self.users:
            self.users[st.st_uid] = self.lookup(st.st_uid, True)
            self.out.write(NAME.pack(b"U", st.st_uid, len(self.users[st.st_uid])) + self.users[st.st_uid])
        if st.st_gid not in self.groups:
            self.groups[st.st_gid] = self.lookup(st.st_gid, False)
            self.out.write(NAME.pack(b"G", st.st_gid, len(self.groups[st.st_gid])) + self.groups[st.st_gid])

    @staticmethod
    def lookup(ident, user):
        try:
            import grp
            import pwd
            name = pwd.getpwuid(ident).pw_name if user else grp.getgrgid(ident).gr_name
            return name.encode("utf-8", "surrogateescape")
        except (KeyError, ImportError):
            return b""

    def note(self, tag, path, message):
        msg = message.encode("utf-8", "replace")
        self.out.write(NAME.pack(tag, len(path), len(msg)) + path + msg)

    def emit(self, rel, st, kind, target, path):
        """The entry's record (``path`` is its absolute path), after a b'X' record of its kept attributes if it has any."""
        if st.st_uid not in self.users or st.st_gid not in self.groups:
            self.names(st)
        attrs = read_xattrs(path, lambda m: self.note(b"W", rel, m))
        if attrs:
            self.out.write(b"X" + struct.pack("<I", len(attrs)) + attrs)
        size = st.st_size if kind == b"f" else 0
        self.out.write(ENTRY.pack(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink, size,
                                  st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino, len(rel), len(target or b""))
                       + rel + (target or b""))

    def listing(self, rel):
        path = os.path.join(self.root, rel) if rel else self.root
        try:
            with os.scandir(path) as it:
                return iter(sorted(it, key=_NAME))
        except OSError as exc:
            self.note(b"R", rel, "cannot list %s: %s; its contents are left out" % (os.fsdecode(rel) or ".", exc.strerror))
            return iter(())

    def run(self):
        """Depth first; a child's absolute path is its DirEntry's, not joined again per path."""
        self.emit(b"", os.stat(self.root), b"d", None, self.root)
        stack = [(b"", self.listing(b""))]
        while stack:
            parent, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                continue
            rel = parent + b"/" + child.name if parent else child.name
            try:
                st = child.stat(follow_symlinks=False)
                mode = st.st_mode
                target = os.readlink(child.path) if stat.S_ISLNK(mode) else None
            except FileNotFoundError:
                continue  # vanished between listing and stat: not in this backup
            except OSError as exc:
                self.note(b"R", rel, "cannot stat %s: %s" % (os.fsdecode(rel), exc.strerror))
                continue
            kind = b"f" if stat.S_ISREG(mode) else b"d" if stat.S_ISDIR(mode) else b"l" if target is not None else None
            if kind is None:
                self.note(b"S", rel, "skipped %s: not a regular file, directory or symlink" % os.fsdecode(rel))
                continue
            self.emit(rel, st, kind, target, child.path)
            if kind == b"d":
                stack.append((rel, self.listing(rel)))
        self.out.write(b"Z")


# read / digest -------------------------------------------------------------

def requests(inp):
    (count,) = struct.unpack("<I", read_exact(inp, 4))
    for _ in range(count):
        plen, size, mtime = REQUEST.unpack(read_exact(inp, REQUEST.size))
        yield read_exact(inp, plen), size, mtime


def open_checked(root, rel, size, mtime):
    """An fd of the file if it is still the regular file that was scanned, else a reason."""
    try:
        fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return None, "cannot open (%s)" % exc.strerror
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime_ns != mtime:
        os.close(fd)
        return None, "changed since it was scanned"
    return fd, None


def refuse(out, reason):
    msg = reason.encode("utf-8", "replace")
    out.write(b"X" + struct.pack("<I", len(msg)) + msg)


def send_files(root, inp, out, digest_only):
    """Per request: b'O' + exactly size bytes + b'K' (or b'X' reason if it changed meanwhile),
    b'D' + sha256 for digests, or b'X' reason if it cannot be opened as scanned."""
    for rel, size, mtime in requests(inp):
        fd, reason = open_checked(root, rel, size, mtime)
        if fd is None:
            refuse(out, reason)
            continue
        try:
            h = hashlib.sha256() if digest_only else None
            out.write(b"O" if h is None else b"")
            remaining, problem = size, None
            for data in read_with_holes(fd, size, CHUNK):
                if h is None:
                    out.write(data)
                else:
                    h.update(data)
                remaining -= len(data)
            if remaining:
                problem = "shrank while it was read"
            while h is None and remaining > 0:  # keep the promised length; the trailer says it is void
                out.write(bytes(min(CHUNK, remaining)))
                remaining -= min(CHUNK, remaining)
            st = os.fstat(fd)
            if problem is None and (st.st_size != size or st.st_mtime_ns != mtime):
                problem = "changed while it was read"
        finally:
            os.close(fd)
        if problem is not None:
            refuse(out, problem)
        else:
            out.write(b"K" if h is None else b"D" + h.digest())
        out.flush()


# restore -------------------------------------------------------------------

def component(name):
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name or len(name) > 255:
        raise Fail("unsafe", "unsafe name component %r" % name)
    return name


class Applier:
    """Applies restore operations relative to directory fds; see vmlfs/engine/restore.py for the rules.

    Only the current directory stays open (a tree may be deeper than the fd limit): leaving a
    directory opens ``..`` and checks it is the directory (device, inode) that was entered, as the
    local restore does."""

    def __init__(self, target_fd, overwrite):
        self.target_fd = target_fd
        self.fd = os.dup(target_fd)
        self.stack = []  # per entered directory: (named, (dev, ino) of its parent, metadata)
        self.overwrite = overwrite
        self.as_root = os.geteuid() == 0
        self.linked = {}  # link group -> path components of its first restored member
        self.path = []
        self.xattrs = None  # from an 'X' operation, for the 'D' or 'F' that follows it
        self.report = {"files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "bytes": 0, "damaged": [], "warnings": []}

    def show(self, name=b""):
        return os.fsdecode(b"/".join(self.path + ([name] if name else []))) or "."

    def enter(self, parent_fd, name, mode):
        component(name)
        try:
            os.mkdir(name, mode, dir_fd=parent_fd)
        except FileExistsError:
            pass
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno in (40, 20):  # ELOOP, ENOTDIR: a symlink or a file is in the way
                if self.overwrite:
                    os.unlink(name, dir_fd=parent_fd)
                    return self.enter(parent_fd, name, mode)
                raise Fail("exists", "%s exists in the target and is not a directory (a symlink is never followed)" % self.show(name))
            raise

    def replace(self, parent_fd, name, create):
        try:
            return create()
        except FileExistsError:
            if not self.overwrite:
                raise Fail("exists", "%s already exists in the target" % self.show(name))
            try:
                os.unlink(name, dir_fd=parent_fd)
            except IsADirectoryError:
                raise Fail("exists", "%s is a directory in the target; not replaced by a file" % self.show(name))
            return create()

    def refused(self, kind, exc):
        line = "the target does not take %s (%s): they are not restored" % (kind, exc.strerror)
        if line not in self.report["warnings"]:
            self.report["warnings"].append(line)

    def metadata(self, fd, mode, uid, gid, mtime, attrs):
        """As the local restore: owner, attributes (a chown clears capabilities), mode, times."""
        if self.as_root:
            os.fchown(fd, uid, gid)
        if attrs:
            apply_xattrs(fd, attrs, self.refused)
        os.fchmod(fd, mode & 0o7777)
        os.utime(fd, ns=(mtime, mtime))

    def run(self, inp):
        while True:
            op = read_exact(inp, 1)
            fd = self.fd
            if op == b"D":
                mode, uid, gid, mtime, nlen = META.unpack(read_exact(inp, META.size))
                name = read_exact(inp, nlen)
                st = os.fstat(fd)
                inner = self.enter(fd, name, 0o755 if mode == NO_META else 0o700) if name else os.dup(fd)
                self.stack.append((bool(name), (st.st_dev, st.st_ino), (mode, uid, gid, mtime, self.xattrs)))
                self.xattrs = None
                os.close(fd)
                self.fd = inner
                self.path.append(name)
                if mode != NO_META:
                    self.report["dirs"] += 1
            elif op == b"U":
                self.leave()
            elif op == b"X":
                self.xattrs = read_exact(inp, struct.unpack("<I", read_exact(inp, 4))[0])
            elif op == b"F":
                self.file(fd, inp, *FILE.unpack(read_exact(inp, FILE.size)))
            elif op == b"L":
                uid, gid, mtime, nlen, tlen = LINK.unpack(read_exact(inp, LINK.size))
                name, target = component(read_exact(inp, nlen)), read_exact(inp, tlen)
                self.replace(fd, name, lambda: os.symlink(target, name, dir_fd=fd))
                if self.as_root:
                    os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
                os.utime(name, ns=(mtime, mtime), dir_fd=fd, follow_symlinks=False)
                self.report["symlinks"] += 1
            elif op == b"H":
                group, nlen = HARD.unpack(read_exact(inp, HARD.size))
                self.hardlink(fd, component(read_exact(inp, nlen)), group)
            elif op == b"E":
                return
            else:
                raise Fail("io", "unknown restore operation %r" % op)

    def file(self, parent_fd, inp, mode, uid, gid, mtime, size, group, nlen):
        name = component(read_exact(inp, nlen))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = self.replace(parent_fd, name, lambda: os.open(name, flags, 0o600, dir_fd=parent_fd))
        try:
            remaining, block = size, os.fstat(fd).st_blksize
            while remaining > 0:
                data = read_exact(inp, min(CHUNK, remaining))
                write_with_holes(fd, data, size - remaining, block)
                remaining -= len(data)
            os.ftruncate(fd, size)
            verdict = read_exact(inp, 1)
            if verdict != b"K":
                reason = read_exact(inp, struct.unpack("<I", read_exact(inp, 4))[0]).decode("utf-8", "replace")
                os.close(fd)
                fd = None
                os.unlink(name, dir_fd=parent_fd)
                self.report["damaged"].append("%s: %s" % (self.show(name), reason))
                return
            self.metadata(fd, mode, uid, gid, mtime, self.xattrs)
        finally:
            self.xattrs = None
            if fd is not None:
                os.close(fd)
        if group:
            self.linked[group] = [p for p in self.path if p] + [name]
        self.report["files"] += 1
        self.report["bytes"] += size

    def leave(self):
        if not self.stack:
            raise Fail("io", "restore stream leaves more directories than it entered")
        named, parent_id, meta = self.stack.pop()
        self.path.pop()
        if named:  # opened before a chmod may forbid it
            parent = os.open(b"..", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self.fd)
            st = os.fstat(parent)
            if (st.st_dev, st.st_ino) != parent_id:
                os.close(parent)
                raise Fail("io", "a directory of the target was moved while it was being restored")
        else:
            parent = os.dup(self.fd)
        try:
            if meta[0] != NO_META:
                self.metadata(self.fd, *meta)
        finally:
            os.close(self.fd)
            self.fd = parent

    def hardlink(self, parent_fd, name, group):
        first = self.linked.get(group)
        if first is None:
            raise Fail("unsafe", "hardlink %s refers to a file not restored before it" % self.show(name))
        src = os.dup(self.target_fd)
        try:
            for part in first[:-1]:
                inner = os.open(component(part), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src)
                os.close(src)
                src = inner
            self.replace(parent_fd, name, lambda: os.link(first[-1], name, src_dir_fd=src, dst_dir_fd=parent_fd, follow_symlinks=False))
        finally:
            os.close(src)
        self.report["hardlinks"] += 1


def restore(root, inp, out, overwrite):
    os.makedirs(root, exist_ok=True)
    target_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    applier = Applier(target_fd, overwrite)
    applier.run(inp)
    out.write(json.dumps(applier.report).encode() + b"\n")


def serve(root, inp, out):
    """Answer requests one after another until stdin ends, so one SSH session serves a whole backup."""
    existing_dir(root)
    out.write(b"A")  # ready: the root exists
    out.flush()
    while True:
        op = inp.read(1)
        if not op:
            return
        if op == b"S":
            Scanner(root, out).run()
        elif op in (b"R", b"H"):
            send_files(root, inp, out, op == b"H")
        elif op == b"Y":
            history(root, out)
        elif op == b"V":  # the login environment: profile output before the marker is dropped by the caller
            (timeout,) = struct.unpack("<I", read_exact(inp, 4))
            blob(out, b"V", login_environment(timeout))
        elif op == b"P":  # a probe script of vmlfs (vmlfs/release/detect.py), run with sh -s
            (size,) = struct.unpack("<I", read_exact(inp, 4))
            blob(out, b"P", command_output(["sh", "-s"], read_exact(inp, size)))
        else:
            raise Fail("usage", "unknown request %r" % op)
        out.flush()


def hold_lock(path, inp, out):
    """flock ``path`` as vmlfs/backends/lock.py does, answer b'L' (held) or b'B' + holder, and keep it
    until stdin ends: when the SSH connection dies, so does this process, and the kernel frees the lock."""
    import fcntl
    import socket
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        holder = os.pread(fd, 200, 0)
        out.write(b"B" + struct.pack("<I", len(holder)) + holder)
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, ("%d %s\n" % (os.getpid(), socket.gethostname())).encode(), 0)
    out.write(b"L")
    out.flush()
    while inp.read(65536):
        pass
    os.ftruncate(fd, 0)


def main(argv):
    # Started with PYTHONCOERCECLOCALE=0 so that Python leaves the locale variables as the guest set them
    # (it would add LC_CTYPE=C.UTF-8 under a C locale); the setting itself must not reach the user's shell.
    os.environ.pop("PYTHONCOERCECLOCALE", None)
    mode, root = argv[0], resolve_root(os.fsencode(argv[1]))
    inp = sys.stdin.buffer
    out = open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)
    try:
        if mode == "restore":
            restore(root, inp, out, "--overwrite" in argv[2:])
        elif mode == "lock":
            hold_lock(root, inp, out)
        elif mode == "serve":
            serve(root, inp, out)
        else:
            raise Fail("usage", "unknown mode %r" % mode)
        out.flush()
    except Fail as exc:
        out.flush()
        sys.stderr.write("vmlfs-agent: %s: %s\n" % (exc.kind, exc))
        sys.exit(EXIT.get(exc.kind, 1))
    except OSError as exc:
        out.flush()
        where = os.fsdecode(exc.filename) if isinstance(exc.filename, (str, bytes)) else ""
        sys.stderr.write("vmlfs-agent: io: %s%s\n" % (exc.strerror or exc, " (%s)" % where if where else ""))
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
