"""The CernVM-FS cache over SSH: captured from an SSH guest through the agent (configuration read
there too) into an SSH store, put back into a guest as root with the documented steps (stop
autofs, unpack, owner cvmfs, reload), refused at once for a user that is not root; and a hostile
agent's names: impossible ones refuse the backup, names that are no objects are refused one line each."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.backends.conftest import Sshd
from tests.backends.fake_runner import LocalProcess, RecordingRunner
from tests.backends.hostile_agent import Rec, ScriptedRunner, listing
from tests.conftest import Vmlfs
from tests.cvmfs_cache import NEVER, cached_files, make_cache, objects
from tests.engine.test_cvmfs_cache import CERNVM4, guest_root
from vmlfs.backends.cvmfs_guest import CacheSteps
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.local_store import LocalStore
from vmlfs.backends.ssh_guest import SshGuest
from vmlfs.backends.ssh_url import remote_command
from vmlfs.engine.backup import run_backup
from vmlfs.engine.cvmfs import CvmfsSource
from vmlfs.engine.model import EntryConfig
from vmlfs.errors import GuestError, PermissionDenied


def _no_cvmfs_client_here() -> None:
    """The steps run on this machine (the sshd is local): never where autofs or CernVM-FS really runs."""
    active = subprocess.run(["systemctl", "is-active", "--quiet", "autofs"], capture_output=True).returncode == 0
    if active or shutil.which("cvmfs_config"):
        pytest.skip("this machine runs autofs or CernVM-FS: the restore steps would act on it")


@pytest.mark.sshd
def test_an_ssh_guest_cache_into_an_ssh_store_and_back_into_a_guest_as_root(vmlfs: Vmlfs, sshd: Sshd, tmp_path: Path) -> None:
    _no_cvmfs_client_here()
    remote = tmp_path / "remote store"
    vmlfs.env = sshd.env(vmlfs.env) | {"VMLFS_STORE": sshd.url(str(remote)), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    vmlfs.store = remote
    root, home = guest_root(tmp_path, config=CERNVM4)
    shared = make_cache(root / "mnt/.rw/cvmfs-cache", objects(500))
    vmlfs.run("entry", "add", "e1", "--guest", sshd.url(str(home)), "--cvmfs-root", str(root), "--with-cvmfs-cache")
    t0 = time.monotonic()
    out = vmlfs.run("backup", "e1")
    print(f"SSH guest, SSH store: backup with a 500-object cache in {time.monotonic() - t0:.2f} s")
    assert "CernVM-FS cache /mnt/.rw/cvmfs-cache: 500 objects" in out.stdout.decode() and "warning" not in out.stderr.decode()
    part = vmlfs.record("e1", vmlfs.backups("e1")[-1])["cvmfs"]
    assert part["objects"] == 500 and part["repositories"] == ["atlas.cern.ch", "sft.cern.ch"]
    assert "ok: 1 backups, 503 files" in vmlfs.run("verify").stdout.decode()
    # Into a new guest's cache base over SSH as root: the steps a guest without CernVM-FS cannot take are said.
    new_base = tmp_path / "new vm" / "cvmfs-cache"
    done = vmlfs.run("restore", "e1", sshd.url(str(tmp_path / "new home")), "--cvmfs-cache-into", sshd.url(str(new_base)))
    err = done.stderr.decode()
    assert "no cvmfs user" in err and "no cvmfs_config" in err, err
    assert f"into {sshd.url(str(new_base))}: 502 files" in done.stdout.decode(), done.stdout.decode()
    assert cached_files(new_base / "shared") == cached_files(shared)
    assert not any((new_base / "shared" / never).exists() for never in NEVER)
    # A user other than root is refused before the home is written; without a user the guest's steps check.
    nonroot = vmlfs.run("restore", "e1", sshd.url(str(tmp_path / "other home")).replace("root@", "physicist@"),
                        "--with-cvmfs-cache", check=False)
    assert nonroot.returncode == 2 and "needs root, not physicist" in nonroot.stderr.decode()
    assert not (tmp_path / "other home").exists()
    # --with-cvmfs-cache means the SSH target's guest at the recorded base; a directory target must say where.
    plain = vmlfs.run("restore", "e1", str(tmp_path / "local"), "--with-cvmfs-cache", check=False)
    assert plain.returncode == 2 and "--cvmfs-cache-into DIR" in plain.stderr.decode()


class _Nobody(RecordingRunner):
    """Runs the steps as user nobody: a guest reached as someone who is not root."""

    def start(self, argv):  # type: ignore[no-untyped-def]
        self.argvs.append(list(argv))
        return LocalProcess("exec setpriv --reuid=65534 --regid=65534 --clear-groups " + remote_command(argv))


def test_the_steps_refuse_at_once_without_root_and_name_the_way(tmp_path: Path) -> None:
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv to drop root")
    runner = _Nobody()
    store = LocalStore(tmp_path / "store")
    with pytest.raises(PermissionDenied, match=r"log in as root \(ssh://root@HOST\)"):
        CacheSteps(runner, "ssh://physicist@new-vm").restore(None, store.open_layer, str(tmp_path / "base"))  # type: ignore[arg-type]
    assert len(runner.argvs) == 1 and runner.argvs[0][:2] == ["sh", "-c"], "nothing unpacked, nothing else run"
    assert runner.argvs[0][-1] == str(tmp_path / "base"), "the cache base is an argv element, never shell text"
    assert not (tmp_path / "base").exists()


def _hostile_cache_backup(tmp_path: Path, records: list[Rec]):
    store = LocalStore(tmp_path / "s")
    if "e" not in store.entry_names():
        store.add_entry(EntryConfig("e", str(tmp_path)))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    cache = CvmfsSource(SshGuest(ScriptedRunner(listing(records)), "/var/lib/cvmfs/shared"), "/var/lib/cvmfs")
    return store, lambda: run_backup(store, store.load_entry("e"), LocalGuest(home), cvmfs=cache)


OBJ = b"0123456789abcdef0123456789abcdef012345"  # 38 hex digits: a name the client could have made


@pytest.mark.parametrize("bad", [b"00/..", b"00/a\0b", b"00/x/../../etc/passwd", b"00//" + OBJ])
def test_a_hostile_agent_s_impossible_names_refuse_the_whole_backup(tmp_path: Path, bad: bytes) -> None:
    store, backup = _hostile_cache_backup(tmp_path, [Rec(b""), Rec(b"00"), Rec(bad, b"f", size=3)])
    with pytest.raises(GuestError, match="invalid record"):
        backup()
    assert store.backups("e") == [], "nothing committed"


def test_a_hostile_agent_s_names_that_are_no_objects_are_refused_and_left_out(tmp_path: Path) -> None:
    records = [Rec(b""), Rec(b"00"), Rec(b"00/" + OBJ[:-1] + b"\n", b"f", size=3), Rec(b"00/" + OBJ, b"f", size=3),
               Rec(b"00/" + OBJ + b"-sha256", b"f", size=3), Rec(b"00/x" + OBJ[1:], b"l", target=b"/etc/shadow"),
               Rec(b"cvmfschecksum.-rf", b"f", size=3), Rec(b"cvmfschecksum.atlas.cern.ch", b"f", size=3),
               Rec(b"gg"), Rec(b"gg/" + OBJ, b"f", size=3)]
    store, backup = _hostile_cache_backup(tmp_path, records)
    meta = backup()
    refused = [w for w in meta.warnings if "refused" in w]
    assert len(refused) == 4 and all(len(w.splitlines()) == 1 for w in refused), refused  # gg/: never descended into
    assert "refused shared/00/" + OBJ[:-1].decode() + "\\n (not an object name" in refused[0]
    assert f"cvmfs cache: refused shared/00/{OBJ.decode()}-sha256 (not an object name (a hash)); left out" in refused
    assert any(f"refused shared/00/x{OBJ[1:].decode()} (not a regular file)" in w for w in refused)
    assert meta.cvmfs is not None and meta.cvmfs["objects"] == 1 and meta.cvmfs["repositories"] == ["atlas.cern.ch"]
    tree = store.open_cvmfs_tree("e", meta.timestamp)
    assert sorted(b"/".join(p) for p, n in tree.walk() if n.is_file) == [b"00/" + OBJ, b"cvmfschecksum.atlas.cern.ch"]
    tree.close()
