"""A GIO client (what Nautilus, Thunar and pcmanfm use) on a real mount, as the guest user would browse it.

GIO offers Delete, Trash, Rename (and a file manager Cut) where ``access::can-delete``,
``can-trash`` and ``can-rename`` say TRUE; inside a backup they must say FALSE, while a
file's own reading works and ``gio list`` shows the guest's files with their sizes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.fs.conftest import Mount, make_store, needs_fuse

NOBODY = 65534


def gio(*args: str) -> str:
    """``gio`` as an unprivileged user (root may write anything, so it would ask nothing of the mount)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIO_USE_VFS": "local", "LC_ALL": "C"}
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "gio", *args],
                          capture_output=True, text=True, check=True, env=env).stdout


def attributes(text: str) -> dict[str, str]:
    return dict(line.strip().split(": ", 1) for line in text.splitlines() if line.startswith("  ") and ": " in line)


@pytest.fixture
def public_mount(tmp_path):
    """A mount point the browsing user can reach (pytest's own directories are root's, mode 0700)."""
    base = Path(tempfile.mkdtemp(prefix="vmlfs-gio-"))
    base.chmod(0o755)
    mounts = []

    def start(store_path: Path) -> Mount:
        mounts.append(Mount(store_path, base / "mnt", tmp_path / "mount.log").start("-o", "allow_other"))
        return mounts[-1]

    yield start
    for m in mounts:
        m.stop()
    shutil.rmtree(base, ignore_errors=True)


@needs_fuse
def test_gio_sees_a_read_only_archive_it_may_read(tmp_path, public_mount) -> None:
    if os.geteuid() != 0:
        pytest.skip("the guest's files must belong to the browsing user")
    s = make_store(tmp_path, big_mib=1)
    subprocess.run(["chown", "-hR", f"{NOBODY}:{NOBODY}", str(s.home)], check=True)
    ts = s.backup()
    m = public_mount(s.store_path)
    home = m.entry() / ts / "home"
    for path in (home / "src" / "main.py", home / "src"):
        access = attributes(gio("info", "-a", "access::*", str(path)))
        assert {k: access[k] for k in ("access::can-delete", "access::can-trash", "access::can-rename")} == \
            dict.fromkeys(("access::can-delete", "access::can-trash", "access::can-rename"), "FALSE"), path
        assert access["access::can-read"] == "TRUE"
    info = attributes(gio("info", "-a", "standard::size,standard::type", str(home / "src" / "main.py")))
    assert info["standard::size"] == str(os.path.getsize(s.home / "src" / "main.py"))
    listed = {line.split("\t")[0]: line.split("\t")[1:] for line in gio("list", "-l", str(home / "src")).splitlines()}
    assert set(listed) == set(os.listdir(s.home / "src"))
    assert listed["main.py"][0] == str(os.path.getsize(s.home / "src" / "main.py"))
    assert gio("cat", str(home / "src" / "main.py")) == (s.home / "src" / "main.py").read_text()
