"""Extended attributes, ACLs and capabilities through the SSH agent: it scans them as the local guest
does and sets them in a restore into the guest as the local restore does (through a real sshd, and
through the local runner that runs the same agent text, here also as a user who is not root)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.backends.conftest import Sshd
from tests.backends.fake_runner import LocalProcess, RecordingRunner
from tests.conftest import Vmlfs
from tests.xattr_guest import described, needs_root, needs_tools, run
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.backends.ssh_guest import SshGuest
from vmlfs.backends.ssh_restore import restore_to_guest
from vmlfs.engine.backup import run_backup
from vmlfs.engine.guest import ScanReport
from vmlfs.engine.model import EntryConfig
from vmlfs.engine.rules import Rules


class AsNobody(RecordingRunner):
    """The agent as a guest user who is not root: capabilities are refused, the rest is taken."""

    def start(self, argv: Sequence[str]) -> LocalProcess:
        return super().start(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv])


@needs_tools
@needs_root
def test_the_agent_scans_what_the_local_guest_scans(xattr_home: Path) -> None:
    local = list(LocalGuest(xattr_home).scan(Rules(), ScanReport()))
    remote = list(SshGuest(RecordingRunner(), str(xattr_home)).scan(Rules(), ScanReport()))
    assert remote == local
    assert sum(e.xattrs is not None for e in remote) == 4  # notes.txt, data, data/inside (default ACL), ping-tool


@needs_tools
@needs_root
def test_an_agent_that_cannot_set_capabilities_says_so_once_and_restores_the_rest(xattr_home: Path, tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run the agent as another user")
    shutil.copy(xattr_home / "ping-tool", xattr_home / "data" / "second-tool")
    run("setcap", "cap_net_raw+ep", xattr_home / "data" / "second-tool")
    store = LocalStore(tmp_path / "s")
    store.add_entry(EntryConfig("e", str(xattr_home)))
    ts = run_backup(store, EntryConfig("e", str(xattr_home)), LocalGuest(xattr_home)).timestamp
    shared = Path(tempfile.mkdtemp(prefix="vmlfs-xattr-"))
    try:
        os.chown(shared, 65534, 65534)
        os.chmod(shared, 0o755)
        report = restore_to_guest(store.open_manifest("e", ts), lambda layer: store.open_layer("e", layer), AsNobody(),
                                  str(shared / "r"))
        assert report.warnings == ["the target does not take file capabilities (Operation not permitted):"
                                   " they are not restored"], report.warnings
        assert report.files == 4 and not report.damaged
        assert os.getxattr(shared / "r" / "notes.txt", "user.origin") == b"atlas-run-3"
        assert "user:1234:rw-" in run("getfacl", "-n", shared / "r" / "notes.txt")
        assert "default:user:1234:rwx" in run("getfacl", "-n", shared / "r" / "data")
        assert run("getcap", shared / "r" / "ping-tool") == ""
    finally:
        shutil.rmtree(shared)


@pytest.mark.sshd
@needs_tools
@needs_root
def test_ssh_backup_and_restore_keep_xattrs_acls_and_capabilities(vmlfs: Vmlfs, sshd: Sshd, xattr_home: Path, tmp_path: Path) -> None:
    vmlfs.env = sshd.env(vmlfs.env)
    vmlfs.run("entry", "add", "e", "--guest", sshd.url(str(xattr_home)))
    vmlfs.run("backup", "e")
    local = tmp_path / "here"
    vmlfs.run("restore", "e", str(local))
    assert described(local) == described(xattr_home)
    remote = tmp_path / "there"
    vmlfs.run("restore", "e", sshd.url(str(remote)))
    assert described(remote) == described(xattr_home)
    assert "trusted.overlay" not in os.listxattr(remote / "ping-tool")
