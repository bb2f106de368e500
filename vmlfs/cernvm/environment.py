"""A backup's env.txt put back in a provisioned VM: a login-shell script that exports it for the user.

env.txt is the environment the user's shell set up in the old guest (an
interactive login shell's ``env -0``: NUL-separated, byte-exact; a local
guest's file may be one variable per line). A new VM from the same release
sets up most of it again from the restored dotfiles, but not what came from
outside the home: the old VM's ``/etc/profile.d``, a site's setup script, a
variable exported by hand before a ``.bashrc`` existed. Provisioning writes
:func:`profile_script` to ``/etc/profile.d/`` through cloud-init, so every
sh-family login shell of that user starts from the recorded values; the
user's own dotfiles run after it, as they did when env.txt was captured.

Variables that describe one session or one machine rather than the
environment (the SSH connection, the terminal, the working directory, the
host name, the session bus) are left out: the new VM's own values are the
right ones. Names that are not shell identifiers (bash's exported functions,
``BASH_FUNC_f%%``) cannot be exported by ``export`` and are left out too.
"""

from __future__ import annotations

import re

PROFILE_PATH = "/etc/profile.d/zz-vmlfs-environment.sh"
"""Sourced by /etc/profile (bash, sh, ksh login shells; zsh where /etc/zprofile sources profile.d, as on EL)
after the distribution's own scripts ("zz-"), before the user's ~/.profile or ~/.bash_profile."""

SESSION_VARIABLES = frozenset({
    "_", "PWD", "OLDPWD", "SHLVL", "HOSTNAME", "HOME", "USER", "LOGNAME", "SHELL", "MAIL", "TERM", "COLUMNS", "LINES",
    "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "SSH_AUTH_SOCK", "SSH_AGENT_PID", "DISPLAY", "XAUTHORITY",
    "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "XDG_SESSION_ID", "XDG_SESSION_TYPE", "XDG_SESSION_CLASS",
    "XDG_SEAT", "XDG_VTNR", "KRB5CCNAME", "TMUX", "STY", "WINDOWID", "PS1", "PS2", "PS4",
})
"""One session's or one machine's values: the new VM's are right. HOME, USER, LOGNAME and SHELL come from
the account provisioning creates; PS1 is set by the restored dotfiles (and is not exported by most)."""

_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*\Z")


def variables(env: bytes) -> list[tuple[bytes, bytes]]:
    """The ``NAME=value`` pairs of env.txt, in order (a later one of the same name wins, as in a shell)."""
    records = env.split(b"\0") if b"\0" in env else env.split(b"\n")
    pairs = []
    for record in records:
        name, equals, value = record.partition(b"=")
        if equals and _IDENTIFIER.match(name):
            pairs.append((name, value))
    return pairs


def login_shell(env: bytes, default: str = "/bin/bash") -> str:
    """The SHELL env.txt names, if it is an absolute path, else ``default``."""
    shells = [value for name, value in variables(env) if name == b"SHELL" and value.startswith(b"/")]
    return shells[-1].decode(errors="replace") if shells else default


def _quoted(value: bytes) -> bytes:
    """``value`` as one sh word, byte-exact: single quotes keep everything but a single quote, which closes,
    is escaped and reopens."""
    return b"'" + value.replace(b"'", b"'\\''") + b"'"


def profile_script(env: bytes, user: str) -> bytes:
    """The profile.d script exporting env.txt's variables (but :data:`SESSION_VARIABLES`) for ``user`` only."""
    latest = dict(variables(env))
    lines = [f"# Written by vmlfs provisioning: the environment {user}'s shell had when the backup was taken".encode(),
             b"# (env.txt), applied before the user's own profile. Remove this file to stop it.",
             f'if [ "$(id -un 2>/dev/null)" = {_quoted(user.encode()).decode()} ]; then'.encode()]
    lines += [b"  export " + name + b"=" + _quoted(value) for name, value in latest.items()
              if name.decode() not in SESSION_VARIABLES]
    lines.append(b"fi")
    return b"\n".join(lines) + b"\n"
