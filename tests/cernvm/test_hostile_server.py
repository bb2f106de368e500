"""A release repository that lies about sizes or loops: bounded memory and disk, and the right words."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.cernvm.test_cernvm_fetch import HDD, V_NEW
from vmlfs.cernvm import images
from vmlfs.cernvm.download import MAX_DOCUMENT
from vmlfs.errors import DownloadError

SLACK = 8 << 20  # what socket buffers may hold beyond what the client read


def test_an_endless_latest_file_is_refused_after_the_document_cap(release_repo):
    release_repo.flood["latest"] = 512 << 20
    with images.new_client() as client, pytest.raises(DownloadError, match="over the 4 MiB"):
        images.Repository(release_repo.url, client).catalog()
    assert release_repo.flooded_bytes("latest") < MAX_DOCUMENT + SLACK, "the client read on past the cap"


def test_an_image_streaming_past_its_listed_size_stops_there(release_repo):
    data = release_repo.served(HDD)
    doc = {"format": "vmlfs-cernvm-catalog", "format_version": 1, "releases": [
        {"version": V_NEW, "arch": "x86_64",
         "files": [{"format": "hdd", "path": HDD, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]}]}
    release_repo.write("catalog.json", json.dumps(doc).encode())
    release_repo.flood[HDD] = 300 << 20
    with pytest.raises(DownloadError, match=f"more than the {len(data)} bytes"):
        images.fetch(V_NEW, repo=release_repo.url, fmt="hdd")
    assert release_repo.flooded_bytes(HDD) < len(data) + SLACK
    folder = images.cache_dir() / f"{V_NEW}.x86_64"
    assert [p for p in folder.iterdir()] == [], "nothing kept: no image, no part"


def test_a_redirect_loop_is_called_one(release_repo):
    release_repo.loop.add("ucernvm-images.2021.05-1.cernvm.x86_64/ucernvm-prod.2021.05-1.cernvm.x86_64.qcow2")
    with pytest.raises(DownloadError, match="redirects in a loop") as caught:
        images.fetch(V_NEW, repo=release_repo.url)
    assert "resume" not in str(caught.value) + caught.value.hint


def test_a_redirect_loop_for_a_document_is_called_one(release_repo):
    release_repo.loop.add("latest")
    with images.new_client() as client, pytest.raises(DownloadError, match="redirects in a loop"):
        images.Repository(release_repo.url, client).catalog()
