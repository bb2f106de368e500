"""The one exception hierarchy of vmlfs.

Every error vmlfs raises on purpose is a :class:`VmlfsError`. Each class carries
the errno the FUSE boundary answers with and the exit code the CLI ends with,
so the two boundaries (``vmlfs/fs/fuse_adapter.py`` and ``vmlfs/cli/main.py``)
each map errors in one place and never need to know the concrete class.
"""

from __future__ import annotations

import errno as _errno


class VmlfsError(Exception):
    """Base of every deliberate vmlfs error.

    ``hint`` says what the user can do about it; the CLI prints it after the
    message.
    """

    errno = _errno.EIO
    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidRequest(VmlfsError):
    """The caller asked for something malformed (bad name, bad option value)."""

    errno = _errno.EINVAL
    exit_code = 2


class UnsafePath(InvalidRequest):
    """A name would escape its directory (absolute, '..', NUL, through a symlink)."""


class NotFound(VmlfsError):
    """An entry, backup, path or object does not exist."""

    errno = _errno.ENOENT
    exit_code = 3


class AlreadyExists(VmlfsError):
    """Something would be overwritten that the caller did not allow."""

    errno = _errno.EEXIST
    exit_code = 4


class Busy(VmlfsError):
    """Another process holds the resource (e.g. an entry's backup lock)."""

    errno = _errno.EBUSY
    exit_code = 5


class ReadOnly(VmlfsError):
    """A write was attempted on something vmlfs only reads."""

    errno = _errno.EROFS
    exit_code = 6


class PermissionDenied(VmlfsError):
    """The caller may not do this (e.g. another user writing a control file)."""

    errno = _errno.EACCES
    exit_code = 6


class CorruptData(VmlfsError):
    """Stored data failed a check: bad checksum, truncated frame, bad syntax."""

    errno = _errno.EIO
    exit_code = 7


class UnsupportedVersion(CorruptData):
    """A store, manifest or layer was written by a newer, unknown format version."""

    exit_code = 8


class GuestError(VmlfsError):
    """Reading from or writing to the guest failed (I/O, remote command, SSH)."""

    errno = _errno.EIO
    exit_code = 9


class ConnectionFailed(GuestError):
    """A remote end (SSH, libvirtd, HTTP) could not be reached or refused us."""

    errno = _errno.ENOTCONN
    exit_code = 10


class HostKeyRejected(ConnectionFailed):
    """An SSH host key was unknown (and not accepted) or changed."""

    errno = _errno.EACCES


class HypervisorError(VmlfsError):
    """libvirt refused or failed an operation."""

    exit_code = 11


class DownloadError(VmlfsError):
    """An image download failed or did not verify."""

    exit_code = 12


class StorageFull(VmlfsError):
    """The store ran out of space (ENOSPC) or failed to write (EIO)."""

    errno = _errno.ENOSPC
    exit_code = 13
