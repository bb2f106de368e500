"""``vmlfs vm ...`` as a user runs it (subprocess), against libvirt's test driver.

Each call opens its own connection, so every call starts from the seeded tree
in conftest.NODE_XML; what a command changed is checked through its output.
"""

from __future__ import annotations

import pytest

from tests.conftest import Vmlfs


def vm(vmlfs: Vmlfs, uri: str, *args: str, check: bool = True):
    return vmlfs.run("vm", "--libvirt-uri", uri, *args, check=check)


def out(proc) -> str:
    return proc.stdout.decode()


def err_lines(proc) -> list[str]:
    return proc.stderr.decode().strip().splitlines()


def test_list_uses_env_uri(vmlfs: Vmlfs, node_uri: str) -> None:
    vmlfs.env["VMLFS_LIBVIRT_URI"] = node_uri
    assert out(vmlfs.run("vm", "list")).splitlines() == ["NAME  STATE         SNAPSHOTS", "cvm   running       4"]


def test_snapshots_drawn_as_tree(vmlfs: Vmlfs, node_uri: str) -> None:
    assert out(vm(vmlfs, node_uri, "snapshots", "cvm")) == (
        "base                  2023-11-14 22:13:20Z  running  fresh install\n"
        "├── child             2023-11-14 22:15:00Z  shutoff\n"
        "│   └── grandchild *  2023-11-14 22:18:20Z  running\n"
        "└── sibling           2023-11-14 22:16:40Z  running\n"
        "(* current snapshot)\n"
    )


def test_snapshot_create_with_options(vmlfs: Vmlfs, node_uri: str) -> None:
    proc = vm(vmlfs, node_uri, "snapshot", "cvm", "--name", "pre-upgrade", "--description", "before 2024.1", "--halt", "--atomic")
    assert out(proc) == "created snapshot 'pre-upgrade' of domain 'cvm' (running)\n"
    assert out(vm(vmlfs, "test:///default", "snapshot", "test")).startswith("created snapshot 'vmlfs-")


def test_refused_flag_is_one_line_with_the_reason(vmlfs: Vmlfs, node_uri: str) -> None:
    proc = vm(vmlfs, node_uri, "snapshot", "cvm", "--name", "d", "--disk-only", check=False)
    assert proc.returncode == 11
    assert err_lines(proc) == [
        "vmlfs: error: creating snapshot 'd' of domain 'cvm': unsupported flags (0x10) in function testDomainSnapshotCreateXML"
    ]


def test_revert_reports_resulting_state(vmlfs: Vmlfs, node_uri: str) -> None:
    assert out(vm(vmlfs, node_uri, "revert", "cvm", "base", "--paused")) == "reverted domain 'cvm' to snapshot 'base'; it is now paused\n"
    assert out(vm(vmlfs, node_uri, "revert", "cvm", "child")).endswith("it is now shut off\n")
    assert out(vm(vmlfs, node_uri, "revert", "cvm", "base", "--running", "--force")).endswith("it is now running\n")
    proc = vm(vmlfs, node_uri, "revert", "cvm", "base", "--running", "--paused", check=False)
    assert proc.returncode == 2 and "mutually exclusive" in proc.stderr.decode()


def test_delete_variants(vmlfs: Vmlfs, node_uri: str) -> None:
    assert out(vm(vmlfs, node_uri, "delete", "cvm", "sibling")) == "deleted 'sibling' of domain 'cvm'\n"
    assert out(vm(vmlfs, node_uri, "delete", "cvm", "child", "--children")) == "deleted 'child', 'grandchild' of domain 'cvm'\n"
    assert out(vm(vmlfs, node_uri, "delete", "cvm", "base", "--children-only")) == (
        "deleted 'child', 'grandchild', 'sibling' of domain 'cvm'\n"
    )
    assert out(vm(vmlfs, node_uri, "delete", "cvm", "sibling", "--children-only")) == (
        "deleted nothing (no descendants) of domain 'cvm'\n"
    )
    proc = vm(vmlfs, node_uri, "delete", "cvm", "base", "--metadata-only", check=False)
    assert proc.returncode == 11 and "unsupported flags (0x2)" in proc.stderr.decode()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("snapshots", "nope"), 3, "vmlfs: error: no domain 'nope' at "),
        (("revert", "cvm", "nope"), 3, "vmlfs: error: snapshot 'nope' of domain 'cvm': Domain snapshot not found"),
        (("snapshot", "cvm", "--name", "../evil"), 2, "vmlfs: error: invalid snapshot name '../evil'"),
    ],
)
def test_errors_are_one_line_with_exit_codes(vmlfs: Vmlfs, node_uri: str, args: tuple, code: int, message: str) -> None:
    proc = vm(vmlfs, node_uri, *args, check=False)
    assert proc.returncode == code
    assert err_lines(proc)[0].startswith(message)
    assert "Traceback" not in proc.stderr.decode()


def test_insecure_uri_refused_unless_insecure(vmlfs: Vmlfs) -> None:
    proc = vmlfs.run("vm", "--libvirt-uri", "qemu+tcp://127.0.0.1:1/system", "list", check=False)
    assert proc.returncode == 2
    assert err_lines(proc) == [
        "vmlfs: error: refusing insecure libvirt URI 'qemu+tcp://127.0.0.1:1/system': '+tcp' is a plain, unencrypted TCP transport",
        "vmlfs: hint: pass --insecure if you accept that risk",
    ]
    # With --insecure the policy lets it through and the (closed) port gives a connection error.
    proc = vmlfs.run("vm", "--libvirt-uri", "qemu+tcp://127.0.0.1:1/system", "--insecure", "list", check=False)
    assert proc.returncode == 10
    assert err_lines(proc)[0] == "vmlfs: insecure libvirt URI accepted (--insecure): '+tcp' is a plain, unencrypted TCP transport"
    assert err_lines(proc)[1].startswith("vmlfs: error: cannot connect to libvirt at qemu+tcp://127.0.0.1:1/system: ")


def test_unreachable_libvirtd(vmlfs: Vmlfs, tmp_path) -> None:
    proc = vmlfs.run("vm", "--libvirt-uri", f"qemu+unix:///system?socket={tmp_path}/gone.sock", "list", check=False)
    assert proc.returncode == 10
    assert len([line for line in err_lines(proc) if line.startswith("vmlfs: error:")]) == 1
    assert "vmlfs: hint: is libvirtd" in proc.stderr.decode()


def drawn(proc) -> list[str]:
    """The snapshot names of a drawn tree, in drawing order."""
    import re

    return [re.match(r"[│├└─ ]*([A-Za-z0-9._:+@-]+)", line)[1] for line in out(proc).splitlines() if not line.startswith("(")]


def test_snapshot_listing_filters_and_family(vmlfs: Vmlfs, node_uri: str) -> None:
    assert drawn(vm(vmlfs, node_uri, "snapshots", "cvm", "--roots")) == ["base"]
    assert drawn(vm(vmlfs, node_uri, "snapshots", "cvm", "--leaves")) == ["sibling", "grandchild"]
    assert drawn(vm(vmlfs, node_uri, "snapshots", "cvm", "--no-leaves")) == ["base", "child"]
    assert drawn(vm(vmlfs, node_uri, "snapshots", "cvm", "--descendants", "base")) == ["child", "grandchild", "sibling"]
    assert out(vm(vmlfs, node_uri, "snapshots", "cvm", "--descendants", "current")).startswith("no snapshots")  # a leaf
    assert out(vm(vmlfs, node_uri, "show", "cvm", "child")) == "snapshot: child\nparent:   base\nchildren: grandchild\n"
    assert out(vm(vmlfs, node_uri, "show", "cvm", "base")) == "snapshot: base\nparent:   -\nchildren: child, sibling\n"
    assert "<name>child</name>" in out(vm(vmlfs, node_uri, "show", "cvm", "child", "--xml"))


def test_redefine_gives_libvirt_back_a_record(vmlfs: Vmlfs, tmp_path) -> None:
    """On one connection (the test driver keeps state per connection): take, dump, delete, redefine as current."""
    from vmlfs.app.session import Session
    from vmlfs.app.vm import delete_vm_snapshot, redefine_vm_snapshot, take_vm_snapshot, vm_snapshot_details, vm_snapshots

    session = Session(str(tmp_path / "store"), libvirt_uri="test:///default")
    try:
        take_vm_snapshot(session, "test", "first", "one")
        take_vm_snapshot(session, "test", "", "two")
        xml = vm_snapshot_details(session, "test", "two")[2]
        assert delete_vm_snapshot(session, "test", "two") == ["two"]
        assert [s.name for s in vm_snapshots(session, "test")] == ["one"]
        back = redefine_vm_snapshot(session, "test", xml.encode(), current=True)
        assert back.name == "two" and back.current and back.parent == "one"
        with pytest.raises(Exception, match="not a libvirt snapshot description"):
            redefine_vm_snapshot(session, "test", b"<domain><name>x</name></domain>")
    finally:
        session.close()
