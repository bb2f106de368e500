"""The case rule on its own, and the winfspy adapter over a fake winfspy."""

from __future__ import annotations

import sys

import pytest

from tests.fs.conftest import make_store
from tests.winfsp import fake_winfspy
from vmlfs.app.session import Session
from vmlfs.fs.control import Jobs
from vmlfs.fs.state import MountState
from winfsp_bridge import ntstatus as nt
from winfsp_bridge.bridge import Bridge
from winfsp_bridge.names import windows_names

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None


def test_suffix_rule():
    assert windows_names([b"makefile", b"Makefile"]) == {b"Makefile": "Makefile", b"makefile": "makefile~2"}
    assert windows_names([b"notes.txt", b"NOTES.txt", b"Notes.txt"]) == {
        b"NOTES.txt": "NOTES.txt", b"Notes.txt": "Notes~2.txt", b"notes.txt": "notes~3.txt"}
    # A suffixed name never takes an existing one: makefile~2 is a real file here, so the copy gets ~3.
    assert windows_names([b"Makefile", b"makefile", b"MAKEFILE~2"])[b"makefile"] == "makefile~3"
    assert windows_names([b".bashrc", b".BASHRC"])[b".bashrc"] == ".bashrc~2", "a leading dot is no extension"
    assert windows_names([b"a:b", b"A:B"]) == {b"A:B": "A\uf03aB", b"a:b": "a\uf03ab~2"}


if given is not None:
    @settings(max_examples=300, deadline=None)
    @given(st.sets(st.text("aAbB.:~2 ", min_size=1, max_size=6), max_size=12))
    def test_names_are_unique_without_case(names):
        raw = [n.encode() for n in names]
        shown = windows_names(raw)
        assert len({v.casefold() for v in shown.values()}) == len(raw)
        assert windows_names(list(reversed(raw))) == shown, "depends on the set only"


def test_adapter_over_a_fake_winfspy(tmp_path, monkeypatch):
    fake_winfspy.install(monkeypatch)
    from winfsp_bridge import adapter

    s = make_store(tmp_path)
    ts = s.backup()
    state = MountState(s.store(), Jobs(Session(str(s.store_path))))
    try:
        fs = adapter.mount(Bridge(state), "X:")
        ops = fs.operations
        assert fs.running and fs.params["read_only_volume"] == 1 and fs.params["case_sensitive_search"] == 0
        path = f"\\entries\\e1\\{ts}\\home\\src\\main.py"
        attributes, handle, size = ops.get_security_by_name(path)
        assert attributes & 0x1 and size == len(fake_winfspy.SecurityDescriptor.made[-1])
        ops.get_security_by_name(path)
        assert len(fake_winfspy.SecurityDescriptor.made) == 1, "one descriptor per distinct SDDL"
        ctx = ops.open(path, 0, 0x80000000)
        assert ops.read(ctx, 0, 14) == b"print('hello')"
        assert ops.get_file_info(ctx)["file_size"] == 750
        names = [e["file_name"] for e in ops.read_directory(ops.open(f"\\entries\\e1\\{ts}\\home\\src", 1, 0x80000000), None)]
        assert names == [".", "..", "deep", "main.py"]
        for call in (lambda: ops.open(path, 0, 0x40000000), lambda: ops.write(ctx, b"x", 0, False, False),
                     lambda: ops.rename(ctx, path, path + "2", False), lambda: ops.set_volume_label("x")):
            with pytest.raises(fake_winfspy.NTStatusError) as info:
                call()
            assert info.value.value == nt.STATUS_MEDIA_WRITE_PROTECTED
        with pytest.raises(fake_winfspy.NTStatusError) as info:
            ops.open(path + "x", 0, 0x80000000)
        assert info.value.value == nt.STATUS_OBJECT_NAME_NOT_FOUND
        ops.cleanup(ctx, path, 0)
        ops.close(ctx)
        fs.stop()
    finally:
        state.close()


def test_the_command_refuses_to_run_off_windows(capsys):
    from winfsp_bridge.__main__ import main

    if sys.platform == "win32":
        pytest.skip("on Windows it would mount")
    assert main(["X:"]) == 2
    assert "Windows only" in capsys.readouterr().err
