"""Extended attributes, ACLs and capabilities through a real mount: getfattr, getfacl, getcap and
``cp -a`` out of it see what the guest had; a missing attribute is ENODATA; virtual nodes have none."""

from __future__ import annotations

import errno
import json
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


def _plain_home(tmp_path: Path) -> Path:
    home = tmp_path / "plain"
    (home / "d").mkdir(parents=True)
    (home / "d" / "f").write_text("no attributes\n")
    return home


@needs_fuse
def test_a_store_without_attributes_answers_like_a_file_system_without_them(tmp_path: Path, mount_factory) -> None:
    """ENOSYS from the first getxattr: the kernel answers ENOTSUP itself from then on (no round trip per
    ``ls -l``); ``cp -a`` out of the mount still works. A backup with attributes taken later is logged."""
    home = _plain_home(tmp_path)
    LocalStore(tmp_path / "store").add_entry(EntryConfig("e1", str(home)))
    setup = StoreSetup(tmp_path, tmp_path / "store", home)
    ts = setup.backup()
    assert setup.store().meta("e1", ts).stats["xattr_files"] == 0
    mount = mount_factory(tmp_path / "store")
    served = mount.entry() / ts / "home" / "d" / "f"
    for ask in (lambda: os.getxattr(served, "user.a"), lambda: os.listxattr(served), lambda: os.getxattr(mount.entry(), "user.a")):
        with pytest.raises(OSError) as raised:
            ask()
        assert raised.value.errno == errno.EOPNOTSUPP
    subprocess.run(["cp", "-a", str(served.parent), str(tmp_path / "copy")], check=True)
    assert (tmp_path / "copy" / "f").read_text() == "no attributes\n"

    if not _takes_user_xattrs(home):
        return
    os.setxattr(home / "d" / "f", "user.late", b"1")
    later = setup.backup()
    assert setup.store().meta("e1", later).stats["xattr_files"] == 1
    assert (mount.entry() / later / "home" / "d" / "f").read_text() == "no attributes\n"
    with pytest.raises(OSError):
        os.getxattr(mount.entry() / later / "home" / "d" / "f", "user.late")
    assert f"backup e1@{later} kept extended attributes" in mount.log.read_text()


@needs_fuse
def test_a_record_that_does_not_say_counts_as_having_attributes(tmp_path: Path, mount_factory) -> None:
    """A record written before ``xattr_files`` existed: the mount serves attributes (ENODATA for a missing one)."""
    home = _plain_home(tmp_path)
    LocalStore(tmp_path / "store").add_entry(EntryConfig("e1", str(home)))
    setup = StoreSetup(tmp_path, tmp_path / "store", home)
    ts = setup.backup()
    record = tmp_path / "store" / "entries" / "e1" / "backups" / f"{ts}.json"
    doc = json.loads(record.read_text())
    del doc["stats"]["xattr_files"]
    record.write_text(json.dumps(doc))
    mount = mount_factory(tmp_path / "store")
    with pytest.raises(OSError) as raised:
        os.getxattr(mount.entry() / ts / "home" / "d" / "f", "user.a")
    assert raised.value.errno == errno.ENODATA
    assert os.listxattr(mount.entry() / ts / "home" / "d" / "f") == []


def _takes_user_xattrs(where: Path) -> bool:
    try:
        os.setxattr(where, "user.probe", b"1")
        os.removexattr(where, "user.probe")
    except OSError:
        return False
    return True
