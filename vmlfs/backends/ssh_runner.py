"""The one port to asyncssh: SSH URLs, connections, remote processes, SFTP.

asyncssh is asyncio; the engine is synchronous and the FUSE mount runs its
blocking work in trio worker threads. So all SSH I/O runs on ONE asyncio
event loop in a dedicated daemon thread (:class:`_LoopThread`), and this
module offers a synchronous facade over it: callers in any thread submit
coroutines with ``asyncio.run_coroutine_threadsafe`` and block on the result.
Nothing else in vmlfs imports asyncssh.

Remote commands are argv lists quoted by :mod:`vmlfs.backends.ssh_url`; no
caller ever builds shell text. Data flows through :class:`RemoteProcess`,
whose stdout is filled by asyncssh callbacks into a bounded buffer (reading
is paused above :data:`HIGH_WATER`), so a slow consumer never makes memory
grow and a reader costs no coroutine round trip per chunk.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Coroutine, Protocol, Sequence

import asyncssh

from vmlfs.backends.ssh_url import SshTarget, remote_command
from vmlfs.errors import ConnectionFailed, HostKeyRejected, PermissionDenied

HIGH_WATER = 8 << 20  # buffered stdout bytes at which reading from the channel pauses
LOW_WATER = 2 << 20
CONNECT_TIMEOUT = 20.0
# All secure; AES-GCM first because AES-NI makes it several times faster than chacha20 here.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes256-ctr", "aes128-ctr")


class ConnectionLost(ConnectionFailed):
    """An established SSH connection or channel dropped mid-transfer; a retry may succeed."""


@dataclass(frozen=True)
class SshOptions:
    """How to authenticate the server; ``None`` paths mean OpenSSH's defaults below ``~/.ssh``."""

    accept_new_host_key: bool = False
    known_hosts: str | None = None
    accept_option: str = "--accept-new-host-key"  # the flag that would trust a new key, for the hint

    def known_hosts_path(self) -> str:
        return self.known_hosts or os.path.expanduser("~/.ssh/known_hosts")


class _LoopThread:
    """The single asyncio event loop every SSH object of this process runs on."""

    _instance: "_LoopThread | None" = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="vmlfs-asyncssh", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> "_LoopThread":
        with cls._guard:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        if threading.current_thread() is self.thread:
            raise RuntimeError("a blocking SSH call was made on the asyncio thread itself")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def soon(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    @classmethod
    def _forget_after_fork(cls) -> None:
        """A forked child (the background mount) has no loop thread: it must start its own.
        Connections made before the fork belong to the parent and are not used by the child."""
        cls._instance = None
        cls._guard = threading.Lock()


os.register_at_fork(after_in_child=_LoopThread._forget_after_fork)


class _HostKeyPolicy(asyncssh.SSHClient):
    """Decides on host keys known_hosts does not already trust: accept-new, or refuse and say why."""

    def __init__(self, options: SshOptions) -> None:
        self.options = options
        self.verdict: str | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        path = self.options.known_hosts_path()
        fingerprint = key.get_fingerprint()
        known = asyncssh.read_known_hosts(path).match(host, addr, port)[0] if os.path.exists(path) else []
        if known and any(k.public_data == key.public_data for k in known):
            return False  # asked only by the probe of SshConnection._changed_host_key: this key did not change
        if known:
            self.verdict = (f"the host key of {host} has CHANGED: it offered {key.get_algorithm()} {fingerprint}, which does not match"
                            f" {path}; refusing (possible man-in-the-middle)")
            return False
        if not self.options.accept_new_host_key:
            self.verdict = f"unknown host key for {host} ({fingerprint}); refusing"
            return False
        name = host if port in (None, 22) else f"[{host}]:{port}"
        line = " ".join([name, *key.export_public_key("openssh").decode().split()[:2]]) + "\n"
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        with open(path, "a", encoding="ascii") as f:
            f.write(line)
        return True


class Runner(Protocol):
    """What SSH backends need from a connection; tests substitute a fake that records argv."""

    description: str

    def start(self, argv: Sequence[str]) -> "RemoteProcess": ...
    def close(self) -> None: ...


class SshConnection:
    """One SSH connection, used synchronously from any thread."""

    def __init__(self, target: SshTarget, options: SshOptions = SshOptions()) -> None:
        self.target, self.options = target, options
        self.description = target.display
        self._loop = _LoopThread.get()
        self._conn: asyncssh.SSHClientConnection = self._loop.call(self._connect())

    async def _connect(self) -> asyncssh.SSHClientConnection:
        policy = _HostKeyPolicy(self.options)
        path = self.options.known_hosts_path()
        kwargs: dict[str, Any] = {}
        if self.target.port:
            kwargs["port"] = self.target.port
        if self.target.user:
            kwargs["username"] = self.target.user
        try:
            return await asyncssh.connect(
                self.target.host, known_hosts=path if os.path.exists(path) else ([], [], []),
                client_factory=lambda: policy, connect_timeout=CONNECT_TIMEOUT, keepalive_interval=15,
                encryption_algs=list(CIPHERS), **kwargs)
        except asyncssh.HostKeyNotVerifiable as exc:
            hint = "" if policy.verdict and "CHANGED" in policy.verdict else f"pass {self.options.accept_option} to trust it on first use"
            raise HostKeyRejected(policy.verdict or f"host key of {self.target.host} not verifiable: {exc.reason}", hint=hint) from None
        except (asyncssh.KeyExchangeFailed, asyncssh.ConnectionLost, ConnectionResetError) as exc:
            changed = await self._changed_host_key(kwargs)
            if changed:
                raise HostKeyRejected(changed) from None
            if isinstance(exc, asyncssh.KeyExchangeFailed):
                raise HostKeyRejected(f"key exchange with {self.target.host} failed: {exc.reason}") from None
            if isinstance(exc, OSError):
                raise ConnectionFailed(f"cannot reach {self.description}: {exc.strerror}") from None
            raise ConnectionFailed(f"SSH connection to {self.description} failed: {exc.reason}") from None
        except asyncssh.PermissionDenied as exc:
            raise PermissionDenied(f"SSH authentication to {self.description} failed: {exc.reason}",
                                   hint="check the user, ssh-agent and IdentityFile in ~/.ssh/config") from None
        except asyncssh.Error as exc:
            raise ConnectionFailed(f"SSH connection to {self.description} failed: {exc.reason}") from None
        except (OSError, asyncio.TimeoutError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
            raise ConnectionFailed(f"cannot reach {self.description}: {reason}") from None

    async def _changed_host_key(self, kwargs: dict[str, Any]) -> str | None:
        """Why the handshake failed if the host key changed to another type, else None.

        With known_hosts listing a key for the host, asyncssh offers only that
        key's type; a server that now has a key of another type then drops the
        handshake with no word about keys. A second handshake that trusts
        nothing gets the offered key to the policy, which refuses it and says
        it changed, with its fingerprint; it never reaches authentication.
        """
        path = self.options.known_hosts_path()
        port = self.target.port or 22
        if not os.path.exists(path) or not asyncssh.read_known_hosts(path).match(self.target.host, "", port)[0]:
            return None
        probe = _HostKeyPolicy(self.options)
        try:
            conn = await asyncssh.connect(self.target.host, known_hosts=([], [], []), client_factory=lambda: probe,
                                          connect_timeout=CONNECT_TIMEOUT, encryption_algs=list(CIPHERS), **kwargs)
            conn.close()  # not reached: the policy refuses every key known_hosts does not list
        except (asyncssh.Error, OSError, asyncio.TimeoutError):
            pass
        return probe.verdict if probe.verdict and "CHANGED" in probe.verdict else None

    def start(self, argv: Sequence[str]) -> "RemoteProcess":
        return RemoteProcess(self, remote_command(argv))

    def sftp(self) -> "Sftp":
        return Sftp(self)

    def close(self) -> None:
        conn = self._conn
        if conn is not None:
            self._loop.soon(conn.close)


class Sftp:
    """Synchronous SFTP calls; errors become OSError (FileNotFoundError, FileExistsError) or ConnectionLost."""

    def __init__(self, conn: SshConnection) -> None:
        self._conn, self._loop = conn, conn._loop
        self._client = self._call(conn._conn.start_sftp_client())

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self._loop.call(self._mapped(coro))

    async def _mapped(self, coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await coro
        except asyncssh.SFTPNoSuchFile as exc:
            raise FileNotFoundError(errno.ENOENT, exc.reason) from None
        except asyncssh.SFTPFileAlreadyExists as exc:
            raise FileExistsError(errno.EEXIST, exc.reason) from None
        except asyncssh.SFTPError as exc:
            raise OSError(errno.EIO, f"{exc.reason} (SFTP)") from None
        except (asyncssh.Error, ConnectionError) as exc:
            raise ConnectionLost(f"SSH connection to {self._conn.description} lost: {getattr(exc, 'reason', exc)}") from None

    def listdir(self, path: str) -> list[str]:
        return sorted(n for n in self._call(self._client.listdir(path)) if n not in (".", ".."))

    def read(self, path: str) -> bytes:
        return self._call(self._read(path, 0, -1))

    def read_at(self, path: str, offset: int, size: int) -> bytes:
        return self._call(self._read(path, offset, size))

    async def _read(self, path: str, offset: int, size: int) -> bytes:
        async with self._client.open(path, "rb") as f:
            return await f.read(size, offset)

    def write(self, path: str, data: bytes) -> None:
        """Write a whole file and fsync it (OpenSSH's fsync extension)."""
        self._call(self._write(path, data))

    async def _write(self, path: str, data: bytes) -> None:
        async with self._client.open(path, "wb") as f:
            await f.write(data)
            await f.fsync()

    def put(self, local: str, remote: str) -> None:
        """Upload a file with pipelined requests, then fsync it."""
        self._call(self._put(local, remote))

    async def _put(self, local: str, remote: str) -> None:
        await self._client.put(local, remote, max_requests=16)
        async with self._client.open(remote, "ab") as f:
            await f.fsync()

    def get(self, remote: str, local: str) -> None:
        """Download a file with pipelined requests."""
        self._call(self._client.get(remote, local, max_requests=16))

    def sha256(self, path: str) -> tuple[int, str]:
        """(size, sha256 hex) of a remote file, streamed (the hashing runs on the SSH thread)."""
        return self._call(self._sha256(path))

    async def _sha256(self, path: str) -> tuple[int, str]:
        h, size = hashlib.sha256(), 0
        async with self._client.open(path, "rb", max_requests=16) as f:
            while chunk := await f.read(4 << 20):
                h.update(chunk)
                size += len(chunk)
        return size, h.hexdigest()

    def size(self, path: str) -> int:
        return self._call(self._client.stat(path)).size

    def exists(self, path: str) -> bool:
        return self._call(self._client.exists(path))

    def space(self, path: str) -> tuple[int, int]:
        """(total, available) bytes of the file system holding ``path`` (the statvfs@openssh.com extension)."""
        vfs = self._call(self._client.statvfs(path))
        return vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize

    def mkdir(self, path: str) -> None:
        self._call(self._client.mkdir(path))

    def makedirs(self, path: str) -> None:
        self._call(self._client.makedirs(path, exist_ok=True))

    def rename(self, old: str, new: str) -> None:
        """POSIX rename (replaces a file, fails onto a non-empty directory)."""
        self._call(self._client.posix_rename(old, new))

    def rename_new(self, old: str, new: str) -> None:
        """SFTP's own rename, which never replaces: OpenSSH links the new name and fails if it
        is taken (the conditional create that commits a backup)."""
        try:
            self._call(self._client.rename(old, new))
        except OSError as exc:
            if not isinstance(exc, FileExistsError) and self.exists(new):
                raise FileExistsError(errno.EEXIST, f"{new} exists") from None
            raise

    def remove(self, path: str) -> None:
        self._call(self._client.remove(path))

    def rmtree(self, path: str) -> None:
        self._call(self._client.rmtree(path, ignore_errors=True))

    def close(self) -> None:
        self._loop.soon(self._client.exit)


class _Session(asyncssh.SSHClientSession):
    def __init__(self, proc: "RemoteProcess") -> None:
        self.proc = proc

    def data_received(self, data: bytes, datatype: int | None) -> None:  # type: ignore[override]
        self.proc._on_data(data, datatype)

    def eof_received(self) -> bool:
        self.proc._on_eof()
        return False

    def pause_writing(self) -> None:
        self.proc._set_write_paused(True)

    def resume_writing(self) -> None:
        self.proc._set_write_paused(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.proc._on_closed(exc)


class RemoteProcess:
    """A remote command with binary stdin/stdout; stderr is kept (bounded) for error messages."""

    def __init__(self, conn: SshConnection, command: str) -> None:
        self.command = command
        self._loop = conn._loop
        self._where = conn.description
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = self._unsent = 0
        self._paused = self._write_paused = self._eof = self._closed = False
        self._lost: str | None = None
        self.stderr = bytearray()
        self.exit_status: int | None = None
        self._chan = self._loop.call(self._open(conn._conn))

    async def _open(self, conn: asyncssh.SSHClientConnection) -> asyncssh.SSHClientChannel:
        try:
            chan, _ = await conn.create_session(lambda: _Session(self), self.command, encoding=None)
        except (asyncssh.Error, OSError) as exc:
            raise ConnectionLost(f"SSH connection to {self._where} lost: {getattr(exc, 'reason', exc)}") from None
        return chan

    # callbacks, on the loop thread ------------------------------------------------

    def _on_data(self, data: bytes, datatype: int | None) -> None:
        with self._cond:
            if datatype == asyncssh.EXTENDED_DATA_STDERR:
                if len(self.stderr) < 65536:
                    self.stderr += data
                return
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered > HIGH_WATER and not self._paused:
                self._paused = True
                self._chan.pause_reading()
            self._cond.notify_all()

    def _on_eof(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _set_write_paused(self, paused: bool) -> None:
        with self._cond:
            self._write_paused = paused
            self._cond.notify_all()

    def _on_closed(self, exc: Exception | None) -> None:
        with self._cond:
            self.exit_status = self._chan.get_exit_status()
            if exc is not None or (self.exit_status is None and self._chan.get_exit_signal() is None):
                reason = getattr(exc, "reason", None) or str(exc or "channel closed without an exit status")
                self._lost = f"SSH connection to {self._where} lost: {reason}"
            elif self.exit_status is None:
                self._lost = f"remote command on {self._where} killed by signal {self._chan.get_exit_signal()[0]}"
            self._eof = self._closed = True
            self._cond.notify_all()

    def _send(self, data: bytes) -> None:
        try:
            if not self._closed:
                self._chan.write(data)
        except (asyncssh.Error, OSError):
            pass  # the remote end is gone; wait() reports how it ended
        with self._cond:
            self._unsent -= len(data)
            self._cond.notify_all()

    # the synchronous side -------------------------------------------------------

    def read(self) -> bytes:
        """The next chunk of stdout (any size), or b'' at its end; raises ConnectionLost if it dropped."""
        with self._cond:
            while not self._chunks and not self._eof:
                self._cond.wait()
            if not self._chunks:
                if self._lost and self._closed:
                    raise ConnectionLost(self._lost)
                return b""
            chunk = self._chunks.popleft()
            self._buffered -= len(chunk)
            if self._paused and self._buffered < LOW_WATER:
                self._paused = False
                self._loop.soon(self._chan.resume_reading)
            return chunk

    def write(self, data: bytes) -> None:
        """Queue bytes for stdin; blocks while the channel is backed up; no-op once the process ended."""
        with self._cond:
            while (self._write_paused or self._unsent > HIGH_WATER) and not self._closed:
                self._cond.wait()
            if self._closed:
                return
            self._unsent += len(data)
        self._loop.soon(self._send, bytes(data))

    @property
    def finished(self) -> bool:
        """Whether the remote command has ended (or its channel closed); writes are then dropped."""
        return self._closed

    def close_stdin(self) -> None:
        self._loop.soon(lambda: None if self._closed else self._chan.write_eof())

    def wait(self) -> int:
        """Wait for the exit status; raises ConnectionLost if the connection dropped first."""
        with self._cond:
            while not self._closed:
                self._cond.wait()
        if self._lost:
            raise ConnectionLost(self._lost)
        assert self.exit_status is not None
        return self.exit_status

    def terminate(self) -> None:
        """Close the channel (the remote command gets SIGPIPE/EOF); used when a reader gives up early."""
        self._loop.soon(self._chan.close)
