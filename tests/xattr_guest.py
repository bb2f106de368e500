"""A guest home with extended attributes, ACLs and capabilities, and what the real tools (getfattr,
getfacl, getcap from the attr, acl and libcap2-bin packages) say of a tree: shared by the CLI, mount
and SSH tests of them (the ``xattr_home`` fixture is in tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

TOOLS = ("setfattr", "getfattr", "setfacl", "getfacl", "setcap", "getcap")
needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                 reason="needs the attr, acl and libcap2-bin packages")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="setting file capabilities needs root")


def run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


def supports_xattrs(where: Path) -> bool:
    probe = where / "probe"
    probe.write_text("")
    try:
        os.setxattr(probe, "user.probe", b"1")
        run("setfacl", "-m", "u:1234:r", probe)
    except (OSError, subprocess.CalledProcessError):
        return False
    finally:
        probe.unlink()
    return True


def build(home: Path) -> None:
    """A home with every kind vmlfs keeps: user.* (text, binary, large, on a directory),
    an access ACL, a default ACL, a capability; and a trusted.* one it does not keep."""
    (home / "data").mkdir(parents=True)
    (home / "notes.txt").write_text("fit results\n")
    run("setfattr", "-n", "user.origin", "-v", "atlas-run-3", home / "notes.txt")
    os.setxattr(home / "notes.txt", "user.binary", bytes(range(256)))
    os.setxattr(home / "data", "user.big", b"x" * 3000)  # ext4 holds one block of attributes
    run("setfacl", "-m", "u:1234:rw-,g:55:r--", home / "notes.txt")
    run("setfacl", "-d", "-m", "u:1234:rwx", home / "data")
    (home / "data" / "inside").write_text("inherits\n")
    shutil.copy("/bin/true", home / "ping-tool")
    run("setcap", "cap_net_raw+ep", home / "ping-tool")
    os.setxattr(home / "ping-tool", "trusted.overlay", b"host bookkeeping")


def described(root: Path) -> dict[str, tuple[str, str, str]]:
    """What the tools say of every path: (getfattr -d of user.*, getfacl, getcap)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        said = [run("getfattr", "-d", "-e", "hex", "-m", "^user\\.", path), run("getfacl", "-n", "-p", path),
                run("getcap", path).replace(str(path), "")]
        out[rel] = tuple("".join(x for x in s.splitlines(True) if not x.startswith("# file:")) for s in said)
    return out
