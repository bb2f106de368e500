"""Named crash points for the crash tests of commit, forget, gc and upgrade.

Each long operation calls :func:`step` between its durable steps. When the
environment variable ``VMLFS_KILL_AT`` is ``NAME`` or ``NAME#N``, the process
SIGKILLs itself the first (or N-th) time it reaches step ``NAME`` — the
same as a power cut at that point, but at a chosen step instead of a
guessed moment. Unset (always, outside the tests), a step costs a dict look-up.
"""

from __future__ import annotations

import os
import signal

_seen: dict[str, int] = {}


def step(name: str) -> None:
    wanted = os.environ.get("VMLFS_KILL_AT")
    if not wanted:
        return
    target, _, count = wanted.partition("#")
    if target != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
