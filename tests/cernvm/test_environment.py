"""env.txt applied in a provisioned VM: the profile.d script, run by real shells, gives back every value byte-exact."""

from __future__ import annotations

import base64
import getpass
import json
import subprocess
from pathlib import Path

import pytest

from vmlfs.cernvm import contextualize, environment

HOSTILE = {
    b"ROOTSYS": b"/cvmfs/sft.cern.ch/lcg/releases/ROOT/6.24.00",
    b"QUOTED": b"it's \"quoted\" $HOME `id` $(id) \\ ; & |",
    b"MULTILINE": b"line one\nline two\n",
    b"RAW": b"caf\xe9 \xff",
    b"EMPTY": b"",
    b"EQUALS": b"a=b=c",
}


def env_txt(pairs: dict[bytes, bytes], sep: bytes = b"\0") -> bytes:
    return sep.join(name + b"=" + value for name, value in pairs.items()) + sep


def exported_by(script: bytes, tmp_path: Path, shell: str, names: list[bytes]) -> dict[bytes, bytes | None]:
    """What ``shell`` has for ``names`` after sourcing ``script`` (None: not set), read back NUL-separated."""
    path = tmp_path / "env.sh"
    path.write_bytes(script)
    show = "; ".join(f'if [ -n "${{{n.decode()}+x}}" ]; then printf "%s\\0" "${n.decode()}"; else printf "\\001\\0"; fi'
                     for n in names)
    out = subprocess.run([shell, "-c", f". {path}; {show}"], capture_output=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout
    values = out.split(b"\0")[:-1]
    return {n: (None if v == b"\x01" else v) for n, v in zip(names, values, strict=True)}


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_every_value_comes_back_byte_exact_in_the_users_login_shell(tmp_path: Path, shell: str) -> None:
    script = environment.profile_script(env_txt(HOSTILE), getpass.getuser())
    assert exported_by(script, tmp_path, shell, list(HOSTILE)) == HOSTILE


def test_a_file_of_lines_from_a_local_guest_is_read_too(tmp_path: Path) -> None:
    script = environment.profile_script(b"ROOTSYS=/opt/root\nATLAS_LOCAL_ROOT_BASE=/cvmfs/atlas.cern.ch\n",
                                        getpass.getuser())
    assert exported_by(script, tmp_path, "sh", [b"ROOTSYS", b"ATLAS_LOCAL_ROOT_BASE"]) == {
        b"ROOTSYS": b"/opt/root", b"ATLAS_LOCAL_ROOT_BASE": b"/cvmfs/atlas.cern.ch"}


def test_session_values_and_names_no_shell_can_export_are_left_out(tmp_path: Path) -> None:
    env = env_txt({b"PWD": b"/old/home", b"SSH_CONNECTION": b"10.0.0.1 22 10.0.0.2 5555", b"HOSTNAME": b"old-vm",
                   b"BASH_FUNC_module%%": b"() { eval $(/usr/bin/modulecmd bash $*); }", b"KEEP": b"yes"})
    script = environment.profile_script(env, getpass.getuser())
    assert b"BASH_FUNC" not in script and b"old-vm" not in script
    got = exported_by(script, tmp_path, "bash", [b"PWD", b"SSH_CONNECTION", b"KEEP"])
    assert got == {b"PWD": str(Path.cwd()).encode(), b"SSH_CONNECTION": None, b"KEEP": b"yes"}


def test_another_users_login_shell_is_left_alone(tmp_path: Path) -> None:
    script = environment.profile_script(env_txt({b"ROOTSYS": b"/opt/root"}), "physicist-who-is-not-me")
    assert exported_by(script, tmp_path, "sh", [b"ROOTSYS"]) == {b"ROOTSYS": None}


def test_a_later_value_of_one_name_wins_as_in_a_shell() -> None:
    assert environment.variables(b"A=1\0B=2\0A=3\0") == [(b"A", b"1"), (b"B", b"2"), (b"A", b"3")]
    assert environment.profile_script(b"A=1\0A=3\0", "u").count(b"export A=") == 1
    assert environment.login_shell(b"SHELL=/bin/zsh\0") == "/bin/zsh"
    assert environment.login_shell(b"SHELL=zsh\0") == "/bin/bash"


def test_the_user_data_writes_the_script_for_cloud_init() -> None:
    script = environment.profile_script(env_txt(HOSTILE), "physicist")
    data = contextualize.user_data("vm", "ssh-ed25519 AAAA k", "PRIVATE", "ssh-ed25519 BBBB h", profile=script)
    assert data.startswith(b"#cloud-config\n")
    (written,) = json.loads(data.split(b"\n", 1)[1])["write_files"]
    assert written["path"] == environment.PROFILE_PATH and written["permissions"] == "0644"
    assert base64.b64decode(written["content"]) == script
    assert "write_files" not in json.loads(contextualize.user_data("vm", "k", "p", "h").split(b"\n", 1)[1])
