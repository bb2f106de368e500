"""Putting a CernVM-FS cache back into a guest over SSH, as root, before its first CernVM-FS mount.

The documented steps (docs/cernvm.md, "The CernVM-FS cache"): stop autofs
(and unmount any repository), so no client holds the cache; unpack the
objects into ``<base>/shared`` (the same streamed restore as a home, with
its safety rules); give them to the ``cvmfs`` user; start autofs again if it
ran; ``cvmfs_config reload``. The client rebuilds its cache database from the
objects on the next mount, which is why ``cachedb`` is never shipped.

Each step is one ``sh -c`` script whose only argument is the cache base, an
argv element, never shell text. A step whose tool the guest lacks (no
autofs, no ``cvmfs`` user, no ``cvmfs_config``: not a CernVM-FS client yet)
is skipped and said so, never failed over; not being root fails at once.
"""

from __future__ import annotations

from collections.abc import Callable

from vmlfs.archive.manifest import Manifest
from vmlfs.archive.seekable import SeekableReader
from vmlfs.backends.ssh_guest import check_exit
from vmlfs.backends.ssh_restore import restore_to_guest
from vmlfs.backends.ssh_runner import Runner
from vmlfs.engine.restore import RestoreReport
from vmlfs.errors import PermissionDenied, VmlfsError

NOT_ROOT = 6
BEFORE = """set -e
[ "$(id -u)" = 0 ] || { echo "the CernVM-FS cache belongs to the cvmfs user: log in as root (ssh://root@HOST)" >&2; exit 6; }
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet autofs; then
  systemctl stop autofs; echo autofs-stopped
fi
if command -v cvmfs_config >/dev/null 2>&1; then cvmfs_config umount >/dev/null 2>&1 || true; fi
mkdir -p -- "$1/shared"
"""
AFTER = """set -e
if id cvmfs >/dev/null 2>&1; then chown -R cvmfs:cvmfs -- "$1/shared"; else echo no-cvmfs-user; fi
if command -v restorecon >/dev/null 2>&1; then restorecon -R -- "$1/shared" >/dev/null 2>&1 || true; fi
if [ "$2" = yes ]; then systemctl start autofs; fi
if command -v cvmfs_config >/dev/null 2>&1; then cvmfs_config reload >/dev/null; else echo no-cvmfs-config; fi
"""
SKIPPED = {"no-cvmfs-user": "the guest has no cvmfs user: the objects keep the owners they had in the backup",
           "no-cvmfs-config": "the guest has no cvmfs_config: CernVM-FS not reloaded"}


class CacheSteps:
    """The root session on one guest that runs the steps; :meth:`restore` runs them all."""

    def __init__(self, runner: Runner, description: str) -> None:
        self.runner, self.description = runner, description

    def _script(self, script: str, *args: str) -> list[str]:
        proc = self.runner.start(["sh", "-c", script, "vmlfs-cvmfs", *args])
        proc.close_stdin()
        out = b""
        while chunk := proc.read():
            out += chunk
        if proc.wait() == NOT_ROOT:
            message = bytes(proc.stderr).decode("utf-8", "replace").strip().splitlines()
            raise PermissionDenied(f"restoring the CernVM-FS cache into {self.description}: "
                                   f"{message[-1] if message else 'needs root on the guest'}")
        check_exit(proc, f"preparing the CernVM-FS cache on {self.description}")
        return out.decode("utf-8", "replace").split()

    def restore(self, manifest: Manifest, open_layer: Callable[[str], SeekableReader], base: str,
                on_bytes: Callable[[int], None] = lambda n: None) -> tuple[RestoreReport, list[str]]:
        """Stop autofs, unpack into ``base``/shared, chown to cvmfs, start autofs, reload; (report, notes)."""
        stopped = "autofs-stopped" in self._script(BEFORE, base)
        after = (AFTER, base, "yes" if stopped else "no")
        try:
            report = restore_to_guest(manifest, open_layer, self.runner, f"{base}/shared", overwrite=True,
                                      on_bytes=on_bytes)
        except BaseException:
            try:  # autofs back as it was; the unpacking's error is the one to report
                self._script(*after)
            except VmlfsError:
                pass
            raise
        said = self._script(*after)
        return report, [SKIPPED[word] for word in said if word in SKIPPED]

    def close(self) -> None:
        self.runner.close()
