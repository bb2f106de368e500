"""The CernVM release catalog: bytes from a release repository → typed, validated records (pure).

Two repository forms are understood (docs/cernvm.md):

* ``catalog.json`` (format ``vmlfs-cernvm-catalog`` version 1): a site-hosted
  index with paths, sizes and sha256 of every image;
* the real cernvm.cern.ch layout, which has no index: a directory
  ``ucernvm-images.<V>.cernvm.<arch>/`` per release holding
  ``ucernvm-<branch>.<V>.cernvm.<arch>.<format>`` and a ``<file>.sha256`` next to
  each image, a plain-text ``latest``, and HTML listings (``list.html`` made by
  ``tree -H``, or a web server's index) from which versions and files are read.

Everything read here comes from the network. Any name that will become a
local path or a URL part passes :func:`safe_name` (and :mod:`vmlfs.names`):
a listing entry such as ``../../etc/x`` is never turned into a path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

from vmlfs import names
from vmlfs.release.versions import Version, check_arch, parse_version
from vmlfs.errors import (
    CorruptData,
    InvalidRequest,
    NotFound,
    UnsafePath,
    UnsupportedVersion,
)

CATALOG_FORMAT, CATALOG_VERSION = "vmlfs-cernvm-catalog", 1
#: Image formats, best first for libvirt: a qcow2 or raw disk boots alone; an ISO needs a blank disk.
FORMATS = ("qcow2", "hdd", "raw", "iso", "vmdk", "vdi", "vhd", "fat", "hvm", "tar.gz", "ova", "box", "ext3")
COMPRESSIONS = {"gz": "gzip", "bz2": "bzip2", "xz": "xz"}
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")
_IMAGE_DIR = re.compile(r"ucernvm-images\.(?P<strong>.+\.cernvm\.[a-z0-9_]+)")
_FMT = "|".join(re.escape(f) for f in sorted(FORMATS, key=len, reverse=True))
_UCERNVM = re.compile(rf"ucernvm-(?P<branch>[a-z0-9]+)\.(?P<strong>.+\.cernvm\.[a-z0-9_]+)\.(?P<fmt>{_FMT})")
_MICRO = re.compile(rf"cernvm(?P<gen>[34])-micro-(?P<version>[0-9][0-9.-]*[0-9])\.(?P<fmt>{_FMT})")
_CERNVM2 = re.compile(
    rf"cernvm-(?P<edition>[a-z-]+)-(?P<version>2\.[0-9]+\.[0-9]+-[0-9]+-[0-9]+)-(?P<arch>x86_64|x86)\.(?P<fmt>{_FMT})(?:\.(?P<comp>gz|bz2|xz))?"
)
_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")


def safe_name(name: str) -> str:
    """Return ``name`` if it may be one local file name, else raise UnsafePath."""
    if not isinstance(name, str) or not _SAFE.fullmatch(name) or ".." in name:
        raise UnsafePath(f"unsafe name from the release repository: {str(name)[:80]!r}")
    names.component(name.encode())
    return name


def image_dir_name(version: Version, arch: str) -> str:
    """The real layout's release directory, ``ucernvm-images.<V>.cernvm.<arch>``."""
    return safe_name(f"ucernvm-images.{version.strong(arch)}")


@dataclass(frozen=True)
class ImageFile:
    """One downloadable file of a release; ``path`` is relative to the repository URL."""

    format: str
    path: str
    sha256: str | None = None
    size: int | None = None
    compression: str | None = None
    url: str | None = None

    @property
    def filename(self) -> str:
        return safe_name(self.path.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class Release:
    """A release in a repository or on disk: version, architecture and its files (best format first)."""

    version: Version
    arch: str = "x86_64"
    product: str | None = None
    kind: str = "ucernvm"
    branch: str | None = None
    channel: str | None = None
    files: tuple[ImageFile, ...] = ()

    @property
    def cache_dir(self) -> str:
        """The directory name a fetched image of this release is kept under: ``<V>.<arch>``."""
        return safe_name(f"{self.version}.{self.arch}")


@dataclass(frozen=True)
class Catalog:
    """What a repository lists; ``latest`` is the repository's newest-release pointer, if any."""

    releases: tuple[Release, ...]
    latest: Version | None = None
    channels: dict[str, dict[str, str]] = field(default_factory=dict)
    source: str = ""

    def find(self, version: Version, arch: str = "x86_64") -> Release:
        for release in self.releases:
            if release.version.same_build(version) and release.arch == arch:
                return release
        known = ", ".join(str(r.version) for r in sorted(self.releases, key=lambda r: r.version, reverse=True)[:8])
        raise NotFound(
            f"CernVM release {version} ({arch}) is not in {self.source or 'the release repository'}",
            hint=f"known releases: {known}" if known else "the repository lists no releases",
        )


def format_order(fmt: str) -> int:
    return FORMATS.index(fmt) if fmt in FORMATS else len(FORMATS)


@dataclass(frozen=True)
class ImageName:
    """What an image file name says about itself."""

    version: Version
    arch: str
    format: str
    branch: str | None = None
    compression: str | None = None


def match_image_name(name: str) -> ImageName | None:
    """Recognise a CernVM image file name (µCernVM, production link, 2.x), or None if it is no image."""
    if not _SAFE.fullmatch(name):
        return None
    if m := _UCERNVM.fullmatch(name):
        version = parse_version(m["strong"])
        return ImageName(version, version.arch or "x86_64", m["fmt"], branch=m["branch"])
    if m := _MICRO.fullmatch(name):
        return ImageName(parse_version(m["version"]), "x86_64", m["fmt"], branch=f"v{m['gen']}prod")
    if m := _CERNVM2.fullmatch(name):
        arch = "x86_64" if m["arch"] == "x86_64" else "i386"
        return ImageName(parse_version(m["version"]), arch, m["fmt"], compression=COMPRESSIONS.get(m["comp"] or ""))
    return None


def parse_sha256_file(data: bytes, filename: str) -> str:
    """The hash of a ``.sha256`` file: ``<hex>`` or ``sha256sum``'s ``<hex>  [*]<dir>/<file>``."""
    tokens = data.decode("ascii", "replace").split()
    if not tokens or not _SHA256.fullmatch(tokens[0]):
        raise CorruptData(f"checksum file for {filename} holds no sha256: {data[:80]!r}")
    if len(tokens) > 1 and tokens[1].lstrip("*").rsplit("/", 1)[-1] != filename:
        raise CorruptData(f"checksum file for {filename} names another file: {tokens[1][:80]!r}")
    return tokens[0].lower()


def parse_latest(data: bytes) -> Version:
    """The ``latest`` pointer: one version, only ``0-9 . - a b`` (as libcernvm accepts)."""
    text = data.decode("ascii", "replace").strip()
    if not re.fullmatch(r"[0-9.\-ab]{1,32}", text):
        raise CorruptData(f"the repository's 'latest' is not a version: {text[:80]!r}")
    return parse_version(text)


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


@dataclass(frozen=True)
class Listing:
    """Names linked from an HTML listing; ``rejected`` are links that are not one safe name."""

    names: tuple[str, ...]
    rejected: tuple[str, ...]


def parse_listing(data: bytes, base_url: str) -> Listing:
    """Names of the entries directly inside ``base_url`` linked from an HTML listing.

    Works for ``tree -H`` output (absolute links under the base) and server
    indexes (relative links). Links elsewhere (parent, sorting, other hosts)
    are ignored; links inside the base that are not one safe name
    (``a/b``, ``../x``, ``%2e%2e``) are rejected, never returned as names.
    """
    parser = _Anchors()
    parser.feed(data.decode("utf-8", "replace"))
    base = base_url if base_url.endswith("/") else base_url + "/"
    found: list[str] = []
    rejected: list[str] = []
    for href in parser.hrefs:
        target = urljoin(base, href).split("#", 1)[0]
        if "?" in target or not target.startswith(base) or target == base:
            continue
        name = unquote(target[len(base):]).removesuffix("/")
        try:
            safe_name(name)
        except UnsafePath:
            rejected.append(href)
            continue
        if name not in found:
            found.append(name)
    return Listing(tuple(found), tuple(rejected))


def releases_from_listing(listing: Listing) -> list[Release]:
    """Release directories (``ucernvm-images.<V>.cernvm.<arch>``) named by a root listing, newest first."""
    releases = []
    for name in listing.names:
        if m := _IMAGE_DIR.fullmatch(name):
            try:
                version = parse_version(m["strong"])
            except InvalidRequest:
                continue
            releases.append(Release(version, version.arch or "x86_64", branch=None))
    return sorted(releases, key=lambda r: r.version, reverse=True)


def files_from_listing(release: Release, listing: Listing) -> Release:
    """``release`` with the images its directory listing shows, best format and ``prod`` branch first."""
    files = []
    directory = image_dir_name(release.version, release.arch)
    for name in listing.names:
        image = match_image_name(name)
        if image and image.version.same_build(release.version) and image.arch == release.arch:
            files.append((format_order(image.format), image.branch != "prod", ImageFile(image.format, f"{directory}/{name}")))
    return replace(release, files=tuple(f for *_, f in sorted(files, key=lambda t: t[:2])))


def _file(doc: object, where: str) -> ImageFile:
    if not isinstance(doc, dict):
        raise CorruptData(f"{where}: a file must be an object")
    fmt, path, url = doc.get("format"), doc.get("path"), doc.get("url")
    sha, size, comp = doc.get("sha256"), doc.get("size"), doc.get("compression")
    if fmt not in FORMATS:
        raise CorruptData(f"{where}: unknown image format {fmt!r}")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise CorruptData(f"{where}: sha256 missing or not 64 hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise CorruptData(f"{where}: size missing or not a positive integer")
    if comp is not None and comp not in COMPRESSIONS.values():
        raise CorruptData(f"{where}: unknown compression {comp!r}")
    if isinstance(url, str) and re.match(r"https?://[^/?#]+/", url):
        parts = [unquote(urlsplit(url).path).rsplit("/", 1)[-1]]
    elif isinstance(path, str):
        url, parts = None, path.split("/")
    else:
        raise CorruptData(f"{where}: needs a relative 'path' or an absolute http(s) 'url'")
    for part in parts:
        try:
            safe_name(part)
        except UnsafePath:
            raise CorruptData(f"{where}: unsafe path {(url or path)[:120]!r}") from None
    path = "/".join(parts)
    return ImageFile(fmt, path, sha.lower(), size, comp, url)


def _opt_str(doc: dict, key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise CorruptData(f"{where}: {key!r} must be a string")
    return value


def parse_catalog_json(data: bytes, source: str = "catalog.json") -> Catalog:
    """Parse a ``catalog.json``; anything malformed or unsafe raises CorruptData naming the spot."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptData(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != CATALOG_FORMAT:
        raise CorruptData(f"{source}: not a {CATALOG_FORMAT} document")
    if doc.get("format_version") != CATALOG_VERSION:
        raise UnsupportedVersion(f"{source}: catalog format_version {doc.get('format_version')!r} is not supported (expected {CATALOG_VERSION})")
    items = doc.get("releases")
    if not isinstance(items, list):
        raise CorruptData(f"{source}: 'releases' must be a list")
    releases: list[Release] = []
    for i, item in enumerate(items):
        where = f"{source}: releases[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("files"), list) or not item["files"]:
            raise CorruptData(f"{where}: needs a non-empty 'files' list")
        try:
            version, arch = parse_version(str(item.get("version"))), check_arch(str(item.get("arch", "x86_64")))
        except InvalidRequest as exc:
            raise CorruptData(f"{where}: {exc}") from None
        if any(r.version.same_build(version) and r.arch == arch for r in releases):
            raise CorruptData(f"{where}: duplicate release {version} ({arch})")
        files = sorted((_file(f, f"{where}.files[{j}]") for j, f in enumerate(item["files"])), key=lambda f: format_order(f.format))
        product, branch, channel = (_opt_str(item, k, where) for k in ("product", "branch", "channel"))
        releases.append(Release(version, arch, product, _opt_str(item, "kind", where) or "ucernvm", branch, channel, tuple(files)))
    channels = doc.get("channels") or {}
    if not isinstance(channels, dict) or not all(isinstance(v, dict) for v in channels.values()):
        raise CorruptData(f"{source}: 'channels' must map channel → product → version")
    for channel, pointers in channels.items():
        for product, pointed in pointers.items():
            if not any(str(r.version) == pointed for r in releases):
                raise CorruptData(f"{source}: channel {channel}/{product} points to missing release {pointed!r}")
    return Catalog(tuple(sorted(releases, key=lambda r: r.version, reverse=True)), None, channels, source)
