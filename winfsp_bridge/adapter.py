"""The thin layer on winfspy: hands WinFsp's callbacks to :class:`winfsp_bridge.bridge.Bridge`.

Imported only on Windows, where winfspy (and WinFsp's DLL) exist. Each
callback calls the bridge and turns its :class:`~winfsp_bridge.ntstatus.NtStatus`
into winfspy's ``NTStatusError``; security descriptors are built from the
bridge's SDDL once per distinct string. The volume is mounted read-only and
case-insensitive (``case_sensitive_search=0``), with names case-preserved
and in Unicode.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

from winfspy import BaseFileSystemOperations, FileSystem, NTStatusError
from winfspy.plumbing.winstuff import SecurityDescriptor, filetime_now

from winfsp_bridge.bridge import Bridge, refused
from winfsp_bridge.ntstatus import NtStatus


def winfsp_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except NtStatus as exc:
            raise NTStatusError(exc.status) from None
    return wrapper


class VmlfsOperations(BaseFileSystemOperations):
    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge
        self._descriptors: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _descriptor(self, text: str) -> Any:
        with self._lock:
            if text not in self._descriptors:
                self._descriptors[text] = SecurityDescriptor.from_string(text)
            return self._descriptors[text]

    @winfsp_call
    def get_volume_info(self) -> dict:
        return self.bridge.get_volume_info()

    @winfsp_call
    def get_security_by_name(self, file_name: str) -> tuple:
        attributes, text = self.bridge.get_security_by_name(file_name)
        descriptor = self._descriptor(text)
        return attributes, descriptor.handle, descriptor.size

    @winfsp_call
    def get_security(self, file_context: Any) -> Any:
        return self._descriptor(self.bridge.get_security(file_context))

    @winfsp_call
    def open(self, file_name: str, create_options: int, granted_access: int) -> Any:
        return self.bridge.open(file_name, create_options, granted_access)

    @winfsp_call
    def close(self, file_context: Any) -> None:
        self.bridge.close(file_context)

    @winfsp_call
    def cleanup(self, file_context: Any, file_name: str | None, flags: int) -> None:
        self.bridge.cleanup(file_context, file_name, flags)

    @winfsp_call
    def get_file_info(self, file_context: Any) -> dict:
        return self.bridge.get_file_info(file_context)

    @winfsp_call
    def read_directory(self, file_context: Any, marker: str | None) -> list:
        return self.bridge.read_directory(file_context, marker)

    @winfsp_call
    def get_dir_info_by_name(self, file_context: Any, file_name: str) -> dict:
        return self.bridge.get_dir_info_by_name(file_context, file_name)

    @winfsp_call
    def read(self, file_context: Any, offset: int, length: int) -> bytes:
        return self.bridge.read(file_context, offset, length)

    def flush(self, file_context: Any) -> None:
        """Nothing is ever written, so there is nothing to flush (Windows flushes read-only files too)."""

    @winfsp_call
    def refuse(self, *args: Any) -> None:
        """Every change: STATUS_MEDIA_WRITE_PROTECTED."""
        refused()

    create = overwrite = write = set_basic_info = set_file_size = can_delete = rename = set_security = refuse
    set_volume_label = refuse


def mount(bridge: Bridge, mountpoint: str) -> FileSystem:
    """Start the read-only volume at ``mountpoint`` (a drive letter such as ``X:`` or an empty directory)."""
    fs = FileSystem(
        mountpoint, VmlfsOperations(bridge),
        sector_size=512, sectors_per_allocation_unit=1, volume_creation_time=filetime_now(), volume_serial_number=0,
        file_info_timeout=1000, case_sensitive_search=0, case_preserved_names=1, unicode_on_disk=1,
        persistent_acls=1, read_only_volume=1, post_cleanup_when_modified_only=1, um_file_context_is_user_context2=1,
        file_system_name="vmlfs", prefix="", reject_irp_prior_to_transact0=1,
    )
    fs.start()
    return fs
