"""Connect to a hypervisor by libvirt URI and speak vmlfs errors.

One code path serves every libvirt driver (QEMU/KVM, Xen, ESX, the test
driver): the URI picks it. Before connecting, :func:`check_uri` refuses URIs
that turn off verification or travel unencrypted unless the caller passed
``insecure=True`` (the CLI's ``--insecure``). Every libvirt call goes through
:func:`libvirt_errors`, so callers only ever see :mod:`vmlfs.errors` classes,
each with libvirt's reason on one line.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import libvirt

from vmlfs.errors import (
    Busy,
    ConnectionFailed,
    HypervisorError,
    InvalidRequest,
    NotFound,
    VmlfsError,
)

log = logging.getLogger(__name__)


_SCHEME = re.compile(r"[a-z][a-z0-9]*(\+[a-z0-9]+)?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
# Drivers that talk HTTP(S) to the hypervisor and accept ?transport=http.
_HTTP_DRIVERS = {"esx", "gsx", "vpx", "hyperv"}

_NOT_FOUND = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT, libvirt.VIR_ERR_NO_NETWORK}
_CONNECTION = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
}

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended (power management)",
}


def one_line(text: str) -> str:
    """Collapse a (possibly multi-line, driver-supplied) message to one printable line."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def insecurities(uri: str) -> list[str]:
    """Why ``uri`` is insecure (no verification, no encryption); empty if it is not.

    Raises InvalidRequest for URIs that are malformed or could be read as
    options by ssh (a host or user starting with '-'); ``--insecure`` does
    not lift that.
    """
    if not uri or any(ord(c) < 0x21 or c == "\x7f" for c in uri):
        raise InvalidRequest(f"invalid libvirt URI {uri!r}: empty or contains spaces or control characters")
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.lower()
    if not _SCHEME.fullmatch(scheme):
        raise InvalidRequest(f"invalid libvirt URI {uri!r}", hint="expected DRIVER[+TRANSPORT]://[USER@]HOST/PATH, e.g. qemu:///system")
    if (parts.hostname or "").startswith("-") or (parts.username or "").startswith("-"):
        raise InvalidRequest(f"invalid libvirt URI {uri!r}: host or user starts with '-'")
    driver, _, transport = scheme.partition("+")
    reasons = []
    if transport == "tcp":
        reasons.append("'+tcp' is a plain, unencrypted TCP transport")
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        key, value = key.lower(), value.strip().lower()
        if key == "no_verify" and value not in ("", "0"):
            reasons.append(f"'no_verify={value}' turns off certificate or host-key verification")
        elif key == "known_hosts_verify" and value in ("ignore", "auto"):
            reasons.append(f"'known_hosts_verify={value}' accepts unknown SSH host keys")
        elif key == "transport" and value == "http" and driver in _HTTP_DRIVERS:
            reasons.append("'transport=http' is unencrypted")
    return reasons


def check_uri(uri: str, *, insecure: bool = False) -> str:
    """Return ``uri`` if vmlfs may connect to it; refuse insecure ones unless ``insecure``."""
    reasons = insecurities(uri)
    if reasons and not insecure:
        raise InvalidRequest(
            f"refusing insecure libvirt URI {uri!r}: {'; '.join(reasons)}",
            hint="pass --insecure if you accept that risk",
        )
    for reason in reasons:
        log.warning("insecure libvirt URI accepted (--insecure): %s", reason)
    return uri


def _silence(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; vmlfs reports them itself."""


def translate(exc: libvirt.libvirtError, action: str) -> VmlfsError:
    """The vmlfs error for a libvirt error raised while doing ``action``."""
    code = exc.get_error_code()
    message = one_line(exc.get_error_message() or str(exc))
    text = f"{action}: {message}"
    if code in _NOT_FOUND:
        return NotFound(text)
    if code in _CONNECTION or (code == libvirt.VIR_ERR_SYSTEM_ERROR and exc.get_error_domain() == libvirt.VIR_FROM_RPC):
        return ConnectionFailed(text, hint="is libvirtd running, and may you use its socket? see --libvirt-uri")
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return Busy(text)
    return HypervisorError(text)


@contextmanager
def libvirt_errors(action: str) -> Iterator[None]:
    """Translate any libvirtError raised inside into a vmlfs error about ``action``."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc, action) from exc


def connect(uri: str, *, insecure: bool = False) -> libvirt.virConnect:
    """Open a libvirt connection to ``uri``; the caller closes it (or use :func:`open_connection`)."""
    check_uri(uri, insecure=insecure)
    libvirt.registerErrorHandler(_silence, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        message = one_line(exc.get_error_message() or str(exc))
        raise ConnectionFailed(
            f"cannot connect to libvirt at {uri}: {message}",
            hint="is libvirtd (or virtqemud) running, and may you use its socket? see --libvirt-uri / VMLFS_LIBVIRT_URI",
        ) from exc


@contextmanager
def open_connection(uri: str, *, insecure: bool = False) -> Iterator[libvirt.virConnect]:
    """:func:`connect`, closed on exit."""
    conn = connect(uri, insecure=insecure)
    try:
        yield conn
    finally:
        try:
            conn.close()
        except libvirt.libvirtError as exc:
            log.debug("closing libvirt connection: %s", exc)


def lookup_domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    """The domain called ``name`` (or with that UUID); NotFound otherwise."""
    if not name or not name.isprintable():
        raise InvalidRequest(f"invalid domain name {name!r}")
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise translate(exc, f"looking up domain {name!r}") from exc
    if _UUID.fullmatch(name):
        with libvirt_errors(f"looking up domain {name!r}"):
            try:
                return conn.lookupByUUIDString(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
    raise NotFound(f"no domain {name!r} at {conn.getURI()}", hint="see 'vmlfs vm list'")


def domain_state(domain: libvirt.virDomain) -> str:
    """The domain's state as a word: running, paused, shut off, ..."""
    with libvirt_errors(f"reading the state of domain {domain.name()!r}"):
        state, _reason = domain.state()
    return _STATES.get(state, f"state {state}")


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    state: str
    persistent: bool
    snapshots: int | None
    """How many snapshots it has; None where the driver has no snapshots (e.g. some ESX setups)."""


def list_domains(conn: libvirt.virConnect) -> list[DomainInfo]:
    """All domains, running or defined, sorted by name."""
    with libvirt_errors("listing domains"):
        domains = conn.listAllDomains(0)
    result = []
    for dom in domains:
        with libvirt_errors(f"reading domain {dom.name()!r}"):
            try:
                count: int | None = dom.snapshotNum(0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED):
                    raise
                count = None
            info = DomainInfo(dom.name(), dom.UUIDString(), domain_state(dom), bool(dom.isPersistent()), count)
        result.append(info)
    return sorted(result, key=lambda d: d.name)


def define_and_start(conn: libvirt.virConnect, xml: str, name: str) -> libvirt.virDomain:
    """Define a persistent domain from ``xml`` and start it; a start that fails undefines it again.

    A start refused because QEMU cannot use KVM (libvirt may offer KVM that
    the user QEMU runs as cannot open, or a nested hypervisor refuses it) is
    retried once under TCG: slower, but the domain runs.
    """
    for attempt in (xml, _as_tcg(xml)):
        with libvirt_errors(f"defining domain {name!r}"):
            dom = conn.defineXML(attempt)
        try:
            with libvirt_errors(f"starting domain {name!r}"):
                dom.create()
            return dom
        except BaseException as exc:
            with libvirt_errors(f"undefining domain {name!r} after a failed start"):
                dom.undefine()
            if attempt is xml and isinstance(exc, VmlfsError) and "kvm" in exc.message.lower() and _as_tcg(xml) != xml:
                log.warning("domain %r did not start with KVM (%s); starting it under TCG emulation", name, exc.message)
                continue
            raise
    raise AssertionError("unreachable: the TCG attempt returns or raises")


def remove_domain(dom: libvirt.virDomain) -> None:
    """Stop ``dom`` if it runs and undefine it with its snapshot metadata (the volumes are the caller's)."""
    name = dom.name()
    with libvirt_errors(f"removing domain {name!r}"):
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


def _as_tcg(xml: str) -> str:
    return xml.replace("<domain type='kvm'", "<domain type='qemu'", 1).replace('<domain type="kvm"', '<domain type="qemu"', 1)


def watch_running(dom: libvirt.virDomain, console: Callable[[], str] = lambda: "") -> None:
    """Raise HypervisorError at once if ``dom`` is not running (paused, crashed, shut off), with its
    state's reason and ``console()``: the last lines of its console, for what the guest said."""
    with libvirt_errors(f"reading the state of domain {dom.name()!r}"):
        state, reason = dom.state()
    if state == libvirt.VIR_DOMAIN_RUNNING:
        return
    tail = console().strip()
    raise HypervisorError(f"domain {dom.name()!r} is {_STATES.get(state, f'in state {state}')} (reason {reason})"
                          + (f"; its console ended with:\n{tail}" if tail else "; its console log is empty"),
                          hint=f"see 'virsh -c {conn_uri(dom)} dominfo {dom.name()}' and its QEMU log")


def conn_uri(dom: libvirt.virDomain) -> str:
    try:
        return dom.connect().getURI()
    except libvirt.libvirtError:
        return "URI"


def domain_address(dom: libvirt.virDomain) -> tuple[str, int]:
    """The guest's IPv4 address from libvirt's DHCP leases (or its guest agent), port 22."""
    for source in (libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT):
        try:
            interfaces = dom.interfaceAddresses(source)
        except libvirt.libvirtError:
            continue
        for iface in interfaces.values():
            for addr in iface.get("addrs") or []:
                if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and not addr["addr"].startswith("127."):
                    return addr["addr"], 22
    raise ConnectionFailed("the guest has no address yet")
