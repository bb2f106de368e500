"""One resumable, verified HTTP download: ``<file>.part`` → checks → atomic rename into place.

Kept apart from :mod:`vmlfs.cernvm.images` (which decides *what* to fetch) so
the rules of RELIABILITY.md for downloads live in one short place: a
truncated, failed or wrong image is never renamed into place; an interrupted
``.part`` is kept and resumed with an HTTP Range request; a ``.part`` whose
checksum is wrong is deleted. Two processes never write the same ``.part``
(an exclusive ``flock`` on it).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import BinaryIO

import httpx
from tqdm import tqdm

from vmlfs.errors import Busy, ConnectionFailed, DownloadError, NotFound, write_failed

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


MAX_DOCUMENT = 4 << 20
"""The most a release document (listing, ``latest``, ``catalog.json``, ``.sha256``) may weigh: a
listing of thousands of releases is a few hundred KiB; more is a hostile or broken server."""


def http_error(exc: httpx.HTTPError, url: str) -> Exception:
    if isinstance(exc, httpx.TooManyRedirects):
        return DownloadError(f"{url} redirects in a loop (or through too many places): {exc}",
                             hint="the release repository is misconfigured; check --repo / VMLFS_CERNVM_REPO")
    if isinstance(exc, (httpx.ConnectError, httpx.TimeoutException)):
        return ConnectionFailed(f"cannot reach the release repository at {url}: {exc}", hint="check --repo / VMLFS_CERNVM_REPO and the network")
    return DownloadError(f"request to {url} failed: {exc}")


def download(client: httpx.Client, url: str, dest: Path, *, sha256: str | None, size: int | None,
             progress: bool = False) -> None:
    """Download ``url`` to ``dest`` via ``dest.part``: resumed if a part exists, verified, then renamed.

    Nothing is written past ``size`` (the repository's listed size) or, without one, past the
    server's Content-Length."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with open(part, "ab") as out:
        try:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{dest.name} is being downloaded by another process") from None
        try:
            _fill(client, url, out, size, progress, dest.name)
        except BaseException:
            if os.fstat(out.fileno()).st_size == 0:
                part.unlink()  # nothing worth resuming
            raise
        out.flush()
        os.fsync(out.fileno())
        got = os.fstat(out.fileno()).st_size
        if size is not None and got > size:
            part.unlink()
            raise DownloadError(f"{url} sent {got} bytes, more than the {size} the repository lists; the download was removed")
        if size is not None and got < size:
            raise DownloadError(f"{url} ended after {got} of {size} bytes", hint=f"run again to resume from {part}")
        if sha256 is not None and (actual := sha256_of(part)) != sha256:
            part.unlink()
            raise DownloadError(f"{dest.name} failed its checksum: sha256 {actual}, the repository says {sha256}; the download was removed")
        sidecar = dest.with_name(dest.name + ".sha256")
        if sha256 is None:
            log.warning("the repository publishes no checksum for %s; it was not verified", dest.name)
            sidecar.unlink(missing_ok=True)
        else:
            tmp = part.with_suffix(".sha256.tmp")
            tmp.write_text(f"{sha256}  {dest.name}\n")
            os.replace(tmp, sidecar)
        os.replace(part, dest)
    fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fill(client: httpx.Client, url: str, out: BinaryIO, size: int | None, progress: bool, label: str) -> None:
    """Append the missing bytes to ``out``; an interruption keeps what arrived, with a resume hint."""
    offset = os.fstat(out.fileno()).st_size
    if size is not None and offset > size:
        out.truncate(0)
        offset = 0
    try:
        _receive(client, url, out, offset, size, progress, label)
    except (httpx.ConnectError, httpx.TooManyRedirects) as exc:
        raise http_error(exc, url) from None
    except httpx.HTTPError as exc:
        out.flush()
        got = os.fstat(out.fileno()).st_size
        raise DownloadError(f"download of {url} interrupted after {got} bytes: {exc}",
                            hint=f"run the same command again to resume from {out.name}") from None
    except OSError as exc:
        raise write_failed(exc, f"cannot write {out.name}", hint="free space, then run again to resume") from None


def _receive(client: httpx.Client, url: str, out: BinaryIO, offset: int, size: int | None, progress: bool, label: str) -> None:
    # Byte offsets must be file offsets, so no content coding; raw chunks are written as they
    # arrive, so an interruption keeps every byte received for the resume.
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
    with client.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status == 416 and offset:
            return  # the part already holds every byte; the checksum decides
        if status == 404:
            raise NotFound(f"{url} does not exist (HTTP 404)")
        if status not in (200, 206):
            raise DownloadError(f"HTTP {status} from {url}")
        if response.headers.get("content-encoding", "identity") != "identity":
            raise DownloadError(f"{url} was sent with content coding {response.headers['content-encoding']!r}; expected the file as is")
        total = size
        if status == 206:
            m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("content-range", ""))
            if not m or int(m[1]) != offset:
                out.truncate(0)
                raise DownloadError(f"{url} answered a resume with the wrong range", hint="run again to download afresh")
            total = total or (int(m[2]) if m[2] != "*" else None)
        else:
            out.truncate(0)
            offset = 0
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and total is not None and int(declared) != total:
                raise DownloadError(f"{url} declares {declared} bytes, the repository lists {total}; nothing was downloaded")
            total = total or (int(declared) if declared is not None and declared.isdigit() else None)
        with tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=label, disable=not progress, leave=False) as bar:
            for chunk in response.iter_raw():
                if total is not None and offset + len(chunk) > total:
                    # Never write past the declared or listed size: a server that keeps sending is not
                    # sending this image (and could fill the disk).
                    out.truncate(0)
                    raise DownloadError(f"{url} sent more than the {total} bytes it declared or the repository lists;"
                                        " the download was removed")
                out.write(chunk)
                offset += len(chunk)
                bar.update(len(chunk))


def get_document(client: httpx.Client, url: str) -> tuple[int, bytes]:
    """(HTTP status, body) of a small document, refused once it passes :data:`MAX_DOCUMENT` (as
    declared or as it arrives, after content decoding), so a hostile server costs at most that."""
    try:
        with client.stream("GET", url) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_DOCUMENT:
                raise DownloadError(f"{url} is {declared} bytes, over the {MAX_DOCUMENT >> 20} MiB a release document may be")
            parts, got = [], 0
            for chunk in response.iter_bytes():
                got += len(chunk)
                if got > MAX_DOCUMENT:
                    raise DownloadError(f"{url} is over the {MAX_DOCUMENT >> 20} MiB a release document may be")
                parts.append(chunk)
            return response.status_code, b"".join(parts)
    except httpx.HTTPError as exc:
        raise http_error(exc, url) from None
