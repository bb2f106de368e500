"""URI policy and connection errors: insecure URIs refused, unreachable daemons reported clearly."""

from __future__ import annotations

import logging

import pytest

from vmlfs.errors import ConnectionFailed, InvalidRequest, NotFound
from vmlfs.hypervisor import check_uri, connect, lookup_domain, open_connection


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu:///session",
        "test:///default",
        "xen:///system",
        "qemu+ssh://admin@host.example/system",
        "qemu+libssh2://host.example/system?known_hosts_verify=normal",
        "qemu+tls://host.example/system",
        "qemu+tls://host.example/system?no_verify=0",
        "esx://esx.example/?transport=https",
        "qemu+unix:///system?socket=/run/libvirt/libvirt-sock",
    ],
)
def test_secure_uris_pass(uri: str) -> None:
    assert check_uri(uri) == uri


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("qemu+tcp://host.example/system", "+tcp"),
        ("xen+tcp://host.example/", "+tcp"),
        ("qemu+tls://host.example/system?no_verify=1", "no_verify=1"),
        ("esx://esx.example/?no_verify=1", "no_verify=1"),
        ("qemu+ssh://host.example/system?NO_VERIFY=1", "no_verify=1"),
        ("qemu+libssh2://host.example/system?known_hosts_verify=ignore", "known_hosts_verify=ignore"),
        ("qemu+libssh://host.example/system?known_hosts_verify=auto", "known_hosts_verify=auto"),
        ("esx://esx.example/?transport=http", "transport=http"),
    ],
)
def test_insecure_uris_refused_unless_insecure(uri: str, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_uri(uri)
    assert reason in str(info.value)
    assert "--insecure" in info.value.hint
    with pytest.raises(InvalidRequest):
        connect(uri)  # refused before any network traffic
    with caplog.at_level(logging.WARNING):
        assert check_uri(uri, insecure=True) == uri
    assert reason in caplog.text


@pytest.mark.parametrize(
    "uri",
    ["", "qemu:///sys tem", "qemu:///system\n", "not a uri", "-oProxyCommand=x", "qemu+ssh://-oProxyCommand=x/system", "qemu+ssh://-l@host/system"],
)
def test_malformed_or_option_like_uris_refused_even_with_insecure(uri: str) -> None:
    with pytest.raises(InvalidRequest):
        check_uri(uri, insecure=True)


def test_unreachable_daemon_is_a_clear_connection_error(tmp_path) -> None:
    uri = f"qemu+unix:///system?socket={tmp_path}/no-such-socket"
    with pytest.raises(ConnectionFailed) as info:
        connect(uri)
    assert "cannot connect to libvirt" in str(info.value) and "no-such-socket" in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 10


def test_lookup_by_name_or_uuid_and_missing_domain() -> None:
    with open_connection("test:///default") as conn:
        dom = lookup_domain(conn, "test")
        assert lookup_domain(conn, dom.UUIDString()).name() == "test"
        with pytest.raises(NotFound, match="no domain 'absent'"):
            lookup_domain(conn, "absent")
        with pytest.raises(NotFound):
            lookup_domain(conn, "00000000-0000-0000-0000-000000000000")
        with pytest.raises(InvalidRequest):
            lookup_domain(conn, "bad\x1bname")
