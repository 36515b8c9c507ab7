"""The completion playground (GET /) in a real browser: Debian's chromium, headless, driven by
Playwright (never `playwright install`: the browser is the system's)."""

from __future__ import annotations

import json
import os
import shutil

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")
pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")

START = "def fibonacci(n):\n    "


@pytest.fixture()
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(90_000)
            yield page
        finally:
            browser.close()


def _suggestion(page, infills: list) -> tuple[str, dict]:
    """Wait for a suggestion; returns it and the body of the request that produced it."""
    page.wait_for_function("document.getElementById('ghost').textContent.length > 0")
    return page.text_content("#ghost"), json.loads(infills[-1].post_data)


def test_ghost_text_is_the_servers_suggestion_and_tab_accepts_it(server, page):
    infills = []
    page.on("request", lambda r: infills.append(r) if r.url.endswith("/infill") else None)
    page.goto(server.url + "/")
    assert page.title() == "codegemma playground"
    page.fill("#n_predict", "8")
    page.click("#code")
    page.keyboard.press("End")
    page.keyboard.type("re")
    ghost, body = _suggestion(page, infills)
    assert body["input_prefix"] == START + "re" and body["input_suffix"] == "" and body["n_predict"] == 8
    assert body["fim_mode"] == "psm"  # the server's --fim-mode is the page's default
    direct = httpx.post(server.url + "/infill", json=body, timeout=60).json()["content"]
    assert ghost == direct
    # The suggestion sits at the cursor, before the rest of the text, and is not yet in the text.
    assert page.text_content("#before") == START + "re" and page.input_value("#code") == START + "re"
    page.keyboard.press("Tab")
    assert page.input_value("#code") == START + "re" + ghost
    assert page.evaluate("document.getElementById('code').selectionStart") == len(START + "re" + ghost)


def test_fim_mode_is_chosen_per_request(server, page):
    infills = []
    page.on("request", lambda r: infills.append(r) if r.url.endswith("/infill") else None)
    page.goto(server.url + "/")
    page.fill("#n_predict", "8")
    page.select_option("#mode", "spm")
    page.click("#code")
    page.keyboard.press("End")
    page.keyboard.type("x")
    ghost, body = _suggestion(page, infills)
    assert body["fim_mode"] == "spm"
    spm = httpx.post(server.url + "/infill", json=body, timeout=60).json()["content"]
    psm = httpx.post(server.url + "/infill", json={**body, "fim_mode": "psm"}, timeout=60).json()["content"]
    assert ghost == spm and spm != psm  # the request's order was used, not the server's
    page.keyboard.press("Escape")
    assert page.text_content("#ghost") == ""
