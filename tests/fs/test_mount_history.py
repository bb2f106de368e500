"""A real mount while the backups it reads are forgotten and collected: right bytes until close, then freed."""

from __future__ import annotations

import errno
import os
import time

from tests.fs.conftest import make_store, needs_fuse


@needs_fuse
def test_files_being_read_keep_their_bytes_while_their_backup_is_forgotten_and_gcd(tmp_path, mount_factory):
    s = make_store(tmp_path, big_mib=6)
    s.backup("full")
    (s.home / "src" / "main.py").write_text("print('changed')\n" * 40)
    ts1 = s.backup("incremental")  # main.py in its own layer, big.bin in the full's
    big, main = (s.home / "data" / "big.bin").read_bytes(), (s.home / "src" / "main.py").read_bytes()
    (s.home / "data" / "big.bin").write_bytes(os.urandom(1 << 20))
    (s.home / "src" / "main.py").write_text("gone\n")
    s.backup("full")  # shares nothing with the two before
    doomed = [ts for ts in s.store().timestamps("e1") if ts <= ts1]
    m = mount_factory(s.store_path)
    home = m.entry() / ts1 / "home"
    with open(home / "data" / "big.bin", "rb") as f, open(home / "src" / "main.py", "rb") as g:
        head = f.read(1 << 20)  # its layer is open now; main.py's layer is not opened yet
        m.vmlfs("forget", *(f"e1@{ts}" for ts in doomed))
        assert ts1 not in os.listdir(m.entry()), "a forgotten backup vanishes from the mount"
        out = m.vmlfs("gc", "--grace", "0").stdout
        assert "kept for the grace period or a mount" in out and "deleted 0 objects" in out
        layers = {p.name for p in (s.store_path / "objects" / "layers").iterdir()}
        assert len(layers) == 1, "only the newest backup's layer is still in place: the others are moved aside"
        assert head + f.read() == big
        assert g.read() == main, "a layer first opened after it was moved aside is found where gc put it"
    m.stop()
    deadline = time.monotonic() + 10
    while list((s.store_path / "leases").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the mount process ends a moment after the unmount
    assert not list((s.store_path / "leases").iterdir()), "the mount gave its lease back"
    out = m.vmlfs("gc", "--grace", "0").stdout
    assert "deleted 4 objects" in out and "kept" not in out
    assert not list((s.store_path / "objects" / "garbage").iterdir())
    m.vmlfs("verify")


@needs_fuse
def test_prune_preview_and_prune_through_the_mount(tmp_path, mount_factory):
    """cat control/prune-preview is the dry run of the stored keep rules; touch control/prune applies them,
    and the pruned backups vanish from the entry while latest stays."""
    s = make_store(tmp_path, big_mib=1)
    stamps = [s.backup("full")]
    for i in range(2):
        (s.home / f"more{i}.txt").write_text(f"{i}\n")
        stamps.append(s.backup("incremental"))
    m = mount_factory(s.store_path)
    control = m.entry() / "control"
    assert {"prune", "prune-preview"} <= set(os.listdir(control))
    assert (control / "prune-preview").read_text().startswith("cannot preview: entry 'e1' stores no prune policy")
    m.vmlfs("entry", "edit", "e1", "--keep-last", "1")
    preview = (control / "prune-preview").read_text().splitlines()
    assert preview[:3] == [f"keep  e1@{stamps[2]}  (newest, last #1)", f"remove e1@{stamps[1]}", f"remove e1@{stamps[0]}"]
    assert preview[3].startswith("2 backups to remove")
    assert sorted(os.listdir(m.entry())) == sorted(stamps + ["control", "latest", "versions"]), "a preview changes nothing"
    try:
        (control / "prune").write_text("everything please\n")
        raise AssertionError("a prune request with words was accepted")
    except OSError as refused:
        assert refused.errno == errno.EINVAL  # only a touch asks for a prune
    os.utime(control / "prune")
    deadline = time.monotonic() + 30
    while "pruned e1:" not in (status := (control / "status").read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "pruned e1: forgot 2 backups" in status, status
    assert sorted(os.listdir(m.entry())) == sorted([stamps[2], "control", "latest", "versions"])
    assert os.readlink(m.entry() / "latest") == stamps[2]
