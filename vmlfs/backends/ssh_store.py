"""A store kept in a directory on another machine, reached over SSH (SFTP plus the guest agent).

The same layout and public methods as :class:`LocalStore`, so the engine,
the CLI and the mount use either without knowing which. What differs:

- Small documents (store header, entry.json) are read and written with
  SFTP; writes go to a temporary name, are fsynced and renamed into place
  (``posix-rename@openssh.com``).
- Trees are downloaded once into a local cache directory, under their
  sha256 (the name the record gives them), and checked against it; a
  changed backup can therefore never be answered from a stale copy. The
  cache is bounded (oldest files go first).
- Layers are read by range: the seek table, then only the frames a read
  needs, through the shared in-memory :class:`FrameCache`, keyed by the
  layer's sha256 as well.
- A backup is built in a local work directory as with a local store; each
  object is uploaded under a temporary name, fsynced, and given its name
  with SFTP's plain rename, which never replaces; the record is created
  the same way, last (:meth:`StoreLayout.commit`).
- The entry lock is an flock held on the store host by a remote agent
  process for as long as the backup runs (and freed by the kernel if the
  connection dies).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from vmlfs import names
from vmlfs.archive.placement import PlacementProofs
from vmlfs.archive.seekable import FrameCache, SeekableReader
from vmlfs.backends.remote_reads import TAIL, RangedLayerReader, cache_root, cached_tree, cached_tree_path
from vmlfs.backends.ssh_guest import StreamReader, agent_argv
from vmlfs.backends.ssh_runner import ConnectionLost, SshConnection, SshOptions
from vmlfs.backends.ssh_url import parse_ssh_url
from vmlfs.engine.store import STORE_FILE, StoreLayout, entry_path
from vmlfs.errors import Busy, CorruptData, InvalidRequest, write_failed

log = logging.getLogger(__name__)


def remote_layer_reader(store: "SshStore", path: str, sha256: str, *, name: str) -> SeekableReader:
    """The layer at ``path`` read by SFTP ranges: its tail for the seek table, then whole frames."""
    try:
        size = store.sftp.size(path)
        tail_len = min(size, TAIL)
        tail = store.sftp.read_at(path, size - tail_len, tail_len)
    except FileNotFoundError:
        raise CorruptData(f"{name}: layer file is missing") from None
    except OSError as exc:
        raise CorruptData(f"{name}: cannot open layer: {exc.strerror}") from None
    return RangedLayerReader(f"{store.description}/{path}#{sha256}", size, tail,
                             lambda offset, length: store.sftp.read_at(path, offset, length),
                             cache=store.frame_cache, name=name, proofs=store.proofs)


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
        self.cache_dir = cache_root("ssh") / key
        self.proofs = PlacementProofs(self.cache_dir / "placed")
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

    def _unlink(self, rel: str) -> None:
        self.sftp.remove(self._p(rel))

    def _rmtree(self, rel: str) -> None:
        self.sftp.rmtree(self._p(rel))

    def _create(self, rel: str, data: bytes) -> None:
        tmp = f"{rel}.{os.getpid()}.tmp"
        self.sftp.write(self._p(tmp), data)
        try:
            self.sftp.rename_new(self._p(tmp), self._p(rel))
        finally:
            self._discard(self._p(tmp))

    def _put(self, local: Path, rel: str) -> None:
        if self.sftp.exists(self._p(rel)):
            return
        tmp = f"{rel}.{os.getpid()}.tmp"
        try:
            self.sftp.put(str(local), self._p(tmp))
            self.sftp.rename_new(self._p(tmp), self._p(rel))
        except FileExistsError:
            pass
        finally:
            self._discard(self._p(tmp))

    def _size(self, rel: str) -> int:
        return self.sftp.size(self._p(rel))

    def _digest(self, rel: str) -> tuple[int, str]:
        """(size, sha256 hex) of a remote file, for verify (streamed, never whole in memory)."""
        return self.sftp.sha256(self._p(rel))

    def _cached_tree(self, digest: str) -> str | None:
        return cached_tree_path(self.cache_dir, digest)

    def _tree_file(self, rel: str, digest: str, where: str) -> str:
        """The tree from the local cache, downloaded (and checked against ``digest``) if missing."""
        return cached_tree(self.cache_dir, digest, where, lambda local: self.sftp.get(self._p(rel), local))

    def _local_path(self, rel: str) -> Path:
        raise InvalidRequest(f"{self.description}: this needs the store's files on this machine",
                             hint="run it on the store's host, with the store's directory as --store")

    def _layer_reader(self, rel: str, digest: str, name: str) -> SeekableReader:
        return remote_layer_reader(self, self._p(rel), digest, name=name)

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

    def _discard(self, remote_tmp: str) -> None:
        """Best effort: a dead connection leaves a temporary upload to gc."""
        try:
            if self.sftp.exists(remote_tmp):
                self.sftp.remove(remote_tmp)
        except ConnectionLost:
            log.info("left %s for gc to clean up", remote_tmp)

    def space(self) -> tuple[int, int]:
        return self.sftp.space(self._p(""))

    def close(self) -> None:
        self.sftp.close()
        self.conn.close()
