"""CernVM version strings: one ordering across the bootloader, OS and 2.x schemes; unsafe text refused."""

from __future__ import annotations

import pytest

from vmlfs.release.versions import compare_versions, parse_version
from vmlfs.errors import InvalidRequest


def test_bootloader_versions_order_across_numbering_schemes():
    ordered = ["1.16-3", "1.17-10", "2.7-1", "2.8-6", "3.1-1", "2018.06-4", "2020.07-1", "2021.05-1"]
    shuffled = [ordered[i] for i in (5, 2, 7, 0, 3, 6, 1, 4)]
    assert [str(v) for v in sorted(parse_version(t) for t in shuffled)] == ordered


@pytest.mark.parametrize("older, newer", [
    ("2.6.0-4-1", "2.7.1-2-3"), ("2.7.1-2-3", "2.7.2-1-2"), ("4.4.0.0", "4.5.0.0"), ("2.9.164.1", "2.9.166.0"),
    ("1.17-9", "1.17-10"), ("4.5.0.0", "4.5.0.1"),
])
def test_compare_versions(older, newer):
    assert compare_versions(older, newer) == -1
    assert compare_versions(newer, older) == 1
    assert compare_versions(newer, newer) == 0


def test_strong_version_keeps_arch_and_equals_plain():
    strong = parse_version("2021.05-1.cernvm.x86_64")
    assert (strong.text, strong.arch, strong.scheme) == ("2021.05-1", "x86_64", "bootloader")
    assert strong == parse_version("2021.05-1")
    assert not strong.same_build(parse_version("2021.05-1.cernvm.aarch64"))
    assert parse_version("2021.05-1").strong() == "2021.05-1.cernvm.x86_64"


@pytest.mark.parametrize("text, scheme", [("4.4.0.0", "os"), ("2.7.2-1-2", "cernvm2"), ("3.4.3", "other"), ("2.7-1", "bootloader")])
def test_schemes(text, scheme):
    assert parse_version(text).scheme == scheme


@pytest.mark.parametrize("bad", ["", "latest", "../../etc/x", "2021.05-1/x", "2021..05", "2021.05-", "-1",
                                 "2021.05-1.cernvm.sparc", "1 2", "1\0", "9" * 65, "2021.05-1\n.x"])
def test_invalid_versions_are_refused(bad):
    with pytest.raises(InvalidRequest):
        parse_version(bad)
