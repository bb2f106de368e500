"""Extended attributes, ACLs and capabilities through a real sshd: the agent scans them for a backup
and sets them in a restore into the guest, as the local guest and restore do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.backends.conftest import Sshd
from tests.cli.test_xattrs import (
    build,
    described,
    needs_root,
    needs_tools,
    supports_xattrs,
)
from tests.conftest import Vmlfs

pytestmark = pytest.mark.sshd


@needs_tools
@needs_root
def test_ssh_backup_and_restore_keep_xattrs_acls_and_capabilities(vmlfs: Vmlfs, sshd: Sshd, tmp_path: Path) -> None:
    if not supports_xattrs(tmp_path):
        pytest.skip(f"{tmp_path} takes no user xattrs or ACLs")
    vmlfs.env = sshd.env(vmlfs.env)
    home = tmp_path / "guest"
    build(home)
    vmlfs.run("entry", "add", "e", "--guest", sshd.url(str(home)))
    vmlfs.run("backup", "e")
    local = tmp_path / "here"
    vmlfs.run("restore", "e", str(local))
    assert described(local) == described(home)
    remote = tmp_path / "there"
    vmlfs.run("restore", "e", sshd.url(str(remote)))
    assert described(remote) == described(home)
    assert "trusted.overlay" not in os.listxattr(remote / "ping-tool")
