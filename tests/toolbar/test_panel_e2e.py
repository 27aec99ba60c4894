"""SmartCachePanel in a real headless Chromium (Debian's), driven by Playwright.

Skipped when ``/usr/bin/chromium`` or the ``playwright`` package is missing, unless
``SMARTCACHE_REQUIRE_BROWSER=1`` (CI), where that is an error. Browsers are never
downloaded: Playwright launches ``executable_path=/usr/bin/chromium``.

The server is Django's ``LiveServerThread`` (what the ``live_server`` fixture runs),
started here after the toolbar settings are in place: the session-wide ``live_server``
builds its handler, and so loads ``MIDDLEWARE``, before any per-test override.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; no browser download needed)"
    return None


_REASON = _missing()
if _REASON and os.environ.get("SMARTCACHE_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"SMARTCACHE_REQUIRE_BROWSER=1 but {_REASON}")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server(toolbar_settings_on: dict[str, Any], monkeypatch: Any) -> Iterator[str]:
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.test.testcases import LiveServerThread

    # Playwright's sync API runs an event loop in this thread.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # As LiveServerTestCase does: the test runner allows only "testserver".
    with override_settings(DEBUG=True, ALLOWED_HOSTS=["127.0.0.1"]):
        thread = LiveServerThread("127.0.0.1", StaticFilesHandler, port=0)
        thread.daemon = True
        thread.start()
        thread.is_ready.wait(10)
        if thread.error:
            raise thread.error
        try:
            yield f"http://127.0.0.1:{thread.port}"
        finally:
            thread.terminate()


@pytest.fixture
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$SMARTCACHE_E2E_ARTIFACTS`` or a pytest tmp dir."""
    chosen = os.environ.get("SMARTCACHE_E2E_ARTIFACTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("toolbar-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_panel_opens_and_shows_the_request(
    server: str, browser: Any, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(server + "/lookups/")
        button = page.locator("#djDebugToolbar a.SmartCachePanel")
        expect(button).to_contain_text("Smart cache")
        expect(button).to_contain_text("13 calls, 67% hits")
        button.click()
        panel = page.locator("#SmartCachePanel")
        expect(panel).to_be_visible()
        expect(panel).to_contain_text("Hit rate")
        calls = panel.locator("table.djdt-smartcache-calls tbody tr")
        expect(calls).to_have_count(13)
        # After delete_many: a miss on "greeting", the set, then a hit on it.
        expect(calls.nth(1)).to_contain_text("greeting")
        expect(calls.nth(1).locator("td").nth(4)).to_have_text("miss")
        expect(calls.nth(3).locator("td").nth(4)).to_have_text("hit")
        expect(panel.locator("table.djdt-smartcache-invalidations")).to_contain_text(
            "book 1 saved"
        )
        smart = panel.locator("#smartcache-alias-smart")
        expect(smart).to_contain_text("62.5%")  # 5 hits of 8 lookups
        multi = panel.locator("#smartcache-alias-multi")
        expect(multi.locator("td.djdt-smartcache-served-by")).to_have_text(
            "L1 1 \u00b7 L2 0"
        )
        shot = artifacts / "smartcache-panel.png"
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 10_000
        # The caches table and the level table fit the panel: nothing runs off it.
        right = panel.locator(".djDebugPanelContent").bounding_box()
        assert right is not None
        levels = panel.locator("table[data-alias='multi'] table[data-stat='levels']")
        levels.scroll_into_view_if_needed()
        for table in (panel.locator("table.djdt-smartcache-aliases"), levels):
            box = table.bounding_box()
            assert box is not None
            assert box["x"] + box["width"] <= right["x"] + right["width"]
        page.screenshot(path=str(artifacts / "smartcache-lifetime.png"))
    finally:
        page.close()


def test_evictions_in_the_browser(server: str, browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    try:
        page.goto(server + "/evictions/")
        page.locator("#djDebugToolbar a.SmartCachePanel").click()
        panel = page.locator("#SmartCachePanel")
        expect(panel.locator("table.djdt-smartcache-evictions")).to_contain_text(
            "capacity"
        )
        expect(panel.locator("#smartcache-alias-tiny")).to_contain_text("capacity: ")
    finally:
        page.close()


@pytest.mark.parametrize("path", ["/cached/?q=1", "/strict-csp/?q=1"])
def test_long_keys_wrap_and_the_result_column_stays_in_the_panel(
    server: str, browser: Any, path: str
) -> None:
    """``cache_page`` keys at a 1280 px window: the keys wrap instead of pushing the
    Result and Time columns off the panel. Also under ``style-src 'self'``: the
    panel's inline ``<style>`` was refused there (a console error, and the keys did
    not wrap: browser probe, MEDIUM); a stylesheet is what the policy allows."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    refused: list[str] = []
    page.on(
        "console",
        lambda m: (
            refused.append(m.text) if "Content Security Policy" in m.text else None
        ),
    )
    try:
        page.goto(server + path)
        page.locator("#djDebugToolbar a.SmartCachePanel").click()
        panel = page.locator("#SmartCachePanel")
        rows = panel.locator("table.djdt-smartcache-calls tbody tr")
        expect(rows.first).to_be_visible()
        content = panel.locator(".djDebugPanelContent").bounding_box()
        assert content is not None
        right = content["x"] + content["width"]
        assert rows.count() >= 3
        for i in range(rows.count()):
            for column in (4, 5):  # Result, Time
                box = rows.nth(i).locator("td").nth(column).bounding_box()
                assert box is not None
                assert box["x"] + box["width"] <= right, (i, column, box, right)
        assert not [
            text for text in refused if "SmartCachePanel" in text or "style" in text
        ]
    finally:
        page.close()
