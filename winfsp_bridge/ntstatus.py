"""NTSTATUS codes the bridge answers with, and vmlfs errors mapped to them in one place.

The pure layer raises :class:`NtStatus`; the winfspy adapter turns it into
winfspy's ``NTStatusError`` (which WinFsp hands to Windows). Codes are the
values of ntstatus.h.
"""

from __future__ import annotations

from vmlfs.errors import Busy, CorruptData, InvalidRequest, NotFound, PermissionDenied, ReadOnly

STATUS_END_OF_FILE = 0xC0000011
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_OBJECT_PATH_NOT_FOUND = 0xC000003A
STATUS_MEDIA_WRITE_PROTECTED = 0xC00000A2
STATUS_FILE_IS_A_DIRECTORY = 0xC00000BA
STATUS_NOT_A_DIRECTORY = 0xC0000103
STATUS_FILE_CORRUPT_ERROR = 0xC0000102
STATUS_DEVICE_BUSY = 0x80000011
STATUS_UNEXPECTED_IO_ERROR = 0xC00000E9

_BY_ERROR = {
    NotFound: STATUS_OBJECT_NAME_NOT_FOUND,
    PermissionDenied: STATUS_ACCESS_DENIED,
    ReadOnly: STATUS_MEDIA_WRITE_PROTECTED,
    InvalidRequest: STATUS_INVALID_PARAMETER,
    Busy: STATUS_DEVICE_BUSY,
    CorruptData: STATUS_FILE_CORRUPT_ERROR,
}


class NtStatus(Exception):
    """An operation's failure, as the NTSTATUS Windows will see."""

    def __init__(self, status: int, why: str = "") -> None:
        super().__init__(f"NTSTATUS {status:#010x}" + (f": {why}" if why else ""))
        self.status = status


def status_of(exc: BaseException) -> int:
    """The NTSTATUS for ``exc``: its own if it is one, else by its nearest mapped vmlfs class."""
    if isinstance(exc, NtStatus):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in _BY_ERROR:
            return _BY_ERROR[cls]
    return STATUS_UNEXPECTED_IO_ERROR
