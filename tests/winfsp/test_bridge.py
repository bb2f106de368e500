"""The WinFsp translation layer against the real tree model of a real store (no winfspy needed)."""

from __future__ import annotations

import os

import pytest

from tests.fs.conftest import make_store
from vmlfs.app.session import Session
from vmlfs.fs.control import Jobs
from vmlfs.fs.state import MountState
from vmlfs.fs.winnames import from_windows
from winfsp_bridge import ntstatus as nt
from winfsp_bridge.bridge import (
    FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_HIDDEN,
    FILE_ATTRIBUTE_NOT_CONTENT_INDEXED,
    FILE_ATTRIBUTE_READONLY,
    FILE_DIRECTORY_FILE,
    FILE_NON_DIRECTORY_FILE,
    Bridge,
    filetime,
)

GENERIC_READ, GENERIC_WRITE, FILE_WRITE_DATA, DELETE = 0x80000000, 0x40000000, 0x2, 0x10000
BIG = 2500


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("winfsp")
    s = make_store(root)
    (s.home / "Makefile").write_text("upper\n")
    (s.home / "makefile").write_text("lower\n")
    (s.home / "a:b?.txt").write_text("odd\n")
    (s.home / "CON").write_text("device\n")
    many = s.home / "many"
    many.mkdir()
    for i in range(BIG):
        (many / f"f{i:04d}.txt").write_text(str(i))
    ts = s.backup()
    state = MountState(s.store(), Jobs(Session(str(s.store_path))))
    yield s, ts, Bridge(state)
    state.close()


def status(fn, *args) -> int:
    with pytest.raises(nt.NtStatus) as info:
        fn(*args)
    return info.value.status


def test_volume_and_security_by_name(world):
    s, ts, b = world
    assert b.get_volume_info() == {"total_size": 0, "free_size": 0, "volume_label": "vmlfs"}
    home = f"\\entries\\e1\\{ts}\\home"
    attributes, sd = b.get_security_by_name(home + "\\secret")
    assert attributes == FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_NOT_CONTENT_INDEXED
    uid, gid = os.getuid(), os.getgid()
    assert sd == f"O:S-1-22-1-{uid}G:S-1-22-2-{gid}D:P(A;;0x120089;;;S-1-22-1-{uid})(A;;0x120089;;;IU)"  # 0600
    _, run = b.get_security_by_name(home + "\\run.sh")  # 0751: rwx r-x --x
    assert run.endswith("(A;;0x1200a9;;;S-1-22-1-%d)(A;;0x1200a9;;;S-1-22-2-%d)(A;;0x1200a0;;;WD)(A;;0x1200a9;;;IU)"
                        % (uid, gid))
    assert b.get_security_by_name(home)[0] == FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_NOT_CONTENT_INDEXED
    assert b.get_security_by_name(home + "\\.bashrc")[0] & FILE_ATTRIBUTE_HIDDEN
    assert status(b.get_security_by_name, home + "\\nope") == nt.STATUS_OBJECT_NAME_NOT_FOUND
    assert status(b.get_security_by_name, home + "\\secret\\below") == nt.STATUS_OBJECT_PATH_NOT_FOUND


def test_open_file_info_and_times(world):
    s, ts, b = world
    leaf = b.open(f"\\entries\\e1\\{ts}\\home\\src\\deep\\er\\leaf.txt", FILE_NON_DIRECTORY_FILE, GENERIC_READ)
    info = b.get_file_info(leaf)
    assert info["file_size"] == 5 and info["allocation_size"] == 4096
    assert info["last_write_time"] == 116444736000000000 + 16_000_000_001_234_567 == filetime(1_600_000_000_123_456_789)
    assert info["index_number"] == leaf.attrs.ino
    b.close(leaf)
    assert status(b.open, f"\\entries\\e1\\{ts}\\home", FILE_NON_DIRECTORY_FILE, GENERIC_READ) == nt.STATUS_FILE_IS_A_DIRECTORY
    assert status(b.open, f"\\entries\\e1\\{ts}\\home\\secret", FILE_DIRECTORY_FILE, GENERIC_READ) == nt.STATUS_NOT_A_DIRECTORY


def test_reads_across_frames_and_end_of_file(world):
    s, ts, b = world
    want = (s.home / "data" / "big.bin").read_bytes()
    ctx = b.open(f"\\entries\\e1\\{ts}\\home\\data\\big.bin", 0, GENERIC_READ)
    assert b.read(ctx, (1 << 20) - 100, 200) == want[(1 << 20) - 100:(1 << 20) + 100]
    got, offset = bytearray(), 0
    while offset < len(want):
        chunk = b.read(ctx, offset, 65536)
        got += chunk
        offset += len(chunk)
    assert bytes(got) == want
    assert b.read(ctx, len(want) - 3, 100) == want[-3:]
    assert status(b.read, ctx, len(want), 10) == nt.STATUS_END_OF_FILE


def test_status_file_size_and_content_agree(world):
    _, _, b = world
    ctx = b.open("\\entries\\e1\\control\\status", 0, GENERIC_READ)
    data = b.read(ctx, 0, 1 << 16)
    assert b"running: none" in data and b.get_file_info(ctx)["file_size"] == len(data)


def test_case_rule_and_name_mapping_both_ways(world):
    s, ts, b = world
    home = f"\\entries\\e1\\{ts}\\home"
    listed = [e["file_name"] for e in b.read_directory(b.open(home, FILE_DIRECTORY_FILE, GENERIC_READ), None)]
    assert listed[:2] == [".", ".."]
    names = listed[2:]
    assert "Makefile" in names and "makefile~2" in names and "makefile" not in names
    assert "a\uf03ab\uf03f.txt" in names and "\uf043ON" in names and "raw-\uf0ff-name" in names
    assert "link-to-main" not in names and "dangling" not in names, "symlinks out of their directory are absent"
    assert len({n.casefold() for n in names}) == len(names), "unique without case"
    assert names == sorted(names, key=lambda n: (n.casefold(), n))
    guest = {os.fsencode(n) for n in os.listdir(os.fsencode(s.home))} - {b"link-to-main", b"dangling"}
    assert {from_windows(n) for n in names if n != "makefile~2"} | {b"makefile"} == guest
    read = lambda name: b.read(b.open(f"{home}\\{name}", 0, GENERIC_READ), 0, 100)  # noqa: E731
    assert read("MAKEFILE") == read("makefile") == b"upper\n" and read("makefile~2") == b"lower\n"
    assert read("A\uf03aB\uf03f.TXT") == b"odd\n" and read("\uf043on") == b"device\n"
    ctx = b.open(home, FILE_DIRECTORY_FILE, GENERIC_READ)
    assert b.get_dir_info_by_name(ctx, "mAkEfIlE")["file_name"] == "Makefile"


def test_large_directory_in_pages_with_markers_and_patterns(world):
    _, ts, b = world
    ctx = b.open(f"\\entries\\e1\\{ts}\\home\\many", FILE_DIRECTORY_FILE, GENERIC_READ)
    seen, marker = [], None
    while True:
        page = b.read_directory(ctx, marker)[:100]  # WinFsp takes what fits and asks again after the last one
        if not page:
            break
        seen += [e["file_name"] for e in page]
        marker = page[-1]["file_name"]
    assert seen == [".", ".."] + [f"f{i:04d}.txt" for i in range(BIG)]
    assert [e["file_name"] for e in b.read_directory(ctx, None, "F24?9.TXT")] == [f"f24{i}9.txt" for i in range(10)]
    assert len(b.read_directory(ctx, "f2400.txt", "*.txt")) == BIG - 2401
    root = b.open("\\", FILE_DIRECTORY_FILE, GENERIC_READ)
    assert [e["file_name"] for e in b.read_directory(root, None)] == ["control", "entries"], "no dot entries at the root"


def test_every_change_is_write_protected(world):
    _, ts, b = world
    path = f"\\entries\\e1\\{ts}\\home\\secret"
    for access in (GENERIC_WRITE, FILE_WRITE_DATA, DELETE):
        assert status(b.open, path, 0, access) == nt.STATUS_MEDIA_WRITE_PROTECTED
    assert status(b.open, path, 0x1000, GENERIC_READ) == nt.STATUS_MEDIA_WRITE_PROTECTED  # delete on close
    ctx = b.open(path, 0, GENERIC_READ)
    for op in (b.create, b.overwrite, b.write, b.set_basic_info, b.set_file_size, b.can_delete, b.rename,
               b.set_security, b.set_delete, b.set_volume_label):
        assert status(op, ctx, 0) == nt.STATUS_MEDIA_WRITE_PROTECTED
    assert status(b.cleanup, ctx, path, 0x1) == nt.STATUS_MEDIA_WRITE_PROTECTED
    b.cleanup(ctx, path, 0)
    assert status(b.open, "\\control\\snapshot", 0, GENERIC_WRITE) == nt.STATUS_MEDIA_WRITE_PROTECTED
