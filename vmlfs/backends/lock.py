"""One backup at a time per entry: an flock'ed file that names its holder.

``flock`` is released by the kernel when the holder dies, so a lock left by a
killed process is never an obstacle; the pid written inside only serves the
message ("locked by pid N") and the take-over log line.
"""

from __future__ import annotations

import fcntl
import logging
import os
import platform
from types import TracebackType

from vmlfs.errors import Busy

log = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EntryLock:
    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "EntryLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            os.close(fd)
            who = f"pid {holder[0]}" if holder else "another process"
            if len(holder) > 1 and holder[1] != platform.node():
                who += f" on {holder[1]}"
            raise Busy(f"{self.what} is locked by {who}: a backup is already running", hint="wait for it to finish") from None
        previous = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
        if previous and previous[0].isdigit() and int(previous[0]) != os.getpid():
            if not _pid_alive(int(previous[0])):
                log.warning("%s: taking over a stale lock left by dead pid %s", self.what, previous[0])
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {platform.node()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "EntryLock":
        return self.acquire()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
