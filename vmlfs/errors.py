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


class NoAttribute(NotFound):
    """A path has no extended attribute of that name (what getxattr answers: ENODATA, not ENOENT)."""

    errno = _errno.ENODATA


class NoAttributesHere(NoAttribute):
    """A mount whose store kept no extended attributes at all: getxattr and listxattr answer ENOSYS,
    which the kernel takes as "this file system has none" and answers ENOTSUP itself from then on,
    without asking again (vmlfs.fs.state.MountState.serves_xattrs)."""

    errno = _errno.ENOSYS


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


class UnsupportedVersion(VmlfsError):
    """A store, manifest or layer was written by a newer, unknown format version.

    Not :class:`CorruptData`: the data may be perfectly good, this vmlfs is
    too old for it; "verify" or "restore the damaged parts" would be the wrong
    advice."""

    errno = _errno.EPROTONOSUPPORT
    exit_code = 8


class GuestError(VmlfsError):
    """Reading from or writing to the guest failed (I/O, remote command, SSH)."""

    errno = _errno.EIO
    exit_code = 9


class ConnectionFailed(VmlfsError):
    """A remote end (SSH guest or store, libvirtd, HTTP) could not be reached or refused us.

    Not a :class:`GuestError`: the remote end may be a store or a hypervisor,
    and a retry policy must not mistake a failed read on the guest for a
    dropped connection (or the other way round)."""

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


def write_failed(exc: OSError, what: str, *, hint: str = "") -> VmlfsError:
    """The error for an OSError while writing ``what``: refused permission is not a full disk.

    EACCES/EPERM become :class:`PermissionDenied`, EROFS :class:`ReadOnly`,
    anything else (ENOSPC, EDQUOT, EIO, ...) :class:`StorageFull`.
    """
    reason = exc.strerror or (_errno.errorcode.get(exc.errno or 0) if exc.errno else None) or str(exc)
    message = f"{what}: {reason}"
    if exc.errno in (_errno.EACCES, _errno.EPERM):
        return PermissionDenied(message, hint=hint or "check the owner and mode of the store directory")
    if exc.errno == _errno.EROFS:
        return ReadOnly(message, hint=hint)
    return StorageFull(message, hint=hint)
