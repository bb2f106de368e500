"""A fake SSH guest whose agent says whatever a test wants: a Runner that answers the ``serve``
protocol (docs/ssh.md) from a scripted scan listing, for guests that are broken or hostile."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

from vmlfs.backends.ssh_guest import ENTRY, ENV_MARK, REQUEST, U32


@dataclass
class Rec:
    """One scan record as the agent encodes it (fields a real agent could never send are allowed)."""

    path: bytes
    kind: bytes = b"d"
    size: int = 0
    target: bytes = b""
    mode: int = 0o755
    nlink: int = 1
    ino: int = 0
    xattrs: bytes = b""  # sent as the b'X' record before the entry when not empty

    def encode(self) -> bytes:
        attrs = b"X" + U32.pack(len(self.xattrs)) + self.xattrs if self.xattrs else b""
        return attrs + ENTRY.pack(self.kind, self.mode, 0, 0, self.nlink, self.size, 1, 1, 1, self.ino, len(self.path),
                          len(self.target)) + self.path + self.target


def listing(records: Sequence[Rec]) -> bytes:
    return b"".join(r.encode() for r in records) + b"Z"


class ScriptedAgent:
    """The RemoteProcess interface: answers each request the way ``ssh_agent.py serve`` would, except
    that the scan answer is the scripted ``listing`` and file bytes are zeros of the requested size."""

    def __init__(self, scan: bytes) -> None:
        self.scan = scan
        self.out = bytearray(b"A")
        self.stderr = bytearray()
        self.exit_status: int | None = None
        self.finished = False

    def write(self, data: bytes) -> None:
        op, rest = data[:1], data[1:]
        if op == b"S":
            self.out += self.scan
        elif op == b"V":
            env = ENV_MARK + b"HOME=/home/x\0"
            self.out += b"V" + struct.pack("<Q", len(env)) + env
        elif op == b"Y":
            self.out += b"N"
        elif op == b"P":
            self.out += b"P" + struct.pack("<Q", 0)
        elif op in (b"R", b"H"):
            (count,), pos = U32.unpack_from(rest), 4
            for _ in range(count):
                plen, size, _mtime = REQUEST.unpack_from(rest, pos)
                pos += REQUEST.size + plen
                self.out += b"O" + bytes(size) + b"K" if op == b"R" else b"D" + bytes(32)

    def read(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data

    def close_stdin(self) -> None:
        pass

    def wait(self) -> int:
        self.exit_status = 0
        return 0

    def terminate(self) -> None:
        self.exit_status = 0


class ScriptedRunner:
    description = "ssh://hostile"

    def __init__(self, scan: bytes) -> None:
        self.scan = scan

    def start(self, argv: Sequence[str]) -> ScriptedAgent:
        return ScriptedAgent(self.scan)

    def close(self) -> None:
        pass
