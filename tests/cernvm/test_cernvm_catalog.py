"""Parsing what a release repository serves: checksums, 'latest', listings, image names, catalog.json."""

from __future__ import annotations

import copy
import json

import pytest

from vmlfs.cernvm import catalog
from vmlfs.release.versions import parse_version
from vmlfs.errors import CorruptData, NotFound, UnsafePath, UnsupportedVersion

HEX = "0123456789abcdef" * 4
NAME = "ucernvm-prod.2021.05-1.cernvm.x86_64.hdd"
BASE = "https://cernvm.cern.ch/releases/"


@pytest.mark.parametrize("data", [
    f"{HEX}\n", f"{HEX}  ucernvm-images.2021.05-1.cernvm.x86_64/{NAME}\n", f"{HEX} *{NAME}\r\n", f"{HEX.upper()}\n",
])
def test_sha256_file_forms(data):
    assert catalog.parse_sha256_file(data.encode(), NAME) == HEX


@pytest.mark.parametrize("data", [b"", HEX[:63].encode(), b"z" * 64, b"<html>not found</html>", f"{HEX}  other.iso".encode()])
def test_bad_sha256_files_are_refused(data):
    with pytest.raises(CorruptData):
        catalog.parse_sha256_file(data, NAME)


def test_latest():
    assert catalog.parse_latest(b" 2021.05-1\r\n") == parse_version("2021.05-1")
    for bad in (b"<html>2021.05-1</html>", b"2021.05-1; rm -rf /", b""):
        with pytest.raises(CorruptData):
            catalog.parse_latest(bad)


def test_tree_listing_gives_release_dirs_newest_first():
    page = f"""<a href="{BASE}">{BASE}</a><br>
    [4.0K] <a href="{BASE}latest">latest</a><br>
    [4.0K] <a href="{BASE}ucernvm-images.1.16-3.cernvm.x86_64/">ucernvm-images.1.16-3.cernvm.x86_64/</a><br>
    [4.0K] <a href="{BASE}ucernvm-images.2021.05-1.cernvm.x86_64/">x</a><br>
    [4.0K] <a href="{BASE}production/">production/</a><br>
    <a href="https://elsewhere.example/ucernvm-images.2099.01-1.cernvm.x86_64/">mirror</a>""".encode()
    listing = catalog.parse_listing(page, BASE)
    assert listing.names == ("latest", "ucernvm-images.1.16-3.cernvm.x86_64", "ucernvm-images.2021.05-1.cernvm.x86_64", "production")
    assert [str(r.version) for r in catalog.releases_from_listing(listing)] == ["2021.05-1", "1.16-3"]


@pytest.mark.parametrize("href", ["../../etc/x", "a/b", "%2e%2e/x", "..%2Fetc", f"{BASE}x/../../etc", "sub/dir/", ".hidden", "x%00y"])
def test_listing_never_returns_unsafe_names(href):
    listing = catalog.parse_listing(f'<a href="{href}">x</a><a href="ok.iso">ok</a>'.encode(), BASE)
    assert listing.names == ("ok.iso",)


def test_listing_rejects_unsafe_names_inside_the_base():
    listing = catalog.parse_listing(b'<a href="a/b">1</a><a href="%2e%2e%2fx">2</a><a href="../up">3</a><a href="?C=N;O=D">4</a>', BASE)
    assert listing.names == () and listing.rejected == ("a/b", "%2e%2e%2fx")


def test_files_from_a_release_directory_listing_best_format_prod_first():
    release = catalog.Release(parse_version("2020.07-1"))
    page = b"".join(f'<a href="{n}">{n}</a>'.encode() for n in [
        "ucernvm-v4prod.2020.07-1.cernvm.x86_64.iso", "ucernvm-v3prod.2020.07-1.cernvm.x86_64.hdd",
        "ucernvm-prod.2020.07-1.cernvm.x86_64.hdd", "ucernvm-prod.2020.07-1.cernvm.x86_64.hdd.sha256",
        "ucernvm-prod.2021.05-1.cernvm.x86_64.qcow2", "ucernvm.2020.07-1.cernvm.x86_64.tar"])
    files = catalog.files_from_listing(release, catalog.parse_listing(page, BASE + "ucernvm-images.2020.07-1.cernvm.x86_64/")).files
    assert [f.path.split("/")[1] for f in files] == [
        "ucernvm-prod.2020.07-1.cernvm.x86_64.hdd", "ucernvm-v3prod.2020.07-1.cernvm.x86_64.hdd", "ucernvm-v4prod.2020.07-1.cernvm.x86_64.iso"]
    assert all(f.path.startswith("ucernvm-images.2020.07-1.cernvm.x86_64/") for f in files)


@pytest.mark.parametrize("name, expected", [
    (NAME, ("2021.05-1", "x86_64", "hdd", "prod", None)),
    ("ucernvm-prod.1.16-3.cernvm.x86_64.iso", ("1.16-3", "x86_64", "iso", "prod", None)),
    ("cernvm4-micro-2020.07-1.hdd", ("2020.07-1", "x86_64", "hdd", "v4prod", None)),
    ("cernvm-batch-node-2.7.2-1-2-x86_64.hdd.gz", ("2.7.2-1-2", "x86_64", "hdd", None, "gzip")),
    ("ucernvm-prod.2021.05-1.cernvm.x86_64.tar.gz", ("2021.05-1", "x86_64", "tar.gz", "prod", None)),
])
def test_image_names(name, expected):
    image = catalog.match_image_name(name)
    assert (str(image.version), image.arch, image.format, image.branch, image.compression) == expected


@pytest.mark.parametrize("name", [NAME + ".sha256", NAME + ".part", "ucernvm.2021.05-1.cernvm.x86_64.tar", "list.html", "../" + NAME])
def test_non_images(name):
    assert catalog.match_image_name(name) is None


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "a\\b", "x\0", ".hidden", "a..b", "-rf"])
def test_safe_name_refuses(name):
    with pytest.raises(UnsafePath):
        catalog.safe_name(name)


GOOD = {
    "format": "vmlfs-cernvm-catalog", "format_version": 1, "future_key": True,
    "channels": {"production": {"cernvm4": "2021.05-1"}},
    "releases": [
        {"product": "cernvm4", "version": "2021.05-1", "arch": "x86_64", "channel": "production", "files": [
            {"format": "iso", "path": "ucernvm-images.2021.05-1.cernvm.x86_64/ucernvm-prod.2021.05-1.cernvm.x86_64.iso", "size": 10, "sha256": HEX},
            {"format": "qcow2", "url": "https://mirror.example/cvm/ucernvm-prod.2021.05-1.cernvm.x86_64.qcow2?x=1", "size": 5, "sha256": HEX.upper()}]},
        {"product": "cernvm2", "kind": "full", "version": "2.7.1-2-3", "files": [
            {"format": "hdd", "compression": "gzip", "path": "19/cernvm-batch-node-2.7.1-2-3-x86_64.hdd.gz", "size": 3, "sha256": HEX}]},
    ],
}


def test_catalog_json():
    parsed = catalog.parse_catalog_json(json.dumps(GOOD).encode())
    new = parsed.find(parse_version("2021.05-1.cernvm.x86_64"))
    assert [f.format for f in new.files] == ["qcow2", "iso"]
    assert new.files[0].filename == "ucernvm-prod.2021.05-1.cernvm.x86_64.qcow2" and new.files[0].sha256 == HEX
    assert new.files[0].url.startswith("https://mirror.example/")
    assert parsed.releases[1].files[0].filename == "cernvm-batch-node-2.7.1-2-3-x86_64.hdd.gz"
    with pytest.raises(NotFound, match="2099.01-1") as exc:
        parsed.find(parse_version("2099.01-1"))
    assert "2021.05-1" in exc.value.hint


def _broken(path, value):
    doc = copy.deepcopy(GOOD)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize("data, match", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (_broken(["format"], "something-else"), "not a vmlfs-cernvm-catalog"),
    (_broken(["releases", 0, "files", 0, "sha256"], KeyError), "sha256 missing"),
    (_broken(["releases", 0, "files", 0, "sha256"], "g" * 64), "sha256 missing or not 64 hex"),
    (_broken(["releases", 0, "files", 0, "size"], KeyError), "size missing"),
    (_broken(["releases", 0, "files", 0, "path"], "../../etc/x.iso"), "unsafe path"),
    (_broken(["releases", 0, "files", 0, "path"], "/etc/x.iso"), "unsafe path"),
    (_broken(["releases", 0, "files", 1, "url"], "https://mirror.example/.."), "unsafe path"),
    (_broken(["releases", 0, "files", 0, "format"], "exe"), "unknown image format"),
    (_broken(["releases", 1, "version"], "2021.05-1"), "duplicate release"),
    (_broken(["releases", 1, "version"], "../x"), "invalid CernVM version"),
    (_broken(["channels", "production", "cernvm4"], "2099.01-1"), "missing release"),
    (_broken(["releases", 0, "product"], ["cernvm4"]), "must be a string"),
])
def test_bad_catalogs_are_refused(data, match):
    with pytest.raises(CorruptData, match=match):
        catalog.parse_catalog_json(data)


def test_unknown_catalog_version_is_refused():
    with pytest.raises(UnsupportedVersion):
        catalog.parse_catalog_json(_broken(["format_version"], 2))
