"""``vmlfs versions`` and the mount's ``versions/`` view, through the real CLI, a real mount and real tools."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.conftest import Vmlfs
from tests.fs.conftest import needs_fuse, serving_pid


def history(vmlfs: Vmlfs, tmp_path: Path) -> tuple[Path, list[str]]:
    """Five backups of fit.C: v1, v2, v2 again (no change), v1 again (content seen before), then removed;
    a symlink that changes target once; a directory that appears in the third."""
    home = tmp_path / "home"
    (home / "analysis").mkdir(parents=True)
    fit = home / "analysis" / "fit.C"
    link = home / "latest.root"
    vmlfs.run("entry", "add", "e", "--guest", str(home))
    steps = [("void fit() {}\n", "a.root"), ("void fit() { return; }\n", "a.root"), (None, "b.root"),
             ("void fit() {}\n", "b.root"), ("gone", "b.root")]
    for step, (text, target) in enumerate(steps):
        if text == "gone":
            fit.unlink()
        elif text is not None:
            fit.write_text(text)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)
        if step == 2:
            (home / "plots").mkdir()
            (home / "plots" / "h1.png").write_bytes(b"png")
        vmlfs.run("-q", "backup", "e")
    return home, vmlfs.backups("e")


def test_versions_lists_each_distinct_content_once(vmlfs: Vmlfs, tmp_path: Path) -> None:
    _, stamps = history(vmlfs, tmp_path)
    lines = vmlfs.run("versions", "e", "analysis/fit.C").stdout.decode().splitlines()
    assert [line.split()[0] for line in lines] == [stamps[0], stamps[1]]
    assert lines[0].split()[1] == str(len("void fit() {}\n"))
    links = vmlfs.run("versions", "e", "latest.root").stdout.decode().splitlines()
    assert [(line.split()[0], line.split("l -> ")[1]) for line in links] == [(stamps[0], "a.root"), (stamps[2], "b.root")]
    missing = vmlfs.run("versions", "e", "no/such/file", check=False)
    assert missing.returncode != 0 and b"in no backup of e" in missing.stderr and b"Traceback" not in missing.stderr
    bad = vmlfs.run("versions", "e", "../etc/passwd", check=False)
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr


def _open_trees(pid: int, store: Path) -> int:
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if "/trees/" in os.readlink(fd) or os.readlink(fd).endswith(".sqlite"))


@needs_fuse
def test_the_versions_view_serves_each_version_as_the_backups_own_file(vmlfs: Vmlfs, tmp_path: Path, mount_factory) -> None:
    _, stamps = history(vmlfs, tmp_path)
    mount = mount_factory(vmlfs.store)
    entry = mount.entry("e")
    pid = serving_pid(mount.path)
    assert "versions" in os.listdir(entry)
    deadline = time.monotonic() + 10
    while not _open_trees(pid, vmlfs.store) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    warmed = _open_trees(pid, vmlfs.store)
    assert 0 < warmed <= 2, "only the newest backup's tree (and its checkpoint) is opened before a first read needs it"

    view = entry / "versions"
    assert sorted(os.listdir(view)) == ["analysis", "latest.root", "plots"]
    assert _open_trees(pid, vmlfs.store) > warmed, "the listing asked the other backups' trees"
    assert sorted(os.listdir(view / "analysis")) == ["fit.C"]  # gone from the newest backup, still here
    fit = view / "analysis" / "fit.C"
    assert sorted(os.listdir(fit)) == [f"fit@{stamps[0]}.C", f"fit@{stamps[1]}.C"]
    assert (fit / f"fit@{stamps[1]}.C").read_text() == "void fit() { return; }\n"
    original = entry / stamps[0] / "home" / "analysis" / "fit.C"
    assert os.stat(fit / f"fit@{stamps[0]}.C").st_ino == os.stat(original).st_ino
    assert sorted(os.listdir(view / "latest.root")) == [f"latest@{stamps[0]}.root", f"latest@{stamps[2]}.root"]
    assert os.readlink(view / "latest.root" / f"latest@{stamps[2]}.root") == "b.root"
    assert os.listdir(view / "plots") == ["h1.png"] and os.listdir(view / "plots" / "h1.png") == [f"h1@{stamps[2]}.png"]

    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(fit), str(copy)], check=True)
    assert sorted(os.listdir(copy)) == sorted(os.listdir(fit))
    assert os.stat(copy / f"fit@{stamps[0]}.C").st_mtime_ns == os.stat(original).st_mtime_ns
    found = subprocess.run(["find", str(view), "-type", "f", "-name", "*.C"], capture_output=True, text=True, check=True).stdout
    assert sorted(found.split()) == sorted(str(fit / n) for n in os.listdir(fit))
    for absent in ("no-such", f"fit@{stamps[2]}.C", ".Trash"):
        assert not (fit / absent).exists()
