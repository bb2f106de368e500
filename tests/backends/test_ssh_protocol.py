"""The SSH guest's URL parsing, quoting and wire protocols, run against the agent locally (no sshd).

The agent is the same script that goes to a guest; the recording runner
runs its argv through ``sh -c`` exactly as sshd does, so a quoting mistake
or a protocol slip shows up here.
"""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.backends.fake_runner import LocalProcess, RecordingRunner
from tests.cli.test_backup_cycle import build_guest
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.backends.ssh_guest import AGENT_SOURCE, SshGuest, agent_argv
from vmlfs.backends.ssh_url import SshTarget, parse_ssh_url, remote_command
from vmlfs.engine.guest import FileChanged, ScanReport
from vmlfs.engine.rules import Rules
from vmlfs.errors import InvalidRequest, NotFound


@pytest.mark.parametrize("url, expected", [
    ("ssh://h", SshTarget("h")),
    ("ssh://h/", SshTarget("h")),
    ("ssh://alice@cvm.example.org:2222/home/alice/my dir", SshTarget("cvm.example.org", "alice", 2222, "/home/alice/my dir")),
    ("ssh://h/~/work", SshTarget("h", path="~/work")),
    ("ssh://[::1]:22/x", SshTarget("::1", None, 22, "/x")),
    ("ssh://u@h/a;b'c\"$(id)", SshTarget("h", "u", None, "/a;b'c\"$(id)")),
])
def test_url_parsing(url: str, expected: SshTarget) -> None:
    assert parse_ssh_url(url) == expected


@pytest.mark.parametrize("url", [
    "ssh://-oProxyCommand=id/x", "ssh://h;id/x", "ssh://h x/p", "ssh://'h'/p", "ssh://-l@h/x", "ssh://u;id@h/x",
    "ssh://u@h:99999/x", "ssh:///x", "ssh://h/a\0b", "http://h/x",
])
def test_hostile_hosts_users_ports_refused(url: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_ssh_url(url)


def test_remote_argv_arrives_exactly(tmp_path: Path) -> None:
    """Each argv element reaches the remote program unchanged, whatever shell characters it holds."""
    nasty = ["-rf", "a b", "it's", 'q"uote', "$(touch pwned)", "`id`", "; rm -rf /", "*", "\n", "~", ""]
    command = remote_command(["printf", r"%s\0", *nasty])
    out = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [a.encode() for a in nasty]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InvalidRequest):
        remote_command(["echo", "a\0b"])


def test_agent_root_is_one_argv_element() -> None:
    runner = RecordingRunner()
    guest = SshGuest(runner, "/x'; touch /tmp/pwned; '")
    with pytest.raises(NotFound):
        list(guest.scan(Rules(), ScanReport()))
    assert runner.argvs[0][-2:] == ["serve", "/x'; touch /tmp/pwned; '"]
    assert shlex.split(runner.commands[0]) == runner.argvs[0]
    assert not os.path.exists("/tmp/pwned")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    home = tmp_path / "guest"
    home.mkdir()
    build_guest(home)
    (home / "cache" / "deep").mkdir(parents=True)
    (home / "cache" / "deep" / "x.root").write_text("excluded")
    (home / "keep.root").write_text("re-included")
    (home / "drop.root").write_text("excluded")
    os.mkfifo(home / "a-fifo")
    return home


@pytest.mark.parametrize("rules", [Rules(), Rules(("keep.root",), ("cache/", "*.root", "d*0"))])
def test_scan_matches_the_local_guest(tree: Path, rules: Rules) -> None:
    local_report, remote_report = ScanReport(), ScanReport()
    local = list(LocalGuest(tree).scan(rules, local_report))
    remote = list(SshGuest(RecordingRunner(), str(tree)).scan(rules, remote_report))
    assert remote == local
    assert remote_report == local_report
    assert remote_report.skipped_special == 1


class _TrickleProcess(LocalProcess):
    """Hands the agent's answer on in pieces of 1 to 13 bytes, so records lie across reads in every way."""

    def __init__(self, command: str) -> None:
        super().__init__(command)
        self._pending, self._piece = b"", 0

    def read(self) -> bytes:
        if not self._pending:
            self._pending = super().read()
        self._piece = self._piece % 13 + 1
        piece, self._pending = self._pending[:self._piece], self._pending[self._piece:]
        return piece


class _TrickleRunner(RecordingRunner):
    def start(self, argv):  # type: ignore[override]
        return _TrickleProcess(remote_command(argv))


def test_scan_records_split_across_reads_decode_the_same(tree: Path) -> None:
    """Records whole in a read are decoded from it directly, the others piece by piece: both the same."""
    os.symlink("a-long-target/" * 8, tree / "a-link")
    os.setxattr(tree / "keep.root", "user.note", b"kept")
    whole = list(SshGuest(RecordingRunner(), str(tree)).scan(Rules(), ScanReport()))
    split = list(SshGuest(_TrickleRunner(), str(tree)).scan(Rules(), ScanReport()))
    assert split == whole == list(LocalGuest(tree).scan(Rules(), ScanReport()))
    assert any(e.target for e in split) and any(e.xattrs for e in split)


def test_read_many_streams_files_and_reports_changes(tree: Path) -> None:
    guest = SshGuest(RecordingRunner(), str(tree))
    files = [e for e in guest.scan(Rules(), ScanReport()) if e.type == "f"]
    by_name = {e.path: e for e in files}
    (tree / "empty.txt").write_text("grown")  # changed after the scan: size differs
    got = {}
    for entry, chunks in guest.read_many(files):
        if entry.path == b"analysis/data.bin":
            continue  # never consumed: the stream must stay in step
        try:
            got[entry.path] = b"".join(chunks)
        except FileChanged as exc:
            got[entry.path] = exc
    assert isinstance(got.pop(b"empty.txt"), FileChanged)
    for path, data in got.items():
        assert data == (tree / os.fsdecode(path)).read_bytes(), path
    assert len(got) == len(files) - 2
    run_c = by_name[b"analysis/run.C"]
    assert guest.digest(run_c) == __import__("hashlib").sha256((tree / "analysis" / "run.C").read_bytes()).digest()


def test_one_agent_serves_history_environment_and_release(tree: Path) -> None:
    runner = RecordingRunner()
    guest = SshGuest(runner, str(tree))
    assert guest.history() is None
    (tree / ".bash_history").write_bytes(b"ls\n$(rm -rf ~)\n")
    assert guest.history() == b"ls\n$(rm -rf ~)\n"
    env = guest.environment().decode()
    assert f"\nHOME={os.environ['HOME']}\n" in "\n" + env and env.endswith("\n")
    assert guest.release() is not None  # a Linux host: at least its distro
    assert runner.argvs == [agent_argv("serve", str(tree))], "one session served every request"
    guest.close()


@pytest.fixture
def shell_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user whose ~/.bashrc exports the experiment's setup behind the usual 'interactive only' guard,
    sourced from ~/.bash_profile as CernVM's skeleton does; a C locale, where Python would add LC_CTYPE."""
    home = tmp_path / "user"
    home.mkdir()
    (home / ".bash_profile").write_text('[ -f ~/.bashrc ] && . ~/.bashrc\necho "profile chatter"\n')
    (home / ".bashrc").write_text("case $- in *i*) ;; *) return ;; esac\nexport ROOTSYS=/cvmfs/sft.cern.ch/root\n"
                                  "export WEIRD=$'tab\\there'\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHELL", "/bin/bash")
    for name in ("LANG", "LC_ALL", "LC_CTYPE", "LANGUAGE"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_environment_is_the_interactive_login_shells(shell_home: Path) -> None:
    env = SshGuest(RecordingRunner(), str(shell_home)).environment()
    lines = env.splitlines()
    assert b"ROOTSYS=/cvmfs/sft.cern.ch/root" in lines, "~/.bashrc exports are part of a physicist's environment"
    assert b"WEIRD=tab\there" in lines, "values arrive byte for byte"
    assert not any(line.startswith(b"LC_CTYPE=") for line in lines), "python3 on the guest adds no locale"
    assert not any(line.startswith(b"PYTHONCOERCECLOCALE=") for line in lines)
    assert b"profile chatter" not in env


def test_a_login_shell_that_hangs_is_cut_off_with_a_clear_error(shell_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vmlfs.backends.ssh_guest as ssh_guest
    from vmlfs.errors import GuestError

    (shell_home / ".bashrc").write_text("read -r answer\nsleep 60\n")  # waits for a terminal that never comes
    monkeypatch.setattr(ssh_guest, "ENV_TIMEOUT", 1.0)
    with pytest.raises(GuestError, match="printed no environment within 1 s"):
        SshGuest(RecordingRunner(), str(shell_home)).environment()


def test_the_agent_and_the_code_it_carries_are_python36() -> None:
    """What goes to the guest (the agent after vmlfs/engine/holes.py) parses as the oldest python3 a CernVM has."""
    assert AGENT_SOURCE.startswith('"""Sparse files') and "def main(argv)" in AGENT_SOURCE
    ast.parse(AGENT_SOURCE, feature_version=(3, 6))
