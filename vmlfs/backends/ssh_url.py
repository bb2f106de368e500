"""SSH URLs and remote command lines: pure parsing and quoting, no I/O.

Hosts, users and ports are validated here, before they reach asyncssh or an
``ssh`` command line; remote commands are argv lists joined with
:func:`shlex.join` (the remote side runs them through the login shell, which
must be POSIX-compatible), so no caller ever builds shell text.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Sequence

from vmlfs.errors import InvalidRequest

_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\]")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class SshTarget:
    """Where an ``ssh://[user@]host[:port][/path]`` URL points; ``path`` '' means the remote home."""

    host: str
    user: str | None = None
    port: int | None = None
    path: str = ""

    @property
    def display(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        path = "/" + self.path if self.path.startswith("~") else self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{user}{host}{port}{path}"


def parse_ssh_url(url: str) -> SshTarget:
    """Split an SSH URL, refusing hosts and users that could be read as options or shell text.

    ``ssh://h`` and ``ssh://h/`` are the remote home, ``ssh://h/~/x`` is below
    it, ``ssh://h/abs/path`` is absolute. The path may hold any character but
    NUL; it is only ever passed as one argv element.
    """
    if not url.startswith("ssh://"):
        raise InvalidRequest(f"not an SSH URL: {url!r}", hint="use ssh://[user@]host[:port]/path")
    rest = url[len("ssh://"):]
    authority, slash, path = rest.partition("/")
    user, at, hostport = authority.rpartition("@")
    if not at:
        user = ""
    port: int | None = None
    host = hostport
    m = re.fullmatch(r"(.*?)(?::([0-9]{1,5}))?", hostport)
    if m and m.group(2) and not hostport.endswith("]"):
        host, port = m.group(1), int(m.group(2))
    if not _HOST.fullmatch(host or ""):
        raise InvalidRequest(f"invalid SSH host {host!r} in {url!r}", hint="letters, digits, '.', '_' and '-', not starting with '-'")
    if at and not _USER.fullmatch(user):
        raise InvalidRequest(f"invalid SSH user {user!r} in {url!r}", hint="letters, digits, '.', '_' and '-', not starting with '-'")
    if port is not None and not 0 < port < 65536:
        raise InvalidRequest(f"invalid SSH port {port} in {url!r}")
    if "\0" in path:
        raise InvalidRequest(f"SSH path contains NUL: {url!r}")
    path = "" if not path else ("/" + path if not path.startswith("~") else path)
    return SshTarget(host.strip("[]"), user or None, port, path)


def remote_command(argv: Sequence[str]) -> str:
    """The command line for an argv: every element quoted, so the remote shell sees exactly argv."""
    if not argv or any("\0" in a for a in argv):
        raise InvalidRequest("a remote argv must be non-empty and free of NUL")
    return shlex.join(argv)


