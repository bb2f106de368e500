"""Backups from, and restores into, a guest behind a real OpenSSH sshd on 127.0.0.1.

Through the real CLI with HOME pointing at a client ~/.ssh (config, key,
known_hosts), as a user would run it: the fidelity cycle, host-key policy,
dropped connections, the one-line errors, and restores that must not write
outside their target even when the manifest is hostile.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.backends.conftest import KillOnFirstFile, Sshd
from tests.cli.test_backup_cycle import build_guest, change_guest
from tests.conftest import Vmlfs, snapshot_copy, tree_listing
from vmlfs.backends.local_store import LocalStore
from vmlfs.backends.ssh_guest import SshGuest
from vmlfs.backends.ssh_runner import ConnectionLost, SshConnection, SshOptions
from vmlfs.backends.ssh_url import parse_ssh_url
from vmlfs.engine.backup import run_backup
from vmlfs.engine.model import EntryConfig

pytestmark = pytest.mark.sshd


@pytest.fixture
def cli(vmlfs: Vmlfs, sshd: Sshd) -> Vmlfs:
    vmlfs.env = sshd.env(vmlfs.env)
    return vmlfs


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    home = tmp_path / "guest home; it's"  # a path the remote shell would misread unless quoted
    home.mkdir()
    build_guest(home)
    return home


def test_full_incremental_differential_over_ssh(cli: Vmlfs, sshd: Sshd, guest: Path, tmp_path: Path) -> None:
    cli.run("entry", "add", "physics", "--guest", sshd.url(str(guest)), "--exclude", "*.tmp")
    (guest / "scratch.tmp").write_text("left out")
    copies = []
    for step, kind in enumerate(["full", "incremental", "differential"]):
        if step:
            change_guest(guest, step)
        out = cli.run("backup", "physics", "--kind", kind)
        assert f": {kind}" in out.stdout.decode()
        copy = snapshot_copy(guest, tmp_path / f"copy{step}")
        (copy / "scratch.tmp").unlink()
        copies.append(copy)
    for step, ts in enumerate(cli.backups("physics")):
        target = tmp_path / f"restore{step}"
        cli.run("restore", f"physics@{ts}", str(target))
        assert tree_listing(target) == tree_listing(copies[step]), f"backup {step} differs from the guest"
    record = cli.record("physics", cli.backups("physics")[0])
    env = cli.store / "objects" / "blobs" / record["files"]["env.txt"]["sha256"]
    assert b"\nHOME=/root\n" in b"\n" + env.read_bytes(), "env.txt comes from the guest's login environment"
    meta = json.dumps(record)
    assert '"release": "distro=' in meta and '"guest": "ssh://root@127.0.0.1:' in meta
    cli.run("verify")


def test_restore_into_an_ssh_guest(cli: Vmlfs, sshd: Sshd, guest: Path, tmp_path: Path) -> None:
    cli.run("entry", "add", "e", "--guest", str(guest))
    cli.run("backup", "e")
    target = tmp_path / "remote target; $(id)"
    cli.run("restore", "e", sshd.url(str(target)))
    assert tree_listing(target) == tree_listing(guest)
    again = cli.run("restore", "e", sshd.url(str(target)), "analysis/run.C", check=False)
    assert again.returncode == 4 and b"already exists" in again.stderr
    (target / "analysis" / "run.C").write_text("local edit")
    cli.run("restore", "e", sshd.url(str(target)), "analysis/run.C", "--overwrite")
    assert (target / "analysis" / "run.C").read_bytes() == (guest / "analysis" / "run.C").read_bytes()


def test_restore_into_ssh_never_follows_a_symlink_in_the_target(cli: Vmlfs, sshd: Sshd, guest: Path, tmp_path: Path) -> None:
    cli.run("entry", "add", "e", "--guest", str(guest))
    cli.run("backup", "e")
    outside, target = tmp_path / "outside", tmp_path / "t"
    outside.mkdir()
    target.mkdir()
    (target / "analysis").symlink_to(outside)
    proc = cli.run("restore", "e", sshd.url(str(target)), check=False)
    assert proc.returncode == 4 and b"symlink is never followed" in proc.stderr
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("attack", ["dotdot", "under-symlink", "slash"])
def test_restore_into_ssh_refuses_a_malicious_manifest(cli: Vmlfs, sshd: Sshd, tmp_path: Path, attack: str) -> None:
    home = tmp_path / "g"
    (home / "sub").mkdir(parents=True)
    (home / "sub" / "payload").write_text("written outside?")
    (home / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "outside").mkdir()
    cli.run("entry", "add", "e", "--guest", str(home))
    cli.run("backup", "e")
    ts = cli.backups("e")[0]
    db = sqlite3.connect(cli.tree_file("e", ts))
    cols = [r[1] for r in db.execute("PRAGMA table_info(nodes)")]
    row = dict(zip(cols, db.execute("SELECT * FROM nodes WHERE name = ?", (b"payload",)).fetchone()))
    if attack == "dotdot":
        db.execute("UPDATE nodes SET name = ? WHERE name = ?", (b"..", b"sub"))
    elif attack == "slash":
        db.execute("UPDATE nodes SET name = ? WHERE name = ?", (b"../../escaped", b"payload"))
    else:  # a node whose parent is the symlink 'link -> outside'
        link_id = db.execute("SELECT id FROM nodes WHERE name = ?", (b"link",)).fetchone()[0]
        row.update(id=10_000, parent=link_id, name=b"planted")
        db.execute(f"INSERT INTO nodes ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", tuple(row[c] for c in cols))
    db.commit()
    db.close()
    cli.reseal_tree("e", ts)
    target = tmp_path / "deep" / "target"
    proc = cli.run("restore", f"e@{ts}", sshd.url(str(target)), check=False)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "store" not in p.parts
                     and not str(p.relative_to(tmp_path)).startswith(("g", "deep/target")))
    assert set(written) - {"deep"} == {"outside"}, "nothing may be written outside the target"
    assert list((tmp_path / "outside").iterdir()) == []
    if attack == "under-symlink":
        assert proc.returncode == 0 and (target / "link").is_symlink() and not (target / "link" / "planted").exists()
    else:
        assert proc.returncode == 7 and b"damaged manifest row" in proc.stderr and b"Traceback" not in proc.stderr


def test_unknown_host_key_refused_unless_accepted(cli: Vmlfs, sshd: Sshd, guest: Path) -> None:
    sshd.known_hosts.write_text("")
    cli.run("entry", "add", "e", "--guest", sshd.url(str(guest)))
    proc = cli.run("backup", "e", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 10 and "unknown host key for 127.0.0.1 (SHA256:" in err and "--accept-new-host-key" in err
    assert cli.backups("e") == []
    cli.run("backup", "e", "--accept-new-host-key")
    assert sshd.known_hosts.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    cli.run("backup", "e")  # now known: no flag needed


def test_changed_host_key_always_refused(cli: Vmlfs, sshd: Sshd, guest: Path, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    sshd.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    offered = subprocess.run(["ssh-keygen", "-lf", str(sshd.host_pub)], capture_output=True, text=True, check=True).stdout.split()[1]
    cli.run("entry", "add", "e", "--guest", sshd.url(str(guest)))
    for flags in ([], ["--accept-new-host-key"]):
        proc = cli.run("backup", "e", *flags, check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 10 and "CHANGED" in err and offered in err, err
    assert sshd.known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {other}\n"


def test_connection_errors_are_one_clear_line(cli: Vmlfs, sshd: Sshd, guest: Path, tmp_path: Path) -> None:
    cases = {
        "missing": (sshd.url(str(tmp_path / "no-such-dir")), 3, "no-such-dir: No such file or directory"),
        "auth": (f"ssh://nobody@127.0.0.1:{sshd.port}/x", 6, "authentication to ssh://nobody@127.0.0.1"),
        "unreachable": ("ssh://root@127.0.0.1:1/x", 10, "cannot reach ssh://root@127.0.0.1:1/x"),
    }
    for name, (url, code, text) in cases.items():
        cli.run("entry", "add", name, "--guest", url)
        proc = cli.run("backup", name, check=False)
        err = proc.stderr.decode()
        assert proc.returncode == code and text in err, (name, err)
        assert err.startswith("vmlfs: error: ") and "Traceback" not in err and len(err.splitlines()) <= 2, err
    cli.run("entry", "add", "alias", "--guest", f"ssh://vmlfs-test{guest}")  # Host alias from ~/.ssh/config
    cli.run("backup", "alias")


def _big_guest(tmp_path: Path) -> Path:
    home = tmp_path / "big"
    home.mkdir()
    for i in range(24):
        (home / f"blob{i:02}").write_bytes(bytes([i]) * (2 << 20) + str(i).encode() * 4096)
    return home


def test_dropped_connection_leaves_nothing_and_reports_it(sshd: Sshd, tmp_path: Path) -> None:
    home = _big_guest(tmp_path)
    store = LocalStore(tmp_path / "store")
    cfg = EntryConfig("e", sshd.url(str(home)))
    store.add_entry(cfg)
    target = parse_ssh_url(cfg.guest)
    guest = SshGuest(SshConnection(target, SshOptions()), target.path)

    with pytest.raises(ConnectionLost, match="SSH connection to ssh://root@127.0.0.1:.* lost"):
        run_backup(store, cfg, guest, progress=KillOnFirstFile(sshd))
    guest.close()
    assert store.backups("e") == []
    assert list((store.entry_dir("e") / ".tmp").iterdir()) == []


def test_retries_reconnect_and_start_over(cli: Vmlfs, sshd: Sshd, tmp_path: Path) -> None:
    home = _big_guest(tmp_path)
    cli.run("entry", "add", "e", "--guest", sshd.url(str(home)))
    tmp = cli.store / "entries" / "e" / ".tmp"
    killed = threading.Event()

    def kill_when_backup_runs() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed.is_set():
            if tmp.exists() and any(tmp.iterdir()) and sshd.drop_connections():
                killed.set()
            time.sleep(0.005)

    killer = threading.Thread(target=kill_when_backup_runs)
    killer.start()
    proc = cli.run("backup", "e", "--retries", "2", check=False)
    killed.set()
    killer.join()
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "lost" in err and "nothing was committed, retrying (1/2)" in err
    assert len(cli.backups("e")) == 1
    cli.run("verify")
    restored = tmp_path / "restored"
    cli.run("restore", "e", str(restored))
    assert tree_listing(restored) == tree_listing(home)


def test_the_ssh_agent_is_used(vmlfs: Vmlfs, sshd: Sshd, guest: Path, tmp_path: Path) -> None:
    """A HOME with no key files: authentication works through SSH_AUTH_SOCK, and fails without it."""
    home = tmp_path / "agent-home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    shutil.copy(sshd.known_hosts, home / ".ssh" / "known_hosts")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.02)
        env = dict(sshd.env(vmlfs.env), HOME=str(home), SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", "-q", str(sshd.user_key)], env=env, check=True, capture_output=True)
        cli = Vmlfs(vmlfs.store, env)
        cli.run("entry", "add", "e", "--guest", sshd.url(str(guest)))
        cli.run("backup", "e")
        without = Vmlfs(vmlfs.store, {k: v for k, v in env.items() if k != "SSH_AUTH_SOCK"})
        proc = without.run("backup", "e", check=False)
        assert proc.returncode == 6 and b"authentication" in proc.stderr
    finally:
        agent.terminate()
        agent.wait()


@pytest.mark.parametrize("known_type", ["ecdsa", "rsa"])
def test_host_key_changed_to_another_type_says_so(cli: Vmlfs, sshd: Sshd, guest: Path, tmp_path: Path, known_type: str) -> None:
    """known_hosts holds a key of another type than the server now offers: asyncssh then offers only
    that type and the handshake fails; the error must still say the host key changed, and show it."""
    key = tmp_path / "old"
    subprocess.run(["ssh-keygen", "-q", "-t", known_type, "-N", "", "-f", str(key)], check=True)
    old = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    sshd.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {old}\n")
    offered = subprocess.run(["ssh-keygen", "-lf", str(sshd.host_pub)], capture_output=True, text=True, check=True).stdout.split()[1]
    cli.run("entry", "add", "e", "--guest", sshd.url(str(guest)))
    for flags in ([], ["--accept-new-host-key"]):
        proc = cli.run("backup", "e", *flags, check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 10 and "host key of 127.0.0.1 has CHANGED" in err and offered in err, err
        assert "Connection lost" not in err
    assert sshd.known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {old}\n"
    assert cli.backups("e") == []
