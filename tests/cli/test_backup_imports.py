"""What ``vmlfs backup`` of a local guest into a local store imports: only what that backup uses.

Every module a command imports is paid at every run; for a no-change backup of a small home the
imports are a fifth of the time. A backend or feature the backup does not use must stay unimported,
whichever module names it (they are imported where they are used)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import Vmlfs

CHECK = """
import sys
sys.argv = ["vmlfs", "-q", "backup", "e"]
try:
    from vmlfs.cli import main; main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in {{{names}}} or m in {{{modules}}})))
"""

#: Top-level packages a local backup never needs: other backends, the hypervisor, the mount, the web front ends.
UNUSED_PACKAGES = ("socket", "botocore", "boto3", "asyncssh", "libvirt", "pyfuse3", "trio", "wsgidav", "lxml", "http")
#: vmlfs modules of features this backup does not use: keep rules (the entry has none), gc, the hypervisor.
UNUSED_MODULES = ("vmlfs.engine.retention", "vmlfs.engine.gc", "vmlfs.app.prune", "vmlfs.hypervisor")


def test_a_local_backup_imports_no_other_backend_nor_unused_feature(vmlfs: Vmlfs, tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "a.txt").write_text("a\n")
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    vmlfs.run("backup", "e")  # the next one finds its base, as a no-change backup does
    check = CHECK.format(names=", ".join(repr(p) for p in UNUSED_PACKAGES),
                         modules=", ".join(repr(m) for m in UNUSED_MODULES))
    done = subprocess.run([sys.executable, "-c", check], env=vmlfs.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"imported by a local backup: {done.stdout.strip()}"
    assert len(vmlfs.backups("e")) == 2
