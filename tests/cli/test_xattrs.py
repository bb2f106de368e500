"""Extended attributes, POSIX ACLs and file capabilities through backup -> restore, GNU tar and bsdtar,
checked with the real tools (getfattr, getfacl, getcap from the attr, acl and libcap2-bin packages)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Vmlfs
from tests.xattr_guest import described, needs_root, needs_tools, run


@needs_tools
@needs_root
def test_backup_restore_keeps_xattrs_acls_and_capabilities(vmlfs: Vmlfs, xattr_home: Path, tmp_path: Path) -> None:
    before = described(xattr_home)
    assert "user.origin" in before["notes.txt"][0] and "user:1234:rw-" in before["notes.txt"][1]
    assert "default:user:1234:rwx" in before["data"][1] and "cap_net_raw=ep" in before["ping-tool"][2]
    vmlfs.run("entry", "add", "e", "--guest", str(xattr_home))
    vmlfs.run("backup", "e")
    target = tmp_path / "restored"
    vmlfs.run("restore", "e", str(target))
    assert described(target) == before
    assert "trusted.overlay" not in os.listxattr(target / "ping-tool")


@needs_tools
@needs_root
def test_an_attribute_change_alone_makes_a_new_backup_keep_it(vmlfs: Vmlfs, xattr_home: Path, tmp_path: Path) -> None:
    vmlfs.run("entry", "add", "e", "--guest", str(xattr_home))
    vmlfs.run("backup", "e")
    st = os.stat(xattr_home / "notes.txt")
    run("setfattr", "-n", "user.origin", "-v", "cms-run-2", xattr_home / "notes.txt")
    run("setfacl", "-m", "u:4321:r-x", xattr_home / "data")
    os.utime(xattr_home / "notes.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    vmlfs.run("backup", "e")
    first, second = vmlfs.backups("e")
    old, new = tmp_path / "old", tmp_path / "new"
    vmlfs.run("restore", f"e@{first}", str(old))
    vmlfs.run("restore", f"e@{second}", str(new))
    assert os.getxattr(old / "notes.txt", "user.origin") == b"atlas-run-3"
    assert os.getxattr(new / "notes.txt", "user.origin") == b"cms-run-2"
    assert "user:4321:r-x" in run("getfacl", "-n", new / "data") and "4321" not in run("getfacl", "-n", old / "data")
    assert described(new) == described(xattr_home)


@needs_tools
@needs_root
def test_gnu_tar_and_bsdtar_restore_them_from_the_layer(vmlfs: Vmlfs, xattr_home: Path, tmp_path: Path) -> None:
    """The layer's pax records are GNU tar's own: --xattrs --acls restores user.* and ACLs, and
    capabilities with --xattrs-include (GNU tar extracts only user.* by default)."""
    vmlfs.run("entry", "add", "e", "--guest", str(xattr_home))
    vmlfs.run("backup", "e")
    out = tmp_path / "untarred"
    out.mkdir()
    run("tar", "--zstd", "--xattrs", "--xattrs-include=*", "--acls", "-xf", vmlfs.layer_file("e", vmlfs.backups("e")[0]),
        "-C", out)
    assert described(out) == described(xattr_home)
    if shutil.which("bsdtar") is not None:  # libarchive reads the same records, capabilities included
        out = tmp_path / "bsdtar"
        out.mkdir()
        run("bsdtar", "--acls", "--xattrs", "-xf", vmlfs.layer_file("e", vmlfs.backups("e")[0]), "-C", out)
        assert described(out) == described(xattr_home)


@needs_tools
@needs_root
def test_a_target_that_refuses_a_kind_warns_once_and_restores_the_rest(vmlfs: Vmlfs, xattr_home: Path, tmp_path: Path) -> None:
    """Restored by a user who is not root, capabilities are refused (EPERM): one warning line, and
    the files, their user.* attributes and their ACLs are all restored."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to restore as another user")
    shutil.copy(xattr_home / "ping-tool", xattr_home / "data" / "second-tool")
    run("setcap", "cap_net_raw+ep", xattr_home / "data" / "second-tool")
    vmlfs.run("entry", "add", "e", "--guest", str(xattr_home))
    vmlfs.run("backup", "e")
    shared = Path(tempfile.mkdtemp(prefix="vmlfs-xattr-"))
    try:
        os.chmod(shared, 0o755)
        shutil.copytree(vmlfs.store, shared / "store")
        os.chown(shared, 65534, 65534)
        env = dict(vmlfs.env, VMLFS_STORE=str(shared / "store"), HOME=str(shared))
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                               "vmlfs", "restore", "e", str(shared / "r")], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("file capabilities") == 1, repr(done.stderr)
        assert "POSIX ACLs" not in done.stderr and "user.*" not in done.stderr
        assert (shared / "r" / "data" / "second-tool").read_bytes() == (xattr_home / "ping-tool").read_bytes()
        assert os.getxattr(shared / "r" / "notes.txt", "user.origin") == b"atlas-run-3"
        assert "user:1234:rw-" in run("getfacl", "-n", shared / "r" / "notes.txt")
        assert run("getcap", shared / "r" / "ping-tool") == ""
    finally:
        shutil.rmtree(shared)


def test_a_tree_from_before_attributes_is_read_and_based_on(vmlfs: Vmlfs, tmp_path: Path) -> None:
    """A 2.0 tree (no xattrs column) stays readable; the next backup over it stores a whole tree."""
    home = tmp_path / "plain"
    (home / "sub").mkdir(parents=True)
    (home / "sub" / "f").write_text("one\n")
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("backup", "e")
    ts = vmlfs.backups("e")[0]
    tree = vmlfs.tree_file("e", ts)
    db = sqlite3.connect(tree)
    db.execute("ALTER TABLE nodes DROP COLUMN xattrs")
    db.execute("UPDATE format SET value = '2.0' WHERE key = 'version'")
    db.commit()
    db.execute("VACUUM")
    db.close()
    vmlfs.reseal_tree("e", ts)
    assert "f" in vmlfs.run("ls", f"e@{ts}", "sub").stdout.decode()
    (home / "sub" / "g").write_text("two\n")
    vmlfs.run("backup", "e")
    second = vmlfs.backups("e")[1]
    assert vmlfs.record("e", second)["manifest"]["base"] is None
    vmlfs.run("restore", f"e@{second}", str(tmp_path / "r"))
    assert (tmp_path / "r" / "sub" / "g").read_text() == "two\n"
    vmlfs.run("verify")
