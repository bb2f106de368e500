"""Reading a real mount with ordinary programs: ls, stat, find, du, cat, dd, cp -a, diff -r, tar.

One store holds full -> incremental -> differential backups of a changing
guest (with deletions); a ``cp -a`` copy of the guest taken right after each
backup is what that backup's ``home`` must show, content and metadata.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.fs.conftest import FUSE_MISSING, Mount, make_store

pytestmark = [pytest.mark.fuse, pytest.mark.skipif(FUSE_MISSING, reason="needs /dev/fuse and fusermount3")]


def tree(root: Path) -> dict[str, tuple]:
    """Every path below ``root`` with what a backup keeps (directories: no size or link count)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            kind = stat.S_IFMT(st.st_mode)
            extra = (st.st_size, st.st_nlink) if not stat.S_ISDIR(st.st_mode) else ()
            target = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, target, *extra)
    return out


def mounted(listing: dict[str, tuple]) -> dict[str, tuple]:
    """A guest's listing as the mount shows it: directories without write bits (vmlfs/fs/archive.py)."""
    return {rel: (kind, mode & 0o7555 if stat.S_ISDIR(kind) else mode, *rest)
            for rel, (kind, mode, *rest) in listing.items()}


def hardlink_groups(root: Path) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if st.st_nlink > 1:
                groups.setdefault(st.st_ino, set()).add(os.path.relpath(p, root))
    return {frozenset(g) for g in groups.values()}


def run(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, check=True, **kw)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Three backups of a changing guest, their copies, and one mount of the store."""
    root = tmp_path_factory.mktemp("history")
    s = make_store(root)
    stamps, copies = [], {}
    ts = s.backup("full")
    stamps.append(ts)
    copies[ts] = s.snapshot_copy(ts)
    (s.home / "src" / "main.py").write_text("changed\n")
    os.unlink(s.home / "dangling")
    (s.home / "new-in-incr.txt").write_text("incremental\n")
    ts = s.backup("incremental")
    stamps.append(ts)
    copies[ts] = s.snapshot_copy(ts)
    os.unlink(s.home / "new-in-incr.txt")
    subprocess.run(["rm", "-rf", str(s.home / "src" / "deep")], check=True)
    (s.home / "diff-only.txt").write_text("differential\n")
    ts = s.backup("differential")
    stamps.append(ts)
    copies[ts] = s.snapshot_copy(ts)
    m = Mount(s.store_path, root / "mnt", root / "mount.log").start()
    yield m, stamps, copies
    m.stop()


def test_each_backup_shows_exactly_its_tree(history):
    m, stamps, copies = history
    assert sorted(os.listdir(m.entry())) == sorted(stamps + ["control", "latest", "versions"])
    assert os.readlink(m.entry() / "latest") == stamps[-1]
    for ts in stamps:
        home = m.entry() / ts / "home"
        assert tree(home) == mounted(tree(copies[ts])), ts
        assert hardlink_groups(home) == hardlink_groups(copies[ts])
        run("diff", "-r", "--no-dereference", str(copies[ts]), str(home))
    assert not (m.entry() / stamps[2] / "home" / "new-in-incr.txt").exists()
    assert (m.entry() / stamps[1] / "home" / "new-in-incr.txt").read_text() == "incremental\n"
    assert (m.entry() / stamps[0] / "home" / "src" / "main.py").read_text().startswith("print")


def test_ls_stat_find_du(history):
    m, stamps, copies = history
    home, copy = m.entry() / stamps[0] / "home", copies[stamps[0]]
    listing = run("ls", "-lan", "--time-style=full-iso", str(home)).stdout.decode(errors="surrogateescape").splitlines()
    expected = run("ls", "-lan", "--time-style=full-iso", str(copy)).stdout.decode(errors="surrogateescape").splitlines()
    strip = lambda lines: sorted(" ".join(l.split()[i] for i in (0, 2, 3, 5, 6, 7, 8)) for l in lines[1:] if not l.startswith("d") and " . " not in l)
    assert strip(listing) == strip(expected)
    fmt = "%n %F %a %u %g %s %h %Y %y"
    for name in ("src/deep/er/leaf.txt", "secret", "link-to-main", "data/hardlink-to-main", "shared.txt"):
        got = run("stat", "-c", fmt, name, cwd=home).stdout
        assert got == run("stat", "-c", fmt, name, cwd=copy).stdout
    a, b = os.lstat(home / "src" / "main.py"), os.lstat(home / "data" / "hardlink-to-main")
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert os.lstat(home / "src/deep/er/leaf.txt").st_mtime_ns == 1_600_000_000_123_456_789
    found = run("find", ".", cwd=home).stdout.split()
    assert sorted(found) == sorted(run("find", ".", cwd=copy).stdout.split())
    unique = {}
    for dirpath, _, files in os.walk(home):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if stat.S_ISREG(st.st_mode):
                unique[st.st_ino] = st.st_size
    du = int(run("du", "-s", "-B1", str(home)).stdout.split()[0])
    assert du == sum((size + 511) // 512 * 512 for size in unique.values())
    assert int(run("du", "-sb", str(home)).stdout.split()[0]) >= sum(unique.values())
    ts_dir = os.stat(m.entry() / stamps[0])
    info = (m.entry() / stamps[0] / "info.json").read_text()
    assert '"kind": "full"' in info and abs(ts_dir.st_mtime - os.stat(m.store_path / "entries/e1/backups" / f"{stamps[0]}.json").st_mtime) < 5
    assert (m.entry() / stamps[0] / "env.txt").stat().st_size > 0


def test_inode_numbers_are_stable(history):
    m, stamps, _ = history
    home = m.entry() / stamps[1] / "home"
    before = {p: os.lstat(os.path.join(home, p)).st_ino for p in ("src", "src/main.py", "data/big.bin", ".")}
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], capture_output=True)  # forget, if allowed
    after = {p: os.lstat(os.path.join(home, p)).st_ino for p in before}
    assert before == after
    assert len(set(before.values())) == len(before)


def test_cat_dd_cp_tar(history, tmp_path):
    m, stamps, copies = history
    home, copy = m.entry() / stamps[2] / "home", copies[stamps[2]]
    assert run("cat", str(home / "shared.txt")).stdout == b"everyone\n"
    skipped = run("dd", f"if={home / 'data' / 'big.bin'}", "bs=4096", "skip=300", "count=200", "status=none").stdout
    with open(copy / "data" / "big.bin", "rb") as f:
        f.seek(300 * 4096)
        assert skipped == f.read(200 * 4096)
    run("cp", "-a", str(home / "shared.txt"), str(tmp_path / "one"))
    st, orig = os.lstat(tmp_path / "one"), os.lstat(copy / "shared.txt")
    assert (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns) == (orig.st_mode, orig.st_uid, orig.st_gid, orig.st_mtime_ns)
    run("cp", "-a", str(home), str(tmp_path / "restored"))
    assert tree(tmp_path / "restored") == mounted(tree(copy))  # the directories as the mount showed them
    assert hardlink_groups(tmp_path / "restored") == hardlink_groups(copy)
    run("diff", "-r", "--no-dereference", str(copy), str(tmp_path / "restored"))
    members = run("tar", "-cf", "-", "-C", str(home), "src", "data").stdout
    listed = run("tar", "-tvf", "-", input=members).stdout.decode()
    assert "src/main.py" in listed and "data/hardlink-to-main link to" in listed


def test_writes_fail_with_erofs(history):
    m, stamps, _ = history
    home = m.entry() / stamps[0] / "home"
    attempts = [
        lambda: open(home / "new", "w"),
        lambda: open(home / "shared.txt", "a"),
        lambda: os.mkdir(home / "d"),
        lambda: os.unlink(home / "shared.txt"),
        lambda: os.rename(home / "shared.txt", home / "x"),
        lambda: os.chmod(home / "shared.txt", 0o777),
        lambda: os.truncate(home / "shared.txt", 0),
        lambda: os.symlink("x", home / "l"),
        lambda: os.link(home / "shared.txt", home / "l2"),
        lambda: os.rmdir(home / "src"),
        lambda: os.utime(home / "shared.txt"),
        lambda: os.mkdir(m.path / "entries" / "new-entry"),
        lambda: open(m.entry() / "control" / "new", "w"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS, attempt
    assert (home / "shared.txt").read_text() == "everyone\n"


def test_new_backup_appears_without_remount(history):
    m, stamps, _ = history
    before = set(os.listdir(m.entry()))
    done = m.vmlfs("backup", "e1", "--kind", "incremental")
    assert done.returncode == 0, done.stderr
    new = set(os.listdir(m.entry())) - before
    assert len(new) == 1
    assert os.readlink(m.entry() / "latest") == new.pop()


def test_df_shows_the_stores_file_system(history):
    """statfs answers with the size and free space of the file system holding the store, as df shows it."""
    m, _, _ = history
    mounted, store = os.statvfs(m.path), os.statvfs(m.store_path)
    assert mounted.f_blocks * mounted.f_frsize == store.f_blocks * store.f_frsize > 0
    assert abs(mounted.f_bavail * mounted.f_frsize - store.f_bavail * store.f_frsize) < 64 << 20  # others write too
    fields = run("df", "-P", str(m.path)).stdout.decode().splitlines()[1].split()
    assert fields[0] == "vmlfs" and int(fields[1]) > 0 and int(fields[3]) > 0
