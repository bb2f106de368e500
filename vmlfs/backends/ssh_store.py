"""A store kept in a directory on another machine, reached over SSH (SFTP plus the guest agent).

The same layout and public methods as :class:`LocalStore`, so the engine,
the CLI and the mount use either without knowing which. What differs:

- Small documents (store header, entry.json, meta.json, env.txt) are read
  and written with SFTP; writes go to a temporary name, are fsynced and
  renamed into place (``posix-rename@openssh.com``).
- Manifests are downloaded once into a local cache directory, under a name
  made of the entry, the timestamp and the manifest's sha256 from meta.json,
  and checked against that sha256; a changed backup can therefore never be
  answered from a stale copy. The cache is bounded (oldest files go first).
- Layers are read by range: the seek table, then only the frames a read
  needs, through the shared in-memory :class:`FrameCache`, keyed by the
  layer's sha256 as well.
- A backup is built in a local work directory as with a local store;
  :meth:`commit` uploads it into ``entries/<e>/.tmp/`` on the host, fsyncs
  each file and renames the directory into ``backups/`` in one step.
- The entry lock is an flock held on the store host by a remote agent
  process for as long as the backup runs (and freed by the kernel if the
  connection dies).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

from vmlfs import names
from vmlfs.archive.manifest import Manifest
from vmlfs.archive.seekable import FrameCache, SeekableReader, read_seek_table
from vmlfs.backends.ssh_guest import StreamReader, agent_argv
from vmlfs.backends.ssh_runner import ConnectionLost, SshConnection, SshOptions
from vmlfs.backends.ssh_url import parse_ssh_url
from vmlfs.engine.store import (
    LAYER,
    MANIFEST,
    META,
    STORE_FILE,
    StoreLayout,
    backup_path,
    entry_path,
)
from vmlfs.errors import (
    AlreadyExists,
    Busy,
    CorruptData,
    InvalidRequest,
    write_failed,
)

log = logging.getLogger(__name__)
MANIFEST_CACHE_BYTES = 2 << 30


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vmlfs" / "ssh"


class RemoteLayerReader(SeekableReader):
    """A SeekableReader whose frames come from SFTP range reads instead of a local file."""

    def __init__(self, store: "SshStore", path: str, sha256: str, *, name: str) -> None:
        self._remote, self._store = path, store
        try:
            size = store.sftp.size(path)
            tail_len = min(size, 1 << 20)
            tail = store.sftp.read_at(path, size - tail_len, tail_len)
        except FileNotFoundError:
            raise CorruptData(f"{name}: layer file is missing") from None
        except OSError as exc:
            raise CorruptData(f"{name}: cannot open layer: {exc.strerror}") from None
        try:
            table = read_seek_table(_Tail(tail, size), size)
        except CorruptData as exc:
            raise CorruptData(f"{name}: {exc}") from None
        # The frame-cache key is content-addressed: a replaced layer never meets stale frames.
        self._setup(f"{store.description}/{path}#{sha256}", name, store.frame_cache, table)

    def _read_compressed(self, offset: int, length: int) -> bytes:
        return self._store.sftp.read_at(self._remote, offset, length)

    def close(self) -> None:
        """Nothing to close: reads go through the store's SFTP session."""


class _Tail(io.RawIOBase):
    """The last bytes of a remote file, seekable by absolute offset (enough for the seek table)."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.base, self.pos = data, size - len(data), 0

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset
        return offset

    def read(self, n: int = -1) -> bytes:
        if self.pos < self.base:
            raise CorruptData("seek table larger than the part of the layer read for it")
        lo = self.pos - self.base
        out = self.data[lo:lo + n if n >= 0 else None]
        self.pos += len(out)
        return out


class _RemoteLock:
    def __init__(self, store: "SshStore", path: str, what: str) -> None:
        self.store, self.path, self.what = store, path, what
        self.proc = None

    def __enter__(self) -> "_RemoteLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> "_RemoteLock":
        proc = self.store.conn.start(agent_argv("lock", self.path))
        reader = StreamReader(proc)
        answer = reader.take(1)
        if answer != b"L":
            holder = reader.message().split()
            proc.close_stdin()
            proc.wait()
            who = f"pid {holder[0]}" if holder else "another process"
            who += f" on {holder[1]}" if len(holder) > 1 else ""
            raise Busy(f"{self.what} is locked by {who}: a backup is already running", hint="wait for it to finish")
        self.proc = proc
        return self

    def release(self) -> None:
        if self.proc is not None:
            self.proc.close_stdin()
            self.proc.wait()
            self.proc = None


class SshStore(StoreLayout):
    """A vmlfs store at ``ssh://[user@]host[:port]/path``, through one SFTP session."""

    def __init__(self, url: str, *, create: bool = True, cache: FrameCache | None = None,
                 options: SshOptions = SshOptions()) -> None:
        target = parse_ssh_url(url)
        if not target.path:
            raise InvalidRequest(f"an SSH store needs a path: {url}", hint="ssh://host/path/to/store")
        self.root = target.path[2:] if target.path.startswith("~/") else target.path
        self.description = target.display
        self.frame_cache = cache or FrameCache()
        self.conn = SshConnection(target, options)
        self.sftp = self.conn.sftp()
        key = hashlib.sha256(self.description.encode()).hexdigest()[:16]
        self.cache_dir = cache_root() / key
        if create and not self.sftp.exists(self._p(STORE_FILE)):
            try:
                self.sftp.makedirs(self._p(""))
            except OSError as exc:
                raise write_failed(exc, f"cannot create store at {self.description}") from None
        self._create_or_check(create)

    def _p(self, rel: str) -> str:
        return "/".join([self.root.rstrip("/") or "/", rel]).replace("//", "/").rstrip("/") or "/"

    # primitives --------------------------------------------------------------

    def _read(self, rel: str) -> bytes:
        return self.sftp.read(self._p(rel))

    def _write(self, rel: str, data: bytes) -> None:
        """Readers see the old or the new content, never half (temporary name, fsync, rename)."""
        tmp = f"{rel}.{os.getpid()}.tmp"
        try:
            self.sftp.write(self._p(tmp), data)
            self.sftp.rename(self._p(tmp), self._p(rel))
        except OSError as exc:
            raise write_failed(exc, f"cannot write {self.description}/{rel}") from None

    def _listdir(self, rel: str) -> list[str]:
        return self.sftp.listdir(self._p(rel))

    def _exists(self, rel: str) -> bool:
        return self.sftp.exists(self._p(rel))

    def _mkdir(self, rel: str) -> None:
        try:
            self.sftp.mkdir(self._p(rel))
        except OSError as exc:  # SFTP reports an existing directory as a plain failure
            if not isinstance(exc, FileExistsError) and self.sftp.exists(self._p(rel)):
                raise FileExistsError(exc.errno, exc.strerror, rel) from None
            raise

    def _rename(self, rel: str, new_rel: str) -> None:
        self.sftp.rename(self._p(rel), self._p(new_rel))

    def _rmtree(self, rel: str) -> None:
        self.sftp.rmtree(self._p(rel))

    # the rest of the port --------------------------------------------------------

    def open_manifest(self, entry: str, ts: str) -> Manifest:
        """The manifest from the local cache, downloaded (and checked against meta.json) if missing."""
        digest = self.meta(entry, ts).manifest["sha256"]
        local = self.cache_dir / entry / f"{ts}-{digest}.sqlite"
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=local.parent, suffix=".part")
            os.close(fd)
            try:
                try:
                    self.sftp.get(self._p(backup_path(entry, ts, MANIFEST)), tmp)
                except FileNotFoundError:
                    raise CorruptData(f"{entry}@{ts}: manifest is missing") from None
                h = hashlib.sha256()
                with open(tmp, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                if h.hexdigest() != digest:
                    raise CorruptData(f"{entry}@{ts}: manifest differs from the sha256 in meta.json (damaged)")
                os.replace(tmp, local)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            self._trim_cache()
        os.utime(local)
        return Manifest(local, f"{entry}@{ts}")

    def _trim_cache(self) -> None:
        files = sorted(self.cache_dir.glob("*/*.sqlite"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for path in files:
            total += path.stat().st_size
            if total > MANIFEST_CACHE_BYTES:
                path.unlink(missing_ok=True)

    def open_layer(self, entry: str, ts: str) -> SeekableReader:
        digest = self.meta(entry, ts).layer["sha256"]
        return RemoteLayerReader(self, self._p(backup_path(entry, ts, LAYER)), digest, name=f"layer of {entry}@{ts}")

    def file_digest(self, entry: str, ts: str, name: str) -> tuple[int, str]:
        """(size, sha256 hex) of a file of a backup directory, for verify (streamed, never whole in memory)."""
        return self.sftp.sha256(self._p(backup_path(entry, ts, name)))

    # writing -----------------------------------------------------------------

    def lock(self, entry: str) -> _RemoteLock:
        return _RemoteLock(self, self._p(entry_path(entry, ".lock")), f"entry {entry!r}")

    def clean_tmp(self, entry: str) -> int:
        """Remove leftovers of interrupted backups, remote and local; call only while holding the lock."""
        tmp = self._p(entry_path(entry, ".tmp"))
        try:
            leftovers = self.sftp.listdir(tmp)
        except FileNotFoundError:
            return 0
        for leftover in leftovers:
            log.info("removing leftover of an interrupted backup: %s/%s", tmp, leftover)
            self.sftp.rmtree(f"{tmp}/{leftover}")
        return len(leftovers)

    def new_work_dir(self, entry: str, ts: str) -> Path:
        """A local directory to build the backup in; :meth:`commit` uploads it."""
        names.entry_name(entry)
        return Path(tempfile.mkdtemp(prefix=f"vmlfs-{entry}-{names.timestamp(ts)}-"))

    def commit(self, entry: str, work: Path, ts: str) -> None:
        """Upload ``work`` to the host's .tmp, fsync every file, and make it visible with one rename."""
        target = self._p(backup_path(entry, ts))
        if self.sftp.exists(target):
            raise AlreadyExists(f"backup {entry}@{ts} already exists")
        remote_tmp = self._p(entry_path(entry, ".tmp", f"{ts}-{os.getpid()}"))
        try:
            self.sftp.makedirs(remote_tmp)
            for p in sorted(work.iterdir(), key=lambda p: p.name == META):  # meta.json last
                self.sftp.put(str(p), f"{remote_tmp}/{p.name}")
            self.sftp.rename(remote_tmp, target)
        except OSError as exc:
            self._discard(remote_tmp)
            raise write_failed(exc, f"cannot commit backup {entry}@{ts} to {self.description}") from exc
        except BaseException:
            self._discard(remote_tmp)
            raise
        shutil.rmtree(work, ignore_errors=True)

    def _discard(self, remote_tmp: str) -> None:
        """Best effort: a dead connection leaves the directory to the next run's clean_tmp."""
        try:
            self.sftp.rmtree(remote_tmp)
        except ConnectionLost:
            log.info("left %s for the next backup to clean up", remote_tmp)

    def space(self) -> tuple[int, int]:
        return self.sftp.space(self._p(""))

    def close(self) -> None:
        self.sftp.close()
        self.conn.close()
