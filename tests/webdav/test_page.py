"""The web page in a real browser: Debian's chromium, headless, driven by Selenium through chromedriver."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from tests.fs.conftest import make_store

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900")


@pytest.fixture
def browser(tmp_path, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or a driver
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def shot(driver, tmp_path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / f"{name}.png"))


def wait(driver, predicate, timeout: float = 60):
    """Until ``predicate(driver)``; a page being replaced meanwhile (after a POST's redirect) is retried."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(WebDriverException,)).until(predicate)


def status_text(driver) -> str:
    return driver.execute_script("var s = document.getElementById('status'); return s ? s.textContent : '';")


def test_entry_backup_file_download_and_a_backup_action(tmp_path, serve_factory, browser):
    s = make_store(tmp_path)
    ts = s.backup()
    server = serve_factory(s.store_path, "--web", "--listen", "127.0.0.1:0")
    browser.get(server.path("/web/"))
    shot(browser, tmp_path, "1-entries")
    browser.find_element(By.LINK_TEXT, "e1").click()
    shot(browser, tmp_path, "2-entry")
    browser.find_element(By.LINK_TEXT, ts).click()
    assert "11 files" in browser.page_source and "files packed (new or changed)" in browser.page_source
    shot(browser, tmp_path, "3-backup")
    browser.find_element(By.LINK_TEXT, "env.txt").click()
    assert "PATH=" in browser.find_element(By.TAG_NAME, "body").text
    browser.back()
    browser.find_element(By.LINK_TEXT, "browse home").click()
    browser.find_element(By.LINK_TEXT, "data/").click()
    shot(browser, tmp_path, "4-tree")
    browser.find_element(By.LINK_TEXT, "big.bin").click()
    done = browser.downloads / "big.bin"
    wait(browser, lambda d: done.exists() and done.stat().st_size == 3 << 20)
    assert done.read_bytes() == (s.home / "data" / "big.bin").read_bytes()

    browser.get(server.path("/web/e/e1/"))
    Select(browser.find_element(By.NAME, "kind")).select_by_visible_text("full")
    browser.find_element(By.XPATH, "//form[@name='backup']//button").click()
    # The status box (polled every two seconds) shows the last result.
    wait(browser, lambda d: "Z full backup" in status_text(d))
    shot(browser, tmp_path, "5-after-backup")
    browser.refresh()
    assert len(browser.find_elements(By.CSS_SELECTOR, "tbody tr")) == 2
    assert len(os.listdir(s.store_path / "entries" / "e1" / "backups")) == 2
    print(f"screenshots in {tmp_path}")


def test_a_forged_post_is_refused(tmp_path, serve_factory):
    import httpx

    s = make_store(tmp_path)
    s.backup()
    server = serve_factory(s.store_path, "--web", "--listen", "127.0.0.1:0")
    answer = httpx.post(server.path("/web/e/e1/backup"), data={"kind": "full"})
    assert answer.status_code == 403 and "CSRF" in answer.text
    assert httpx.post(server.path("/web/e/e1/backup"), data={"kind": "full", "csrf": "guess"}).status_code == 403
    assert len(os.listdir(s.store_path / "entries" / "e1" / "backups")) == 1
    # --web alone: no WebDAV share, and a browser at / is sent to the page.
    assert httpx.get(server.url).headers["Location"] == "/web/"
    assert httpx.request("PROPFIND", server.url, headers={"Depth": "1"}).status_code == 404


@pytest.mark.slow
def test_the_entry_page_stays_usable_at_500_backups(tmp_path, serve_factory, browser):
    s = make_store(tmp_path, big_mib=1)
    ts = s.backup()
    backups = s.store_path / "entries" / "e1" / "backups"
    for i in range(1, 500):  # copies of one real backup under 499 more timestamps
        stamp = f"2020{1 + i // 28 % 12:02d}{1 + i % 28:02d}T{i // 336:02d}{i % 60:02d}00Z"
        record = json.loads((backups / f"{ts}.json").read_text())  # a record naming the same objects
        (backups / f"{stamp}.json").write_text(json.dumps({**record, "timestamp": stamp}))
    assert len(os.listdir(backups)) == 500
    server = serve_factory(s.store_path, "--web", "--listen", "127.0.0.1:0")
    t0 = time.perf_counter()
    browser.get(server.path("/web/e/e1/"))
    loaded = time.perf_counter() - t0
    shot(browser, tmp_path, "500-first-page")
    assert len(browser.find_elements(By.CSS_SELECTOR, "tbody tr")) == 100
    assert "500 backups" in browser.page_source
    browser.find_element(By.LINK_TEXT, "401–500").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 100 and rows[-1].text.startswith(sorted(os.listdir(backups))[0].removesuffix(".json"))
    shot(browser, tmp_path, "500-last-page")
    print(f"entry page with 500 backups loaded in {loaded:.2f} s")
    assert loaded < 5


def test_vm_snapshot_and_provision_requests_go_through_the_control_files(tmp_path, serve_factory):
    """libvirt's test driver stands in for the hypervisor: its state lives in the server process."""
    import dataclasses
    import re

    import httpx

    pytest.importorskip("libvirt")
    s = make_store(tmp_path)
    s.backup()
    store = s.store()
    store.save_entry(dataclasses.replace(store.load_entry("e1"), domain="test"))
    server = serve_factory(s.store_path, "--listen", "127.0.0.1:0", "--libvirt-uri", "test:///default")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        page = client.get("/web/e/e1/").text
        token = re.search(r'name=csrf value="([^"]+)"', page).group(1)
        assert "Take a VM snapshot" in page and "Provision" in page
        assert client.post("/web/e/e1/vm-snapshot", data={"csrf": token}).status_code == 303
        deadline = time.monotonic() + 30
        while "VM snapshot vmlfs-" not in (status := client.get("/web/e/e1/status").text):
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        listing = client.request("PROPFIND", "/entries/e1/vm/", headers={"Depth": "1"}).text
        assert re.search(r"/entries/e1/vm/vmlfs-[0-9TZ-]+\.xml", listing), listing
        refused = client.post("/web/provision", data={"csrf": token, "target": "e1@x; rm -rf /"})
        assert refused.status_code == 400 and "refused provision request" in refused.text


def test_a_files_versions_across_backups(tmp_path, serve_factory):
    import re

    import httpx

    s = make_store(tmp_path)
    first = s.backup()
    second = s.backup()
    (s.home / "src" / "main.py").write_text("print('changed')\n")
    (s.home / "new.txt").write_text("new\n")
    third = s.backup()
    server = serve_factory(s.store_path, "--web", "--listen", "127.0.0.1:0")
    tree = httpx.get(server.path(f"/web/tree/entries/e1/{third}/home/src/")).text
    assert f'href="/web/versions/entries/e1/{third}/home/src/main.py"' in tree
    page = httpx.get(server.path(f"/web/versions/entries/e1/{third}/home/src/main.py")).text
    states = re.findall(r"<tr><td>(\d{8}T\d{6}Z)</td><td>([a-z ]+)</td>", page)
    assert states == [(third, "changed"), (second, "same as the older"), (first, "new")]
    page = httpx.get(server.path(f"/web/versions/entries/e1/{third}/home/new.txt")).text
    assert re.findall(r"<tr><td>(\d{8}T\d{6}Z)</td><td>([a-z ]+)</td>", page) == [
        (third, "new"), (second, "absent"), (first, "absent")]
    assert httpx.get(server.path(f"/web/versions/entries/e1/{third}/info.json")).status_code == 400
