"""CernVM images on this host and from the release repository: find, download, verify.

:func:`fetch` looks for the exact release in the local image directories first
(``VMLFS_CERNVM_IMAGE_DIRS``, then the cache ``$XDG_CACHE_HOME/vmlfs/cernvm``)
and downloads it otherwise. A download goes to ``<file>.part`` (resumed with
an HTTP Range request after an interruption), is checked against the size and
sha256 the repository publishes, and only then renamed into place, so a
truncated, failed or wrong image is never found as if whole: a ``.part`` is
never matched as an image, and one whose checksum is wrong is deleted.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import httpx

from vmlfs.cernvm import catalog
from vmlfs.cernvm.catalog import (
    Catalog,
    ImageFile,
    Release,
    format_order,
    match_image_name,
)
from vmlfs.cernvm.download import download, get_document, sha256_of
from vmlfs.release.versions import ARCHES, Version, check_arch, parse_version
from vmlfs.errors import CorruptData, DownloadError, InvalidRequest, NotFound

log = logging.getLogger(__name__)

#: The real CernVM release site (docs/cernvm-facts.md §1.7); never contacted by the tests.
DEFAULT_REPO = "https://cernvm.cern.ch/releases/"
_CACHE_DIR = re.compile(rf"(?P<version>.+)\.(?P<arch>{'|'.join(ARCHES)})")


def repo_url(repo: str | None = None) -> str:
    """The release repository: ``repo`` (``--repo``), else ``VMLFS_CERNVM_REPO``, else the CernVM site."""
    url = repo or os.environ.get("VMLFS_CERNVM_REPO") or DEFAULT_REPO
    if not re.match(r"https?://[^/?#]+", url):
        raise InvalidRequest(f"invalid release repository URL {url!r}", hint="expected http(s)://host/path/")
    return url if url.endswith("/") else url + "/"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vmlfs" / "cernvm"


def configured_image_dirs() -> list[Path]:
    """The user's image directories: ``VMLFS_CERNVM_IMAGE_DIRS``, colon-separated, searched in order."""
    return [Path(d) for d in os.environ.get("VMLFS_CERNVM_IMAGE_DIRS", "").split(":") if d]


def image_dirs() -> list[Path]:
    """Where local images are looked for: the configured directories, then the cache."""
    return [*configured_image_dirs(), cache_dir()]


@dataclass(frozen=True)
class LocalImage:
    """An image file on this host; ``sha256`` is what its ``<file>.sha256`` sidecar says, if there is one."""

    path: Path
    version: Version
    arch: str
    format: str
    sha256: str | None = None


def _format_of(name: str) -> str | None:
    for fmt in sorted(catalog.FORMATS, key=len, reverse=True):
        if name.endswith("." + fmt):
            return fmt
    return None


def _image_at(path: Path, cache_release: tuple[Version, str] | None) -> LocalImage | None:
    name = path.name
    image = match_image_name(name)
    if image and image.compression is None:
        version, arch, fmt = image.version, image.arch, image.format
    elif cache_release and not name.endswith((".part", ".sha256")) and (fmt := _format_of(name)):
        version, arch = cache_release
    else:
        return None
    sidecar = path.with_name(name + ".sha256")
    sha = None
    if sidecar.is_file():
        try:
            sha = catalog.parse_sha256_file(sidecar.read_bytes(), name)
        except CorruptData as exc:
            log.warning("ignoring %s: %s", path, exc)
            return None
    return LocalImage(path, version, arch, fmt, sha)


def local_images(dirs: Sequence[Path] | None = None) -> list[LocalImage]:
    """Images in ``dirs`` and one level of subdirectories (a mirror's ``ucernvm-images.*``, the cache's ``<V>.<arch>``)."""
    found = []
    for top in image_dirs() if dirs is None else dirs:
        if not top.is_dir():
            continue
        for path in sorted(top.iterdir()):
            if path.is_file():
                found.append(_image_at(path, None))
            elif path.is_dir():
                m = _CACHE_DIR.fullmatch(path.name)
                try:
                    release = (parse_version(m["version"]), m["arch"]) if m else None
                except InvalidRequest:
                    release = None
                found.extend(_image_at(p, release) for p in sorted(path.iterdir()) if p.is_file())
    return [image for image in found if image is not None]


def find_local(version: Version, *, arch: str = "x86_64", fmt: str | None = None,
               dirs: Sequence[Path] | None = None) -> list[LocalImage]:
    """Local images of exactly this release (best format first); any with a wrong sidecar checksum are skipped."""
    matches = [i for i in local_images(dirs) if i.version.same_build(version) and i.arch == arch and fmt in (None, i.format)]
    good = []
    for image in sorted(matches, key=lambda i: format_order(i.format)):
        if image.sha256 is not None and sha256_of(image.path) != image.sha256:
            log.warning("ignoring %s: its sha256 does not match %s.sha256", image.path, image.path.name)
            continue
        good.append(image)
    return good


class Repository:
    """The release repository at one base URL: ``catalog.json`` if it has one, else the real layout."""

    def __init__(self, url: str, client: httpx.Client) -> None:
        self.url = url
        self.client = client

    def get(self, path: str, *, missing_ok: bool = False) -> bytes | None:
        url = self.url + path
        status, content = get_document(self.client, url)
        if status == 404 and missing_ok:
            return None
        if status == 404:
            raise NotFound(f"{url} does not exist (HTTP 404)")
        if status != 200:
            raise DownloadError(f"HTTP {status} from {url}")
        return content

    def listing(self, directory: str = "") -> catalog.Listing | None:
        """A directory's listing: ``list.html`` (as the CernVM site has) or the server's index."""
        for name in ("list.html", ""):
            data = self.get(directory + name, missing_ok=True)
            if data is not None:
                listing = catalog.parse_listing(data, self.url + directory)
                for href in listing.rejected:
                    log.warning("ignoring unsafe entry %r in the listing of %s", href, self.url + directory)
                return listing
        return None

    def catalog(self) -> Catalog:
        data = self.get("catalog.json", missing_ok=True)
        if data is not None:
            found = catalog.parse_catalog_json(data, self.url + "catalog.json")
        else:
            listing = self.listing()
            found = Catalog(tuple(catalog.releases_from_listing(listing)) if listing else (), source=self.url)
        latest = self.get("latest", missing_ok=True)
        try:
            return Catalog(found.releases, catalog.parse_latest(latest) if latest else None, found.channels, found.source)
        except CorruptData as exc:
            log.warning("%s", exc)
            return found

    def release(self, version: Version, arch: str) -> Release:
        """The release with its files; in the real layout its directory listing says which files exist."""
        found = self.catalog()
        try:
            release = found.find(version, arch)
        except NotFound:
            if found.source.endswith("catalog.json"):
                raise
            release = Release(version, arch)
        if release.files:
            return release
        directory = catalog.image_dir_name(version, arch) + "/"
        listing = self.listing(directory)
        if listing is None:
            found.find(version, arch)  # raises NotFound with the known releases
            raise NotFound(f"{self.url}{directory} has no listing, so its images cannot be found")
        release = catalog.files_from_listing(release, listing)
        if not release.files:
            raise NotFound(f"no CernVM images of {version} ({arch}) in {self.url}{directory}")
        return release

    def checksum(self, image: ImageFile) -> str | None:
        """The image's sha256: from the catalog, else its ``.sha256`` file, else None (none published)."""
        if image.sha256:
            return image.sha256
        data = self.get(image.path + ".sha256", missing_ok=True)
        return catalog.parse_sha256_file(data, image.filename) if data is not None else None


def new_client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=True,
                        headers={"User-Agent": "vmlfs-cernvm"})


@dataclass(frozen=True)
class Fetched:
    """A verified (or, where nothing is published, unverifiable) image ready to boot."""

    path: Path
    release: Release
    source: str  # "local" or "download"
    verified: bool


def fetch(version: str, *, repo: str | None = None, fmt: str | None = None, arch: str = "x86_64",
          dirs: Sequence[Path] | None = None, cache: Path | None = None, progress: bool = False,
          client: httpx.Client | None = None) -> Fetched:
    """The image of exactly ``version``: found in ``dirs`` or ``cache`` (no network), else downloaded into ``cache``.

    ``dirs`` defaults to ``VMLFS_CERNVM_IMAGE_DIRS``, ``cache`` to
    :func:`cache_dir`, ``repo`` to :func:`repo_url`'s choice.
    """
    wanted = parse_version(version)
    arch = check_arch(wanted.arch or arch)
    if fmt is not None and fmt not in catalog.FORMATS:
        raise InvalidRequest(f"unknown image format {fmt!r}", hint=f"use one of {', '.join(catalog.FORMATS)}")
    cache = cache_dir() if cache is None else cache
    search = [*(configured_image_dirs() if dirs is None else dirs), cache]
    for image in find_local(wanted, arch=arch, fmt=fmt, dirs=search):
        record = Release(image.version, arch, files=(ImageFile(image.format, image.path.name, image.sha256),))
        return Fetched(image.path, record, "local", image.sha256 is not None)
    http = client or new_client()
    try:
        repository = Repository(repo_url(repo), http)
        release = repository.release(wanted, arch)
        images = [f for f in release.files if fmt in (None, f.format)]
        if not images:
            have = ", ".join(f.format for f in release.files)
            raise NotFound(f"CernVM {wanted} has no {fmt} image in {repository.url}", hint=f"available: {have}")
        image = images[0]
        sha = repository.checksum(image)
        dest = cache / release.cache_dir / image.filename
        download(http, image.url or repository.url + image.path, dest, sha256=sha, size=image.size, progress=progress)
    finally:
        if client is None:
            http.close()
    record = Release(release.version, arch, release.product, release.kind, release.branch, release.channel,
                     (ImageFile(image.format, image.path, sha, image.size, image.compression, image.url),))
    return Fetched(dest, record, "download", sha is not None)
