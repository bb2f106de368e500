"""Trusting a host key vmlfs made itself: a provisioned guest's, written into the user's known_hosts.

vmlfs generated that key and handed it to the guest through the ConfigDrive,
so it is known before the first connection; recording it spares the next
backup an ``--accept-new-host-key`` (a trust-on-first-use that would be
weaker). An older line for the same address (an earlier guest behind the
same port forward) is removed first, or SSH would refuse the new key as a
changed one. The line is hashed when the user's SSH configuration says
``HashKnownHosts yes`` (Debian's /etc/ssh/ssh_config does), as ssh itself
would write it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import subprocess
from pathlib import Path


def host_pattern(host: str, port: int) -> str:
    """How known_hosts names ``host:port``: bare for port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def hashes_known_hosts(host: str, port: int) -> bool:
    """What ``ssh -G`` says HashKnownHosts is for this host; no ssh client: read the config files."""
    if shutil.which("ssh"):
        done = subprocess.run(["ssh", "-G", "-p", str(port), "--", host], capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            return "hashknownhosts yes" in done.stdout.lower().splitlines()
    for path in (Path.home() / ".ssh" / "config", Path("/etc/ssh/ssh_config")):
        try:
            for line in path.read_text(errors="replace").splitlines():
                words = line.split()
                if len(words) == 2 and words[0].lower() == "hashknownhosts":
                    return words[1].lower() == "yes"
        except OSError:
            continue
    return False


def hashed(pattern: str, salt: bytes | None = None) -> str:
    """OpenSSH's hashed host name: ``|1|base64(salt)|base64(HMAC-SHA1(salt, pattern))``."""
    salt = os.urandom(20) if salt is None else salt
    digest = hmac.new(salt, pattern.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def trust(host: str, port: int, public_key: str, path: Path | None = None) -> Path:
    """Make ``public_key`` (``TYPE BASE64 [comment]``) the one known key of ``host:port`` in ``path``
    (default ``~/.ssh/known_hosts``); returns the file written."""
    path = path or Path.home() / ".ssh" / "known_hosts"
    pattern = host_pattern(host, port)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() and shutil.which("ssh-keygen"):
        # ssh-keygen -R finds hashed lines too, and keeps a backup as known_hosts.old.
        subprocess.run(["ssh-keygen", "-R", pattern, "-f", str(path)], capture_output=True, timeout=30)
    name = hashed(pattern) if hashes_known_hosts(host, port) else pattern
    kind, blob = public_key.split()[:2]
    old = path.read_text() if path.exists() else ""
    with open(path, "a") as f:
        f.write(("" if not old or old.endswith("\n") else "\n") + f"{name} {kind} {blob}\n")
    path.chmod(0o600)
    return path
