"""The exception hierarchy says what happened: a refused write is not a full disk, a newer format is not damage."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vmlfs.errors import (
    ConnectionFailed,
    CorruptData,
    GuestError,
    PermissionDenied,
    ReadOnly,
    StorageFull,
    UnsupportedVersion,
    write_failed,
)


@pytest.mark.parametrize(("code", "kind", "exit_code"), [
    (errno.ENOSPC, StorageFull, 13), (errno.EIO, StorageFull, 13), (errno.EDQUOT, StorageFull, 13),
    (errno.EACCES, PermissionDenied, 6), (errno.EPERM, PermissionDenied, 6), (errno.EROFS, ReadOnly, 6),
])
def test_write_failures_are_told_apart(code: int, kind: type, exit_code: int) -> None:
    error = write_failed(OSError(code, os.strerror(code)), "cannot write x")
    assert type(error) is kind and error.exit_code == exit_code
    assert error.message == f"cannot write x: {os.strerror(code)}"


def test_connection_and_version_errors_stand_apart() -> None:
    assert not issubclass(ConnectionFailed, GuestError), "a store or libvirtd connection is not the guest"
    assert not issubclass(UnsupportedVersion, CorruptData), "a newer format is not damage"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_store_the_user_may_not_write_is_exit_6_not_a_full_disk() -> None:
    parent = Path(tempfile.mkdtemp(prefix="vmlfs-ro-"))
    try:
        parent.chmod(0o755)  # root's, readable by everyone, writable by root only
        done = subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable, "-m", "vmlfs",
             "--store", str(parent / "store"), "entry", "add", "e", "--guest", "/tmp"],
            capture_output=True, text=True, env=dict(os.environ, HOME="/tmp"), timeout=60)
        assert done.returncode == 6, done.stderr
        assert "Permission denied" in done.stderr and "No space" not in done.stderr
    finally:
        shutil.rmtree(parent)
