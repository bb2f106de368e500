"""Fetching releases from the fake repository on 127.0.0.1: list, download, resume, refusals."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from vmlfs.cernvm import images
from vmlfs.release.versions import parse_version
from vmlfs.cli.cernvm import cernvm
from vmlfs.cli.main import main
from vmlfs.cli.options import Context
from vmlfs.errors import ConnectionFailed, CorruptData, DownloadError, NotFound

V_NEW, V_OLD, V_LEGACY = "2021.05-1", "2020.07-1", "1.16-3"  # what the release_repo fixture serves
QCOW2 = f"ucernvm-images.{V_NEW}.cernvm.x86_64/ucernvm-prod.{V_NEW}.cernvm.x86_64.qcow2"
HDD = f"ucernvm-images.{V_NEW}.cernvm.x86_64/ucernvm-prod.{V_NEW}.cernvm.x86_64.hdd"


def run_cli(*args: str):
    return CliRunner().invoke(cernvm, list(args), obj=Context(store_path=None, quiet=True))


def test_list_remote_shows_releases_newest_first_and_latest(release_repo, isolated_env):
    result = run_cli("list", "--remote", "--repo", release_repo.url)
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines() if line.startswith("  ")]
    assert [line[0] for line in lines] == ["(none)", V_NEW, V_OLD, V_LEGACY]
    assert lines[1][-1] == "latest"


def test_list_without_remote_makes_no_request(release_repo, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / f"ucernvm-images.{V_OLD}.cernvm.x86_64").mkdir(parents=True)
    (mirror / f"ucernvm-images.{V_OLD}.cernvm.x86_64" / f"ucernvm-v4prod.{V_OLD}.cernvm.x86_64.hdd").write_bytes(b"x")
    (mirror / "notes.txt").write_text("not an image")
    monkeypatch.setenv("VMLFS_CERNVM_IMAGE_DIRS", str(mirror))
    result = run_cli("list")
    assert result.exit_code == 0, result.output
    assert f"{V_OLD}" in result.output and "notes.txt" not in result.output
    assert release_repo.requests == []


def test_fetch_downloads_verifies_and_records(release_repo, isolated_env):
    got = images.fetch(V_NEW, repo=release_repo.url)
    expected = release_repo.served(QCOW2)
    assert got.source == "download" and got.verified
    assert got.path == isolated_env / f"{V_NEW}.x86_64" / Path(QCOW2).name
    assert got.path.read_bytes() == expected
    assert got.release.version == parse_version(V_NEW) and got.release.files[0].format == "qcow2"
    assert got.release.files[0].sha256 == hashlib.sha256(expected).hexdigest()
    assert not got.path.with_name(got.path.name + ".part").exists()
    # the second call finds the verified copy in the cache without any request
    before = len(release_repo.requests)
    again = images.fetch(V_NEW, repo=release_repo.url)
    assert (again.path, again.source, again.verified) == (got.path, "local", True)
    assert len(release_repo.requests) == before


def test_fetch_cli_prints_the_path(release_repo, isolated_env):
    result = run_cli("fetch", V_OLD, "--repo", release_repo.url)
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path.name == f"ucernvm-v4prod.{V_OLD}.cernvm.x86_64.hdd" and path.is_file()


def test_fetch_hex_only_checksum_form_and_format_choice(release_repo):
    got = images.fetch(V_NEW, repo=release_repo.url, fmt="iso")
    assert got.path.name.endswith(".iso") and got.verified


def test_interrupted_download_is_resumed_with_range(release_repo):
    release_repo.cut[QCOW2] = 50_000
    with pytest.raises(DownloadError, match="interrupted after 50000 bytes"):
        images.fetch(V_NEW, repo=release_repo.url)
    part = images.cache_dir() / f"{V_NEW}.x86_64" / (Path(QCOW2).name + ".part")
    assert part.stat().st_size == 50_000
    assert not part.with_suffix("").exists()
    got = images.fetch(V_NEW, repo=release_repo.url)
    assert release_repo.gets(QCOW2)[-1].get("Range") == "bytes=50000-"
    assert got.verified and got.path.read_bytes() == release_repo.served(QCOW2)
    assert not part.exists()


def test_wrong_checksum_is_refused_and_nothing_kept(release_repo):
    release_repo.write(QCOW2 + ".sha256", ("0" * 64 + "\n").encode())
    with pytest.raises(DownloadError, match="failed its checksum"):
        images.fetch(V_NEW, repo=release_repo.url)
    directory = images.cache_dir() / f"{V_NEW}.x86_64"
    assert list(directory.iterdir()) == []


def test_resumed_part_with_wrong_bytes_is_removed(release_repo):
    part = images.cache_dir() / f"{V_NEW}.x86_64" / (Path(QCOW2).name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage" * 1000)
    with pytest.raises(DownloadError, match="failed its checksum"):
        images.fetch(V_NEW, repo=release_repo.url)
    assert not part.exists() and not part.with_suffix("").exists()
    assert images.fetch(V_NEW, repo=release_repo.url).verified


@pytest.mark.parametrize("status, error, message", [(404, NotFound, "HTTP 404"), (500, DownloadError, "HTTP 500")])
def test_http_errors_are_clear(release_repo, status, error, message):
    release_repo.fail[QCOW2] = status
    with pytest.raises(error, match=message):
        images.fetch(V_NEW, repo=release_repo.url)
    assert list((images.cache_dir() / f"{V_NEW}.x86_64").iterdir()) == []


def test_unknown_version_names_the_known_ones(release_repo):
    with pytest.raises(NotFound, match="2099.01-1") as exc:
        images.fetch("2099.01-1", repo=release_repo.url)
    assert V_NEW in exc.value.hint and V_OLD in exc.value.hint


def test_unknown_version_through_the_cli(release_repo):
    result = run_cli("fetch", "2099.01-1", "--repo", release_repo.url)
    assert isinstance(result.exception, NotFound)


def test_local_image_dir_is_used_first_without_any_request(release_repo, monkeypatch, tmp_path):
    mine = tmp_path / "images"
    mine.mkdir()
    image = mine / f"ucernvm-prod.{V_NEW}.cernvm.x86_64.hdd"
    image.write_bytes(b"my own copy")
    monkeypatch.setenv("VMLFS_CERNVM_IMAGE_DIRS", f"{tmp_path / 'missing'}:{mine}")
    got = images.fetch(V_NEW, repo=release_repo.url)
    assert (got.path, got.source, got.verified) == (image, "local", False)
    assert release_repo.requests == []


def test_local_image_with_wrong_sidecar_is_not_used(release_repo, tmp_path):
    mine = tmp_path / "images"
    mine.mkdir()
    image = mine / f"ucernvm-prod.{V_NEW}.cernvm.x86_64.qcow2"
    image.write_bytes(b"half an image")
    image.with_name(image.name + ".sha256").write_text("ab" * 32 + "\n")
    got = images.fetch(V_NEW, repo=release_repo.url, dirs=[mine])
    assert got.source == "download" and got.path.parent != mine


def test_no_published_checksum_downloads_unverified(release_repo):
    got = images.fetch(V_LEGACY, repo=release_repo.url)
    assert got.path.name.endswith(".iso") and not got.verified
    assert not got.path.with_name(got.path.name + ".sha256").exists()


def test_traversal_names_in_a_listing_never_become_paths(release_repo, tmp_path):
    release_repo.write_root_listing(extra_hrefs=("../../etc/x", f"{release_repo.url}a/b/", f"{release_repo.url}%2e%2e/x",
                                                 f"{release_repo.url}ucernvm-images.../../evil.cernvm.x86_64/"))
    with images.new_client() as client:
        found = images.Repository(release_repo.url, client).catalog()
    assert [str(r.version) for r in found.releases] == [V_NEW, V_OLD, V_LEGACY]
    directory = f"ucernvm-images.{V_NEW}.cernvm.x86_64/"
    release_repo.write(directory + "list.html", b'<a href="../../../etc/passwd.qcow2">x</a><a href="sub/ucernvm-prod.'
                       + V_NEW.encode() + b'.cernvm.x86_64.qcow2">y</a><a href="ucernvm-prod.' + V_NEW.encode()
                       + b'.cernvm.x86_64.hdd">z</a>')
    got = images.fetch(V_NEW, repo=release_repo.url)
    assert got.path.name == f"ucernvm-prod.{V_NEW}.cernvm.x86_64.hdd"
    assert not (tmp_path / "etc").exists()


def test_catalog_json_repository(release_repo):
    data = release_repo.served(HDD)
    doc = {"format": "vmlfs-cernvm-catalog", "format_version": 1, "releases": [
        {"product": "cernvm4", "version": V_NEW, "arch": "x86_64", "channel": "production",
         "files": [{"format": "hdd", "path": HDD, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]}]}
    release_repo.write("catalog.json", json.dumps(doc).encode())
    got = images.fetch(V_NEW, repo=release_repo.url)
    assert got.verified and got.release.product == "cernvm4" and got.path.read_bytes() == data
    assert release_repo.gets(".sha256") == []


def test_catalog_json_with_traversal_path_is_refused(release_repo, tmp_path):
    doc = {"format": "vmlfs-cernvm-catalog", "format_version": 1, "releases": [
        {"version": V_NEW, "files": [{"format": "hdd", "path": "../../etc/x.hdd", "size": 1, "sha256": "a" * 64}]}]}
    release_repo.write("catalog.json", json.dumps(doc).encode())
    with pytest.raises(CorruptData, match="unsafe path"):
        images.fetch(V_NEW, repo=release_repo.url)
    assert not images.cache_dir().exists()


def test_unreachable_repository_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionFailed, match="cannot reach"):
        images.fetch(V_NEW, repo=f"http://127.0.0.1:{port}/releases/")


def test_cli_errors_are_one_line_with_the_exit_code(release_repo, capsys):
    release_repo.fail[HDD] = 500
    with pytest.raises(SystemExit) as exited:
        main(["-q", "cernvm", "fetch", V_NEW, "--format", "hdd", "--repo", release_repo.url])
    assert exited.value.code == DownloadError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("vmlfs: error: HTTP 500 from ") and "Traceback" not in err


def test_library_request_lines_only_with_debug(release_repo, tmp_path):
    """httpx logs every request at INFO ('HTTP Request: GET .../catalog.json 404'), which reads like an
    error: the CLI shows it only with --debug."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path))
    argv = [sys.executable, "-m", "vmlfs", "cernvm", "list", "--remote", "--repo", release_repo.url]
    quiet = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert quiet.returncode == 0 and V_NEW in quiet.stdout and "HTTP Request" not in quiet.stderr, quiet.stderr
    debug = subprocess.run([*argv[:3], "--debug", *argv[3:]], capture_output=True, text=True, env=env, timeout=60)
    assert "HTTP Request" in debug.stderr
