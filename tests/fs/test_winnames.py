"""The reversible mapping of guest names to names Windows can hold (vmlfs/fs/winnames.py)."""

from __future__ import annotations

import pytest

from vmlfs.fs.winnames import FORBIDDEN, from_windows, is_reserved, to_windows

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is optional
    given = None


def windows_accepts(name: str) -> bool:
    return (bool(name) and not any(c in FORBIDDEN for c in name) and name[-1] not in ". "
            and not is_reserved(name))


@pytest.mark.parametrize("guest, shown", [
    (b"plain.txt", "plain.txt"),
    (b"a:b", "a\uf03ab"),
    (b'q?"<>|*\\', "q\uf03f\uf022\uf03c\uf03e\uf07c\uf02a\uf05c"),
    (b"tab\there", "tab\uf009here"),
    (b"dots...", "dots..\uf02e"),
    (b"space ", "space\uf020"),
    (b"CON", "\uf043ON"),
    (b"nul.tar.gz", "\uf06eul.tar.gz"),
    (b"Com9", "\uf043om9"),
    (b"LPT1 .log", "\uf04cPT1 .log"),
    (b"CONSOLE", "CONSOLE"),
    (b"raw-\xff-name", "raw-\uf0ff-name"),
    ("caf\u00e9".encode(), "caf\u00e9"),
    ("\uf03a".encode(), "\uf0ef\uf080\uf0ba"),  # a real private-use name is escaped too: never confused
])
def test_examples_both_ways(guest, shown):
    assert to_windows(guest) == shown
    assert from_windows(shown) == guest
    assert windows_accepts(shown)


def test_unescaped_names_from_a_client_still_reach_the_guest_name():
    assert from_windows("a:b") == b"a:b"


if given is not None:
    @settings(max_examples=400, deadline=None)
    @given(st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")))
    def test_every_guest_name_maps_to_an_acceptable_name_and_back(name):
        shown = to_windows(name)
        assert from_windows(shown) == name
        assert windows_accepts(shown)

    @settings(max_examples=300, deadline=None)
    @given(st.text(min_size=1, max_size=20))
    def test_text_names_round_trip(text):
        name = text.encode("utf-8", "surrogatepass")
        if b"/" not in name and b"\0" not in name:
            assert from_windows(to_windows(name)) == name
