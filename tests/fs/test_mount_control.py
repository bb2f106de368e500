"""control/ through a real mount, faults (damaged layer, vanished store), permissions, mount errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.fs.conftest import FUSE_MISSING, VMLFS, Mount, make_store, serving_pid
from tests.fs.test_mount_read import mounted, tree

pytestmark = [pytest.mark.fuse, pytest.mark.skipif(FUSE_MISSING, reason="needs /dev/fuse and fusermount3")]


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def sh(cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, **kw)


def test_snapshot_busy_einval_status_and_latency(tmp_path, mount_factory):
    s = make_store(tmp_path, big_mib=160)  # a backup long enough to overlap with the requests below
    s.backup()
    with open(s.home / "data" / "big.bin", "r+b") as f:  # new content: the next backup must pack it all
        for _ in range(160):
            f.write(os.urandom(1 << 20))
    m = mount_factory(s.store_path)
    control = m.entry() / "control"
    first = sh(f"touch {control}/snapshot")
    assert first.returncode == 0, first.stderr
    second = sh(f"touch {m.path}/control/snapshot")
    assert second.returncode != 0 and "busy" in second.stderr.lower()
    worst, probes = 0.0, 0
    while "running: none" not in (control / "status").read_text():
        t0 = time.monotonic()
        os.stat(m.entry() / "latest")
        os.listdir(m.entry())
        os.listdir(m.entry() / "latest" / "home" / "src")
        worst, probes = max(worst, time.monotonic() - t0), probes + 1
        time.sleep(0.01)
    print(f"worst stat+ls latency during a control/ backup: {worst * 1000:.1f} ms over {probes} probes")
    assert worst < 2.0
    status = (control / "status").read_text()
    assert "last result:" in status and "incremental backup" in status and "Busy" in status
    stamps = sorted(p for p in os.listdir(m.entry()) if p[0].isdigit())
    assert len(stamps) == 2 and os.readlink(m.entry() / "latest") == stamps[-1]
    assert tree(m.entry() / stamps[-1] / "home") == mounted(tree(s.home))

    bogus = sh(f"echo bogus > {control}/snapshot")
    assert bogus.returncode != 0 and "Invalid argument" in bogus.stderr
    assert "refused control request 'bogus" in (control / "status").read_text()
    for evil in ("; rm -rf /", "$(id)", "../x", "full full"):
        with pytest.raises(OSError) as info, open(control / "snapshot", "w") as f:
            f.write(evil)
            f.flush()
        assert info.value.errno == errno.EINVAL
        assert "refused control request" in (control / "status").read_text()

    assert sh(f"echo differential > {control}/snapshot").returncode == 0
    wait_for(lambda: "Z differential backup" in (control / "status").read_text())  # the "last result" line
    info = json.loads((m.entry() / "latest" / "info.json").read_text())
    assert info["kind"] == "differential", ((control / "status").read_text(), os.listdir(m.entry()), info)
    assert "default entry: e1" in (m.path / "control" / "status").read_text()


def test_lock_held_by_another_process_gives_ebusy(tmp_path, mount_factory):
    s = make_store(tmp_path)
    s.backup()
    m = mount_factory(s.store_path)
    with s.store().lock("e1"):
        done = sh(f"touch {m.entry()}/control/snapshot")
    assert done.returncode != 0 and "busy" in done.stderr.lower()
    assert "locked by pid" in (m.entry() / "control" / "status").read_text()


def test_no_default_entry_is_refused(tmp_path, mount_factory):
    s = make_store(tmp_path)
    s.backup()
    s.store().add_entry(type(s.store().load_entry("e1"))("e2", str(s.home)))
    m = mount_factory(s.store_path)
    done = sh(f"touch {m.path}/control/snapshot")
    assert done.returncode != 0 and "Invalid argument" in done.stderr
    assert "no default entry" in (m.path / "control" / "status").read_text()


def test_second_uid_reads_by_permission_bits_but_cannot_write_control(tmp_path, mount_factory):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as a second uid")
    s = make_store(tmp_path)
    s.backup()
    public = Path(tempfile.mkdtemp(prefix="vmlfs-mnt-"))  # a mountpoint another uid can reach
    os.chmod(public, 0o755)
    m = Mount(s.store_path, public / "mnt", tmp_path / "mount.log")
    try:
        m.start("-o", "allow_other")
        check_second_uid(m)
    finally:
        m.stop()
        shutil.rmtree(public, ignore_errors=True)


def check_second_uid(m: Mount) -> None:
    home = m.entry() / "latest" / "home"
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    assert subprocess.run([*nobody, "cat", str(home / "shared.txt")], capture_output=True).stdout == b"everyone\n"
    denied = subprocess.run([*nobody, "cat", str(home / "secret")], capture_output=True, text=True)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    for cmd in (f"touch {m.entry()}/control/snapshot", f"echo full > {m.path}/control/snapshot"):
        done = subprocess.run([*nobody, "sh", "-c", cmd], capture_output=True, text=True)
        assert done.returncode != 0 and "Permission denied" in done.stderr
    assert "running: none" in (m.entry() / "control" / "status").read_text()


def test_damaged_layer_fails_one_file_with_eio(tmp_path, mount_factory):
    s = make_store(tmp_path, big_mib=4)
    ts = s.backup()
    digest = s.store().meta("e1", ts).layer["sha256"]
    layer = s.store().object_file("layers", digest)
    with s.store().open_layer("e1", digest) as reader:
        start, end = reader.table.c_offsets[2], reader.table.c_offsets[3]  # a frame in the middle of big.bin
    with open(layer, "r+b") as f:
        f.seek((start + end) // 2)
        f.write(b"\xde\xad\xbe\xef" * 64)
    m = mount_factory(s.store_path)
    home = m.entry() / "latest" / "home"
    with pytest.raises(OSError) as info:
        (home / "data" / "big.bin").read_bytes()
    assert info.value.errno == errno.EIO
    assert (home / "shared.txt").read_text() == "everyone\n"
    assert (home / "src" / "main.py").read_text().startswith("print")
    log = m.log.read_text()
    assert "home/data/big.bin" in log and f"e1@{ts}" in log
    assert os.path.ismount(m.path)


def test_vanished_store_gives_eio_and_mount_survives(tmp_path, mount_factory):
    s = make_store(tmp_path)
    s.backup()
    m = mount_factory(s.store_path)
    assert os.listdir(m.path / "entries") == ["e1"]
    os.rename(s.store_path, tmp_path / "moved")
    try:
        with pytest.raises(OSError) as info:
            os.listdir(m.path / "entries")
        assert info.value.errno == errno.EIO
    finally:
        os.rename(tmp_path / "moved", s.store_path)
    assert os.listdir(m.path / "entries") == ["e1"]


def test_mount_errors_are_one_line(tmp_path):
    s = make_store(tmp_path)
    def mount(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*VMLFS, "mount", *args], capture_output=True, text=True)
    (tmp_path / "mp").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [
        (mount(str(tmp_path / "mp"), "--store", str(tmp_path / "nope")), "no vmlfs store"),
        (mount(str(tmp_path / "full"), "--store", str(s.store_path)), "not an empty directory"),
        (mount(str(tmp_path / "missing"), "--store", str(s.store_path)), "not an empty directory"),
        (mount(str(tmp_path / "mp"), "--store", str(s.store_path), "-o", "rw"), "unsupported mount option"),
    ]
    header = s.store_path / "vmlfs-store.json"
    doc = json.loads(header.read_text())
    header.write_text(json.dumps(doc | {"version": "3.0"}))
    cases.append((mount(str(tmp_path / "mp"), "--store", str(s.store_path)), "newer than this vmlfs"))
    header.write_text(json.dumps(doc))
    inner = tmp_path / "outer" / "store"
    inner.parent.mkdir()
    shutil.copytree(s.store_path, inner)
    shutil.rmtree(inner / "entries")
    cases.append((mount(str(tmp_path / "outer"), "--store", str(inner)), "not an empty directory"))
    for done, message in cases:
        assert done.returncode != 0 and message in done.stderr, done.stderr
        assert done.stderr.startswith("vmlfs: error:") and "Traceback" not in done.stderr
    assert not os.path.ismount(tmp_path / "mp")


def test_store_inside_mountpoint_is_refused(tmp_path):
    from vmlfs.cli.mount import check_mountpoint
    from vmlfs.errors import InvalidRequest

    (tmp_path / "mp").mkdir()
    with pytest.raises(InvalidRequest, match="inside the mountpoint"):
        check_mountpoint(str(tmp_path / "mp"), tmp_path / "mp" / "store")


def test_foreground_sigterm_and_umount_command(tmp_path, mount_factory):
    s = make_store(tmp_path)
    s.backup()
    mp = tmp_path / "fg"
    mp.mkdir()
    proc = subprocess.Popen([*VMLFS, "--store", str(s.store_path), "mount", "-f", str(mp)], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.ismount(mp) and os.listdir(mp) == ["control", "entries"], 20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not os.path.ismount(mp)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
    m = mount_factory(s.store_path)
    done = subprocess.run([*VMLFS, "umount", str(m.path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not os.path.ismount(m.path)
    again = subprocess.run([*VMLFS, "umount", str(m.path)], capture_output=True, text=True)
    assert again.returncode != 0 and "not a vmlfs mount" in again.stderr
    assert sys.executable


def test_remounting_a_killed_mount_names_it_and_the_fix(tmp_path, mount_factory):
    s = make_store(tmp_path)
    s.backup()
    m = mount_factory(s.store_path)
    os.kill(serving_pid(m.path), signal.SIGKILL)

    def dead() -> bool:
        try:
            os.listdir(m.path)
        except OSError as exc:
            return exc.errno == errno.ENOTCONN
        return False

    wait_for(dead, 10)
    time.sleep(1.1)  # past the root's attribute cache time: the kernel answers even a stat with ENOTCONN now
    done = m.vmlfs("mount", str(m.path), check=False)
    assert done.returncode == 2 and "not an empty directory" not in done.stderr
    assert "process serving it is gone" in done.stderr and f"vmlfs umount {m.path}" in done.stderr
    assert f"fusermount3 -u {m.path}" in done.stderr
    m.vmlfs("umount", str(m.path))  # the advised fix works
    assert not os.path.ismount(m.path)
    m.start()  # and the mountpoint can be used again
    assert os.listdir(m.entry())
