"""The web demo in headless Chromium (Debian ``chromium`` + ``chromium-driver``, via Selenium).

Loads ``/demo`` from a real ``kiwi-fhir serve``, submits the sample note,
and checks what a person would look at: highlighted entity spans, a modifier
linked to its entity on hover, the entity table, the Bundle JSON, which
model answered. Saves ``artifacts/demo.png`` (and the error-state page).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_service_helpers import REPO, Server, start_server

pytestmark = pytest.mark.slow
ARTIFACTS = REPO / "artifacts"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1400,1700")  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("demo"), env={"KIWI_FHIR_DEMO": "true"})
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("Debian chromium and chromium-driver are not installed: `make test` "
                    "installs them (apt-get install chromium chromium-driver)")  # fmt: skip
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: `make test` installs the dev extra")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="kiwi-chromium-")
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=driver))
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(drv: Any, css: str, timeout: float = 120) -> list[Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return list(WebDriverWait(drv, timeout).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, css) or False))  # fmt: skip


def test_sample_note_is_highlighted_with_table_and_bundle(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{server.ports['http']}/demo")
    assert "kiwi-fhir" in browser.title
    browser.find_element(By.ID, "sample").click()
    _wait(browser, "#note")
    browser.execute_script("return 1")
    note = browser.find_element(By.ID, "note")
    for _ in range(50):  # the sample arrives by fetch
        if note.get_attribute("value"):
            break
        browser.implicitly_wait(0.1)
    assert "CHIEF COMPLAINT" in note.get_attribute("value")
    browser.find_element(By.ID, "extract").click()
    ents = _wait(browser, ".doc .seg.ent")
    sample = (REPO / "kiwi_fhir" / "web" / "sample.txt").read_text(encoding="utf-8")
    assert len(ents) >= 3
    assert all(e.text and e.text in sample for e in ents)
    kinds = {c for e in ents for c in e.get_attribute("class").split()} & {
        "problem", "test", "drug", "treatment"}  # fmt: skip
    assert kinds, "entity spans carry no type class"
    # The rendered note is the note, character for character.
    assert browser.find_element(By.CSS_SELECTOR, ".doc").text.endswith(sample.strip()[-40:])
    rows = browser.find_elements(By.CSS_SELECTOR, "#entities tbody tr")
    assert len(rows) >= len({e.get_attribute("data-ids") for e in ents}) // 2
    # terminology codes in the table: a chip per code, the system named, how it matched on hover
    chips = browser.find_elements(By.CSS_SELECTOR, "#entities tbody td.codes .code")
    assert chips and all(c.text.split()[0] in {"ICD-10-CM", "UNII", "DrugBank", "LOINC"}
                         for c in chips)  # fmt: skip
    assert any(w in chips[0].get_attribute("title") for w in ("exact", "normalised"))
    bundle = json.loads(browser.find_element(By.ID, "bundle").get_attribute("textContent"))
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    answered = browser.find_element(By.ID, "answered-by").text
    assert "model" in answered and "backend" in answered and " ms" in answered

    ActionChains(browser).move_to_element(ents[0]).perform()  # an entity lights up on hover
    assert ents[0].get_attribute("class").split().count("hl") == 1
    row = browser.find_element(By.CSS_SELECTOR, "#entities tbody tr.hl")
    assert ents[0].text in row.find_elements(By.TAG_NAME, "td")[1].text
    linked = browser.execute_script("""
        const rel = [...document.querySelectorAll('.seg.mod:not(.linked-none)')];
        return rel.length ? rel[0].dataset.ids : null;""")
    if linked:  # hovering a modifier lights up its entity (the smoke model links none)
        mod = browser.find_element(By.CSS_SELECTOR, ".seg.mod:not(.linked-none)")
        ActionChains(browser).move_to_element(mod).perform()
        assert browser.find_elements(By.CSS_SELECTOR, ".seg.hl")
    browser.find_element(By.CSS_SELECTOR, "#bundle-box summary").click()
    browser.execute_script("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "demo.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_unreadable_input_shows_a_readable_error(server: Server, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{server.ports['http']}/demo")
    browser.find_element(By.ID, "note").send_keys('{"resourceType": "DocumentReference"')
    browser.find_element(By.ID, "extract").click()
    (err,) = _wait(browser, "#error:not([hidden])", timeout=60)
    assert err.text.startswith("The input could not be read") and "malformed JSON" in err.text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "demo-error.png"))


def test_demo_assets_are_local(server: Server) -> None:
    html = (Path(REPO) / "kiwi_fhir" / "web" / "index.html").read_text(encoding="utf-8")
    js = (Path(REPO) / "kiwi_fhir" / "web" / "app.js").read_text(encoding="utf-8")
    for text in (html, js):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
