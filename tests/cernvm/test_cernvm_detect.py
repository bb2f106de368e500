"""Guest release detection from the probe's output, and the recorded-vs-found release check."""

from __future__ import annotations

import subprocess

import pytest

from vmlfs.release.detect import (
    PROBE_SCRIPT,
    check_release,
    detect_release,
    parse_probe_output,
    parse_release,
)
from vmlfs.errors import InvalidRequest

CERNVM4 = {
    "ucernvm-version": "2021.05-1.cernvm.x86_64",
    "cvmfs-snapshot": "0123456789abcdef0123456789abcdef01234567\nHEAD4",
    "installed-system": "/.installed_cernvm-system-4.5.0.0",
    "cmdline": "initrd=cernvm/initrd.img cernvm_path=cvm4 cvmfs_repos=cernvm-prod.cern.ch cvmfs_repository_tag=HEAD4",
    "os-release": 'ID="centos"\nVERSION_ID="7"',
}


def probe_output(sections: dict[str, str]) -> str:
    return "".join(f"\n@@vmlfs-probe:{key}\n{text}" for key, text in sections.items()) + "\n@@vmlfs-probe:end\n"


def test_cernvm4_guest():
    assert detect_release(CERNVM4) == "cernvm4 ucernvm=2021.05-1 os=4.5.0.0"


def test_probe_output_round_trip_and_unknown_sections_ignored():
    text = probe_output({**CERNVM4, "injected": "ucernvm=9999.01-1"})
    parsed = parse_probe_output(text)
    assert parsed == CERNVM4
    assert detect_release(parsed) == "cernvm4 ucernvm=2021.05-1 os=4.5.0.0"


def test_rpm_wins_and_snapshot_tag_is_a_fallback():
    assert "os=4.4.1.0" in detect_release({**CERNVM4, "rpm-system": "cernvm-system-4.4.1.0-1.el7.x86_64"})
    pinned = {"ucernvm-version": "2.7-8.cernvm.x86_64", "cvmfs-snapshot": "abc\ncernvm-system-3.6.5.0",
              "cmdline": "cernvm_path=cvm3", "rpm-system": "package cernvm-system is not installed"}
    assert detect_release(pinned) == "cernvm3 ucernvm=2.7-8 os=3.6.5.0"


def test_cernvm5_and_plain_linux_and_nothing():
    config = "CernVM Config: 1.2\nCernVM System: 1.0.1\nCernVM Kernel: 1.0.1"
    assert detect_release({"cernvm-config": config, "os-release": "ID=almalinux\nVERSION_ID=9.3"}) == "cernvm5 os=1.0.1"
    assert detect_release({"os-release": 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="22.04"'}) == "distro=ubuntu-22.04"
    assert detect_release({}) is None


def test_hostile_probe_text_is_never_a_release():
    hostile = {"ucernvm-version": "$(rm -rf ~)", "installed-system": "/.installed_cernvm-system-../../x",
               "os-release": "ID=a;b\nVERSION_ID=$(id)"}
    assert detect_release(hostile) is None


def test_probe_script_runs_in_a_posix_shell():
    done = subprocess.run(["sh", "-s"], input=PROBE_SCRIPT, capture_output=True, text=True, timeout=10, check=True)
    assert done.stdout.rstrip().endswith("@@vmlfs-probe:end")
    result = detect_release(parse_probe_output(done.stdout))
    assert result is None or parse_release(result).known


@pytest.mark.parametrize("recorded, found", [
    ("cernvm4 ucernvm=2021.05-1 os=4.5.0.0", "cernvm4 ucernvm=2021.05-1 os=4.5.0.0"),
    ("2021.05-1", "cernvm4 ucernvm=2021.05-1.cernvm.x86_64 os=4.5.0.0"),
    ("4.5.0.0", "cernvm4 ucernvm=2021.05-1 os=4.5.0.0"),
    (None, "cernvm4 os=4.5.0.0"),
])
def test_matching_releases(recorded, found):
    assert check_release(recorded, found, strict=True) is None


@pytest.mark.parametrize("recorded, found", [
    ("cernvm4 ucernvm=2021.05-1 os=4.5.0.0", "cernvm4 ucernvm=2021.05-1 os=4.4.0.0"),
    ("2020.07-1", "cernvm4 ucernvm=2021.05-1"),
    ("distro=ubuntu-22.04", "cernvm4 os=4.5.0.0"),
    ("cernvm4 os=4.5.0.0", None),
])
def test_different_or_unknown_release_warns_or_refuses(recorded, found):
    warning = check_release(recorded, found)
    assert warning and recorded in warning
    with pytest.raises(InvalidRequest, match="release"):
        check_release(recorded, found, strict=True)


@pytest.mark.parametrize("bad", ["os=../x", "foo=1", "ucernvm=", "cernvm4 $(id)"])
def test_malformed_recorded_release_is_refused(bad):
    with pytest.raises(InvalidRequest):
        parse_release(bad)
