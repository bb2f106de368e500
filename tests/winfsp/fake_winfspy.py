"""A fake of the small part of winfspy the adapter uses, so it runs on Linux.

Only names and shapes the adapter relies on (winfspy 0.8: ``BaseFileSystemOperations``,
``FileSystem(mountpoint, operations, **volume_params)`` with ``start``/``stop``,
``NTStatusError(status)`` whose ``value`` is the status, and
``plumbing.winstuff.SecurityDescriptor.from_string`` with ``handle`` and ``size``).
"""

from __future__ import annotations

import sys
import types


class NTStatusError(Exception):
    @property
    def value(self) -> int:
        return self.args[0]


class BaseFileSystemOperations:
    def __init__(self) -> None:
        pass


class FileSystem:
    started: list["FileSystem"] = []

    def __init__(self, mountpoint: str, operations, **params) -> None:
        self.mountpoint, self.operations, self.params = mountpoint, operations, params
        self.running = False

    def start(self) -> None:
        self.running = True
        FileSystem.started.append(self)

    def stop(self) -> None:
        self.running = False


class SecurityDescriptor:
    made: list[str] = []

    def __init__(self, text: str) -> None:
        self.text, self.handle, self.size = text, object(), len(text)

    @classmethod
    def from_string(cls, text: str) -> "SecurityDescriptor":
        cls.made.append(text)
        return cls(text)


def install(monkeypatch) -> None:
    """Put the fake where ``import winfspy`` finds it (for this test only)."""
    SecurityDescriptor.made = []
    FileSystem.started = []
    root = types.ModuleType("winfspy")
    root.BaseFileSystemOperations, root.FileSystem, root.NTStatusError = BaseFileSystemOperations, FileSystem, NTStatusError
    plumbing = types.ModuleType("winfspy.plumbing")
    winstuff = types.ModuleType("winfspy.plumbing.winstuff")
    winstuff.SecurityDescriptor = SecurityDescriptor
    winstuff.filetime_now = lambda: 133_000_000_000_000_000
    for name, module in (("winfspy", root), ("winfspy.plumbing", plumbing), ("winfspy.plumbing.winstuff", winstuff)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "winfsp_bridge.adapter", raising=False)
