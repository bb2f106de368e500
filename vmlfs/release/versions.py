"""CernVM version strings: parsing, validation and ordering (pure).

CernVM numbers its artefacts in several schemes (docs/cernvm-facts.md §1.5):

* µCernVM bootloader ``1.16-3``, ``2.7-1``, ``2018.06-4``, ``2021.05-1``;
  the *strong* form adds ``.cernvm.<arch>``: ``2021.05-1.cernvm.x86_64``;
* the OS (``cernvm-system`` RPM) ``MAJOR.MINOR.BUILD.SECURITY``: ``4.4.0.0``;
* CernVM 2.x images ``2.7.2-1-2``; CernVM 3 product names ``3.4.3``.

All of them order correctly when split at ``.`` and ``-`` and compared as
integer tuples (``2018.06`` > ``3.1`` because 2018 > 3), so one comparison
serves every scheme. Non-numeric parts sort after numbers, as strings.

Versions become path components (cache directories, file names) and URL
parts, so :func:`parse_version` only accepts ``[0-9A-Za-z]`` runs separated by
single ``.``/``-``: no ``/``, no ``..``, no empty parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

from vmlfs.errors import InvalidRequest

ARCHES = ("x86_64", "aarch64", "i386", "i686")
_CORE = re.compile(r"[0-9]+(?:[.-][0-9A-Za-z]+){0,9}")
_STRONG = re.compile(r"(?P<core>.+)\.cernvm\.(?P<arch>[A-Za-z0-9_]+)")
_BOOTLOADER = re.compile(r"[0-9]+\.[0-9]+-[0-9]+")
_OS = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_CERNVM2 = re.compile(r"2\.[0-9]+\.[0-9]+-[0-9]+-[0-9]+")
MAX_LENGTH = 64


@total_ordering
@dataclass(frozen=True)
class Version:
    """One parsed CernVM version; ``arch`` is set only for strong versions.

    Equality and ordering use the numeric key only, so ``2021.05-1`` equals
    ``2021.05-1.cernvm.x86_64``; use :meth:`same_build` to compare arches too.
    """

    text: str
    arch: str | None = field(default=None, compare=False)
    key: tuple[tuple[int, int, str], ...] = field(default=(), repr=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __str__(self) -> str:
        return self.text

    @property
    def scheme(self) -> str:
        """'bootloader', 'os', 'cernvm2' or 'other' (e.g. a product name ``3.4.3``)."""
        if _BOOTLOADER.fullmatch(self.text):
            return "bootloader"
        if _OS.fullmatch(self.text):
            return "os"
        if _CERNVM2.fullmatch(self.text):
            return "cernvm2"
        return "other"

    def strong(self, arch: str | None = None) -> str:
        """The strong version ``<version>.cernvm.<arch>`` used in µCernVM names."""
        chosen = check_arch(arch or self.arch or "x86_64")
        return f"{self.text}.cernvm.{chosen}"

    def same_build(self, other: Version) -> bool:
        """Equal versions and, when both name one, the same architecture."""
        return self == other and (self.arch is None or other.arch is None or self.arch == other.arch)


def _part_key(part: str) -> tuple[int, int, str]:
    return (0, int(part), "") if part.isdigit() else (1, 0, part)


def check_arch(arch: str) -> str:
    if arch not in ARCHES:
        raise InvalidRequest(f"unknown architecture {arch!r}", hint=f"use one of {', '.join(ARCHES)}")
    return arch


def parse_version(text: str) -> Version:
    """Parse and validate a CernVM version (plain or strong), else raise InvalidRequest."""
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        raise InvalidRequest(f"invalid CernVM version {str(text)[:80]!r}")
    core, arch = text.strip(), None
    strong = _STRONG.fullmatch(core)
    if strong:
        core, arch = strong["core"], check_arch(strong["arch"])
    if not _CORE.fullmatch(core):
        raise InvalidRequest(
            f"invalid CernVM version {text!r}",
            hint="expected e.g. 2021.05-1, 2021.05-1.cernvm.x86_64, 4.4.0.0 or 2.7.2-1-2",
        )
    key = tuple(_part_key(p) for p in re.split(r"[.-]", core))
    return Version(core, arch, key)


def compare_versions(a: str | Version, b: str | Version) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b``."""
    va = a if isinstance(a, Version) else parse_version(a)
    vb = b if isinstance(b, Version) else parse_version(b)
    return (va > vb) - (va < vb)

