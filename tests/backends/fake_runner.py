"""A Runner that records every argv and runs it on this machine through ``sh -c``, as sshd would.

It exercises the same remote-command text (``shlex.join``) and the same
agent script as a real SSH connection, without a server, so the wire
protocols and the quoting are testable in milliseconds.
"""

from __future__ import annotations

import subprocess
import threading
from typing import Sequence

from vmlfs.backends.ssh_url import remote_command


class LocalProcess:
    """The RemoteProcess interface over a local subprocess."""

    def __init__(self, command: str) -> None:
        self.popen = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self.stderr = bytearray()
        self.exit_status: int | None = None
        self._err = threading.Thread(target=lambda: self.stderr.extend(self.popen.stderr.read()), daemon=True)  # type: ignore[union-attr]
        self._err.start()

    def read(self) -> bytes:
        return self.popen.stdout.read(1 << 20)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        try:
            self.popen.stdin.write(data)  # type: ignore[union-attr]
        except BrokenPipeError:
            pass

    @property
    def finished(self) -> bool:
        return self.popen.poll() is not None

    def close_stdin(self) -> None:
        try:
            self.popen.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass

    def wait(self) -> int:
        self.exit_status = self.popen.wait()
        self._err.join()
        return self.exit_status

    def terminate(self) -> None:
        """Like a closed SSH channel: the agent sees its stdin end (killing ``sh`` alone would
        leave the agent it started holding the stderr pipe)."""
        self.close_stdin()
        self.popen.kill()
        self.wait()


class RecordingRunner:
    description = "local-sh"

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []
        self.commands: list[str] = []

    def start(self, argv: Sequence[str]) -> LocalProcess:
        self.argvs.append(list(argv))
        command = remote_command(argv)
        self.commands.append(command)
        return LocalProcess(command)

    def close(self) -> None:
        pass
