"""Which CernVM release a guest runs, from one shell probe, and whether it matches an entry (pure).

A µCernVM guest (CernVM 3/4) fixes two things: the *bootloader* it booted
from (``/mnt/.rw/aux/ucernvm-version``, e.g. ``2021.05-1.cernvm.x86_64``) and
the *OS* (``cernvm-system`` version, e.g. ``4.5.0.0``) pinned at first boot.
CernVM 5 has no bootloader and reports through ``cernvm_config version``.
There is no ``cernvm-version`` command; the sources are listed in docs/cernvm-facts.md §2.

The release is recorded as one canonical string of tokens, for example
``cernvm4 ucernvm=2021.05-1 os=4.5.0.0`` (CernVM 5: ``cernvm5 os=1.0.1``; not
CernVM: ``distro=ubuntu-22.04``). Users may also declare a bare version
(``2021.05-1`` or ``4.5.0.0``) for a local guest; :func:`parse_release`
accepts both, so :func:`check_release` compares what is known on both sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from vmlfs.release.versions import Version, parse_version
from vmlfs.errors import InvalidRequest

#: Run by the SSH guest in one round trip (``sh -s``); every probe tolerates absence
#: and is size-limited. Its output goes to :func:`parse_probe_output`.
PROBE_SCRIPT = r"""
p() { printf '\n@@vmlfs-probe:%s\n' "$1"; }
p ucernvm-version; head -c 256 /mnt/.rw/aux/ucernvm-version 2>/dev/null
p cvmfs-snapshot; head -c 512 /mnt/.rw/aux/cvmfs_snapshot 2>/dev/null
p installed-system; ls -1tr /.installed_cernvm-system-* 2>/dev/null | tail -n 1
p rpm-system; rpm -q cernvm-system 2>/dev/null
p cmdline; head -c 4096 /proc/cmdline 2>/dev/null
p cernvm-config; command -v cernvm_config >/dev/null 2>&1 && cernvm_config version 2>/dev/null | head -c 1024
p os-release; head -c 4096 /etc/os-release 2>/dev/null
p end
exit 0
""".lstrip()

PROBE_KEYS = ("ucernvm-version", "cvmfs-snapshot", "installed-system", "rpm-system", "cmdline", "cernvm-config", "os-release")
_MARK = re.compile(r"@@vmlfs-probe:([a-z-]+)")
_TOKEN = re.compile(r"[A-Za-z0-9._+~-]{1,64}")


def parse_probe_output(stdout: str) -> dict[str, str]:
    """Split :data:`PROBE_SCRIPT`'s output into ``{probe key: text}`` (absent probes omitted)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        mark = _MARK.fullmatch(line.strip())
        if mark:
            current = sections.setdefault(mark[1], []) if mark[1] in PROBE_KEYS else None
        elif current is not None:
            current.append(line)
    return {k: "\n".join(v).strip() for k, v in sections.items() if "\n".join(v).strip()}


@dataclass(frozen=True)
class GuestRelease:
    """What is known of a guest's release; each part may be unknown."""

    product: str | None = None
    ucernvm: Version | None = None
    os: Version | None = None
    distro: str | None = None

    def __str__(self) -> str:
        parts = [self.product or ""]
        parts += [f"ucernvm={self.ucernvm}"] if self.ucernvm else []
        parts += [f"os={self.os}"] if self.os else []
        parts += [f"distro={self.distro}"] if self.distro else []
        return " ".join(p for p in parts if p)

    @property
    def known(self) -> bool:
        return bool(self.product or self.ucernvm or self.os or self.distro)


def _version(text: str | None) -> Version | None:
    """A version read from the guest, or None when the guest's text is not one (never trusted)."""
    if not text:
        return None
    try:
        return parse_version(text.strip())
    except InvalidRequest:
        return None


def _os_version(probe: Mapping[str, str]) -> Version | None:
    if m := re.search(r"cernvm-system-([0-9][0-9.]*[0-9])-[0-9]", probe.get("rpm-system", "")):
        return _version(m[1])
    if m := re.search(r"installed_cernvm-system-([0-9][0-9.]*[0-9])\s*$", probe.get("installed-system", "")):
        return _version(m[1])
    snapshot = probe.get("cvmfs-snapshot", "").splitlines()
    if len(snapshot) > 1 and (m := re.fullmatch(r"cernvm-system-([0-9][0-9.]*[0-9])", snapshot[1].strip())):
        return _version(m[1])
    return None


def _os_release(text: str) -> str | None:
    fields = dict(re.findall(r"^([A-Z_]+)=\"?([^\"\n]*)\"?$", text, re.M))
    distro = "-".join(v for v in (fields.get("ID"), fields.get("VERSION_ID")) if v)
    return distro if distro and _TOKEN.fullmatch(distro) else None


def detect_release(probe: Mapping[str, str]) -> str | None:
    """The canonical release string of a guest from its probe outputs, or None if nothing is known.

    ``probe`` maps :data:`PROBE_KEYS` to the text each probe printed (see
    :func:`parse_probe_output`); missing keys mean the probe found nothing.
    """
    bootloader = _version(probe.get("ucernvm-version"))
    cmdline = dict(re.findall(r"(?:^|\s)(cernvm_path)=(\S+)", probe.get("cmdline", "")))
    config = dict(re.findall(r"^CernVM (System|Config|Kernel): *(\S+)", probe.get("cernvm-config", ""), re.M))
    os_version = _os_version(probe)
    product = None
    if config.get("System"):
        product, os_version = "cernvm5", _version(config["System"]) or os_version
    elif bootloader or os_version:
        path = cmdline.get("cernvm_path", "")
        major = path[3:] if re.fullmatch(r"cvm[345]", path) else (str(os_version.key[0][1]) if os_version else "")
        product = f"cernvm{major}" if major in ("3", "4") else None
    cernvm = bool(product or bootloader or os_version)
    release = GuestRelease(
        product,
        Version(bootloader.text, None, bootloader.key) if bootloader else None,
        os_version,
        None if cernvm else _os_release(probe.get("os-release", "")),
    )
    return str(release) if release.known else None


def parse_release(text: str) -> GuestRelease:
    """Parse a recorded release: canonical tokens or a bare version (``2021.05-1``, ``4.5.0.0``)."""
    product = distro = None
    ucernvm = os_version = None
    for token in text.split():
        key, _, value = token.partition("=")
        if not value:
            if re.fullmatch(r"cernvm[0-9]", key):
                product = key
                continue
            version = parse_version(key)
            if version.scheme == "os":
                os_version = version
            else:
                ucernvm = Version(version.text, None, version.key)
        elif key == "ucernvm":
            ucernvm = parse_version(value)
        elif key == "os":
            os_version = parse_version(value)
        elif key == "distro" and _TOKEN.fullmatch(value):
            distro = value
        else:
            raise InvalidRequest(f"invalid release {text!r}: unknown part {token!r}")
    return GuestRelease(product, ucernvm, os_version, distro)


def check_release(recorded: str | None, found: str | None, strict: bool = False) -> str | None:
    """Compare an entry's recorded release with the guest's; a warning, or None when they agree.

    Only parts known on both sides are compared. With ``strict`` a mismatch,
    or a guest whose release cannot be told, raises InvalidRequest instead.
    """
    if not recorded:
        return None
    hint = "use a guest of the recorded release, or drop --strict-release to go ahead anyway"
    if not found:
        message = f"cannot tell the guest's CernVM release; the entry records {recorded}"
        if strict:
            raise InvalidRequest(message, hint=hint)
        return message
    want, have = parse_release(recorded), parse_release(found)
    pairs = [(w, h) for w, h in ((want.product, have.product), (want.ucernvm, have.ucernvm),
                                 (want.os, have.os), (want.distro, have.distro)) if w and h]
    if pairs and all(w == h for w, h in pairs):
        return None
    reason = "differs from" if pairs else "cannot be compared with"
    message = f"the guest runs release {found}, which {reason} the recorded {recorded}"
    if strict:
        raise InvalidRequest(message, hint=hint)
    return message
