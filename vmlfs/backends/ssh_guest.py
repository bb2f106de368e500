"""A guest reached over SSH: the Guest protocol, with every bulk operation in one remote process.

Starting an SSH session runs the guest user's shell start-up files, which
can take a good fraction of a second, so requests go to long-lived agents
(:mod:`vmlfs.backends.ssh_agent` in ``serve`` mode) kept in a small pool:
the scan, the bulk reads that the engine interleaves with it, and an
occasional digest each hold one agent, so a backup starts at most three
sessions. The scan is one request: the agent walks the tree on the guest and
streams a binary record per entry; this side parses the
stream and applies the entry's Rules (``pathspec`` semantics exactly, as the
local guest does). An excluded directory's subtree is skipped here as it
streams by: matching gitignore semantics remotely would need pathspec on the
guest, and a per-directory question would cost a round trip each. The
remote walk of an excluded subtree costs stat calls only.

``read_many`` sends the whole batch of (path, size, mtime) requests at once
and reads the answers as one framed stream; ``digest`` hashes on the guest.
"""

from __future__ import annotations

import struct
from contextlib import contextmanager
from importlib import resources
from typing import Iterable, Iterator, Sequence

from vmlfs.archive.xattrs import MAX_NAMES, MAX_VALUE
from vmlfs.backends.ssh_runner import RemoteProcess, Runner
from vmlfs.release.detect import PROBE_SCRIPT, detect_release, parse_probe_output
from vmlfs.engine.guest import FileChanged, ScanEntry, ScanReport
from vmlfs.engine.rules import Rules
from vmlfs.errors import AlreadyExists, GuestError, NotFound, UnsafePath

AGENT_SOURCE = "".join(  # the agent uses these modules, which it cannot import on the guest
    resources.files(package).joinpath(name).read_text(encoding="utf-8")
    for package, name in (("vmlfs.engine", "holes.py"), ("vmlfs.archive", "xattr_io.py"),
                          ("vmlfs.backends", "ssh_agent_info.py"), ("vmlfs.backends", "ssh_agent.py")))
ENTRY = struct.Struct("<cIIIIQqqQQII")
NAME = struct.Struct("<cII")
REQUEST = struct.Struct("<IQq")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
_ENTRY_TAGS = frozenset(b"fdl")  # the first byte of an entry record, as an int
_KIND_NAMES = {b"f": "f", b"d": "d", b"l": "l"}
MAX_XATTRS_BLOB = MAX_NAMES * (MAX_VALUE + 5 + 255)  # the most a path's attributes can take (archive/xattrs.py)
ENV_TIMEOUT = 30.0  # seconds an interactive login shell may take to print the environment
ENV_MARK = b"\0vmlfs-env-begin\0"  # printed by the login shell after its profile scripts' own output


def agent_argv(mode: str, root: str, *flags: str) -> list[str]:
    """The argv that runs the agent on the guest; ROOT is one argv element, never shell text."""
    return ["env", "PYTHONCOERCECLOCALE=0", "python3", "-c", AGENT_SOURCE, mode, root, *flags]


class StreamReader:
    """Exact-size reads over a remote process's stdout chunks."""

    def __init__(self, proc: RemoteProcess) -> None:
        self.proc = proc
        self.buf = b""
        self.pos = 0

    def need(self, n: int) -> bool:
        """Make ``n`` bytes available at ``pos``; False if the stream ends first."""
        if len(self.buf) - self.pos >= n:
            return True
        parts = [self.buf[self.pos:]]
        have = len(parts[0])
        while have < n:
            chunk = self.proc.read()
            if not chunk:
                self.buf, self.pos = b"".join(parts), 0
                return False
            parts.append(chunk)
            have += len(chunk)
        self.buf, self.pos = b"".join(parts), 0
        return True

    def take(self, n: int) -> bytes:
        if not self.need(n):
            raise GuestError(f"the guest's answer ended early ({_stderr(self.proc)})")
        data = self.buf[self.pos:self.pos + n]
        self.pos += n
        return data

    def some(self, limit: int) -> bytes:
        """Between 1 and ``limit`` bytes, whatever is at hand (no copying of large chunks)."""
        if self.pos >= len(self.buf):
            self.buf, self.pos = self.proc.read(), 0
            if not self.buf:
                raise GuestError(f"the guest's answer ended early ({_stderr(self.proc)})")
        if self.pos == 0 and len(self.buf) <= limit:
            data, self.buf = self.buf, b""
            return data
        data = self.buf[self.pos:self.pos + limit]
        self.pos += len(data)
        return data

    def message(self) -> str:
        return self.take(U32.unpack(self.take(4))[0]).decode("utf-8", "replace")


def _stderr(proc: RemoteProcess) -> str:
    lines = bytes(proc.stderr).decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"


def check_exit(proc: RemoteProcess, what: str) -> None:
    """Map the agent's exit status and ``vmlfs-agent: KIND: message`` line to the error hierarchy."""
    status = proc.wait()
    if status == 0:
        return
    line = _stderr(proc)
    text = line.split(": ", 2)[-1] if line.startswith("vmlfs-agent: ") else line
    if status == 3:
        raise NotFound(f"{what}: {text}")
    if status == 4:
        raise AlreadyExists(f"{what}: {text}", hint="pass --overwrite to replace it")
    if status == 5:
        raise UnsafePath(f"{what}: {text}")
    if status == 127:
        raise GuestError(f"{what}: a command is missing on the guest ({text})", hint="the guest needs python3")
    raise GuestError(f"{what} failed on the guest (exit {status}): {text}")


class _Body:
    """One file's bytes in a read_many stream; raises FileChanged if the guest said so."""

    def __init__(self, reader: StreamReader, entry: ScanEntry, error: str | None) -> None:
        self.reader, self.entry = reader, entry
        self.remaining = 0 if error else entry.size
        self.done = error is not None
        self.error = error

    def __iter__(self) -> "_Body":
        return self

    def __next__(self) -> bytes:
        if self.remaining > 0:
            piece = self.reader.some(self.remaining)
            self.remaining -= len(piece)
            return piece
        if not self.done:
            self.done = True
            if self.reader.take(1) == b"X":
                self.error = self.reader.message()
        if self.error is not None:
            message, self.error = self.error, None
            raise FileChanged(f"{self.entry.path.decode('utf-8', 'replace')}: {message}")
        raise StopIteration

    def close(self) -> None:
        """Skip whatever the consumer did not read, so the stream stays in step."""
        while self.remaining > 0:
            self.remaining -= len(self.reader.some(self.remaining))
        if not self.done:
            self.done = True
            if self.reader.take(1) == b"X":
                self.reader.message()
        self.error = None


class _Agent:
    """One running ``serve`` agent and the reader of its answers."""

    def __init__(self, runner: Runner, root: str, what: str) -> None:
        self.proc = runner.start(agent_argv("serve", root))
        self.reader = StreamReader(self.proc)
        try:
            ready = self.reader.need(1) and self.reader.take(1) == b"A"
            if not ready:
                check_exit(self.proc, what)
                raise GuestError(f"{what}: the guest agent did not start ({_stderr(self.proc)})")
        except BaseException:
            self.close()
            raise

    def blob(self, tag: bytes) -> bytes | None:
        got = self.reader.take(1)
        if got != tag:
            return None
        return self.reader.take(U64.unpack(self.reader.take(8))[0])

    def close(self) -> None:
        if self.proc.exit_status is None:
            self.proc.close_stdin()
            self.proc.terminate()


class SshGuest:
    """A guest home on a machine reached by SSH; ``root`` is '' (home), '~/x' or an absolute path."""

    def __init__(self, runner: Runner, root: str, description: str | None = None) -> None:
        self.runner, self.root = runner, root
        self.description = description or runner.description
        self._idle: list[_Agent] = []
        self._release: tuple[str | None] | None = None

    @contextmanager
    def _agent(self) -> Iterator[_Agent]:
        """An idle agent (started if none is); returned to the pool only if its answer was read whole."""
        agent = self._idle.pop() if self._idle else _Agent(self.runner, self.root, f"connecting to {self.description}")
        try:
            yield agent
        except BaseException:
            agent.close()
            raise
        self._idle.append(agent)

    def scan(self, rules: Rules, report: ScanReport, xattrs_since: int | None = None) -> Iterator[ScanEntry]:
        """``xattrs_since`` is not used: the agent sends every path's attributes with its record, which
        costs it a listxattr each but no round trip, and spares the guest knowing the base."""
        with self._agent() as agent:
            agent.proc.write(b"S")
            yield from self._records(agent.reader, rules, report)

    def _records(self, r: StreamReader, rules: Rules, report: ScanReport) -> Iterator[ScanEntry]:
        """Entry records whole in the buffer are decoded straight from it (the common case: a record
        is ~50 bytes, a chunk of the stream holds thousands); the rest goes through ``r.need``/``r.take``."""
        users: dict[int, str] = {}
        groups: dict[int, str] = {}
        skip: bytes | None = None
        attrs: bytes | None = None  # from a b'X' record, for the entry that follows it
        unpack, size = ENTRY.unpack_from, ENTRY.size
        has_rules = bool(rules.exclude)
        while True:
            buf, pos = r.buf, r.pos
            end = pos + size
            if end <= len(buf) and buf[pos] in _ENTRY_TAGS:
                kind, mode, uid, gid, nlink, fsize, mtime, ctime, dev, ino, plen, tlen = unpack(buf, pos)
                path_end = end + plen
                record_end = path_end + tlen if kind == b"l" else path_end
                if record_end <= len(buf):
                    r.pos = record_end
                    path = buf[end:path_end]
                    target = buf[path_end:record_end] if kind == b"l" else None
                else:
                    r.pos = end
                    path = r.take(plen)
                    target = r.take(tlen) if kind == b"l" else None
                entry_attrs, attrs = attrs, None
                if skip is not None:
                    if path.startswith(skip):
                        continue
                    skip = None
                if has_rules and rules.excluded(path, kind == b"d"):
                    skip = path + b"/"
                    continue
                yield ScanEntry(path, _KIND_NAMES[kind], mode, uid, gid, users.get(uid, ""), groups.get(gid, ""),
                                fsize, mtime, ctime, nlink, dev, ino, target, entry_attrs)
                continue
            if not r.need(1):
                check_exit(r.proc, f"scanning {self.description}")
                raise GuestError(f"scanning {self.description}: the listing ended early")
            tag = r.buf[r.pos:r.pos + 1]
            if tag[0] in _ENTRY_TAGS:
                if not r.need(size):
                    raise GuestError(f"scanning {self.description}: the listing ended inside a record")
                continue  # now whole in the buffer: decoded above
            elif tag == b"X":
                r.pos += 1
                (length,) = U32.unpack(r.take(4))
                if length > MAX_XATTRS_BLOB:  # checked in full by checked_scan; here only what may be buffered
                    raise GuestError(f"scanning {self.description}: {length} bytes of extended attributes for one path")
                attrs = r.take(length)
            elif tag in (b"U", b"G"):
                _, ident, nlen = NAME.unpack(r.take(NAME.size))
                (users if tag == b"U" else groups)[ident] = r.take(nlen).decode("utf-8", "surrogateescape")
            elif tag in (b"S", b"R", b"W"):
                _, plen, mlen = NAME.unpack(r.take(NAME.size))
                path, message = r.take(plen), r.take(mlen).decode("utf-8", "replace")
                if skip is not None and path.startswith(skip):
                    continue
                if tag == b"S":
                    report.skipped_special += 1
                elif tag == b"R":
                    report.unreadable += 1
                report.warn(message)
            elif tag == b"Z":
                r.pos += 1
                return
            else:
                raise GuestError(f"scanning {self.description}: unexpected record {tag!r} from the guest")

    @staticmethod
    def _request(agent: _Agent, op: bytes, entries: Sequence[ScanEntry]) -> None:
        parts = [op, U32.pack(len(entries))]
        for e in entries:
            parts.append(REQUEST.pack(len(e.path), e.size, e.mtime_ns) + e.path)
        agent.proc.write(b"".join(parts))

    def read_many(self, entries: Iterable[ScanEntry]) -> Iterator[tuple[ScanEntry, Iterator[bytes]]]:
        batch = list(entries)
        if not batch:
            return
        with self._agent() as agent:
            self._request(agent, b"R", batch)
            r = agent.reader
            body: _Body | None = None
            for entry in batch:
                if body is not None:
                    body.close()
                tag = r.take(1)
                body = _Body(r, entry, r.message() if tag == b"X" else None)
                yield entry, body
            if body is not None:
                body.close()

    def digest(self, entry: ScanEntry) -> bytes:
        with self._agent() as agent:
            self._request(agent, b"H", [entry])
            tag = agent.reader.take(1)
            if tag == b"X":
                message = agent.reader.message()
                raise FileChanged(f"{entry.path.decode('utf-8', 'replace')}: {message}")
            return agent.reader.take(32)

    def environment(self) -> bytes:
        """The variables an interactive login shell of the user has (``~/.bashrc`` exports included),
        byte for byte as the guest has them, one ``NAME=value`` line each, sorted."""
        with self._agent() as agent:
            agent.proc.write(b"V" + struct.pack("<I", int(ENV_TIMEOUT)))
            out = agent.blob(b"V") or b""
        if ENV_MARK not in out:
            raise GuestError(f"the login shell on {self.description} printed no environment within {ENV_TIMEOUT:.0f} s",
                             hint="an interactive login shell (e.g. bash -l -i) must finish without a terminal; check ~/.bashrc and ~/.bash_profile")
        variables = [v for v in out.split(ENV_MARK, 1)[1].split(b"\0") if b"=" in v]
        return b"".join(v + b"\n" for v in sorted(variables))

    def history(self) -> bytes | None:
        with self._agent() as agent:
            agent.proc.write(b"Y")
            return agent.blob(b"Y")

    def release(self) -> str | None:
        """The guest's release from :data:`vmlfs.release.detect.PROBE_SCRIPT`, asked once."""
        if self._release is None:
            script = PROBE_SCRIPT.encode()
            with self._agent() as agent:
                agent.proc.write(b"P" + U32.pack(len(script)) + script)
                out = agent.blob(b"P") or b""
            self._release = (detect_release(parse_probe_output(out.decode("utf-8", "replace"))),)
        return self._release[0]

    def close(self) -> None:
        for agent in self._idle:
            agent.close()
        self._idle.clear()
        self.runner.close()
