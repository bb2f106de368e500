"""Extended attributes, ACLs and capabilities through a real mount: getfattr, getfacl, getcap and
``cp -a`` out of it see what the guest had; a missing attribute is ENODATA; virtual nodes have none."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.fs.conftest import StoreSetup, needs_fuse
from tests.xattr_guest import described, needs_root, needs_tools
from vmlfs.backends.local_store import LocalStore
from vmlfs.engine.model import EntryConfig


@needs_fuse
@needs_tools
@needs_root
def test_the_mount_serves_xattrs_acls_and_capabilities(tmp_path: Path, xattr_home: Path, mount_factory) -> None:
    home = xattr_home
    LocalStore(tmp_path / "store").add_entry(EntryConfig("e1", str(home)))
    ts = StoreSetup(tmp_path, tmp_path / "store", home).backup()
    mount = mount_factory(tmp_path / "store")
    served = mount.entry() / ts / "home"

    seen, had = described(served), described(home)
    assert seen["data"][0] == had["data"][0] and "default:user:1234:rwx" in seen["data"][1]  # directories lose w bits
    assert {k: v for k, v in seen.items() if k != "data"} == {k: v for k, v in had.items() if k != "data"}
    assert os.getxattr(served / "notes.txt", "user.binary") == bytes(range(256))
    assert "trusted.overlay" not in os.listxattr(served / "ping-tool")
    for path, name in [(served / "notes.txt", "user.absent"), (served / "notes.txt", "security.selinux"),
                       (mount.entry() / ts / "info.json", "user.origin"), (mount.entry(), "system.posix_acl_access")]:
        with pytest.raises(OSError) as raised:
            os.getxattr(path, name)
        assert raised.value.errno == errno.ENODATA, (path, name, raised.value)
    assert os.listxattr(mount.entry() / ts / "info.json") == []

    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(served), str(copy)], check=True)
    copied, original = described(copy), described(home)
    for rel in ("notes.txt", "data/inside"):
        assert copied[rel][:2] == original[rel][:2], rel  # user.* and ACLs; cp -a does not copy capabilities
    with pytest.raises(OSError) as raised:
        os.setxattr(served / "notes.txt", "user.new", b"x")
    assert raised.value.errno == errno.EROFS
