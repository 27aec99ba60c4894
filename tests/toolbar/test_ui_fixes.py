"""Panel fixes: the Cache-panel note."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from tests.toolbar.test_panel import PANEL_ID, toolbar_get

pytestmark = pytest.mark.usefixtures("toolbar_settings_on")


def _content(client: Any, response: Any) -> str:
    with override_settings(DEBUG=True):
        return client.get(
            "/__debug__/render_panel/",
            {"request_id": response.headers["djdt-request-id"], "panel_id": PANEL_ID},
        ).json()["content"]


def test_note_goes_when_the_cache_panel_is_unticked(client: Any) -> None:
    """The toolbar leaves its wrappers on the instances when its Cache panel is turned
    off (``_djdt_panel = None``): they only call through, so there is no note."""
    on = _content(client, toolbar_get(client, "/lookups/"))
    assert 'class="djdt-smartcache-nested"' in on
    client.cookies["djdtCachePanel"] = "off"  # what unticking the panel sets
    response = toolbar_get(client, "/lookups/")
    assert caches["smart"]._djdt_panel is None  # its wrappers are still there
    off = _content(client, response)
    assert "djdt-smartcache-nested" not in off
    assert "<code>greeting</code>" in off  # still recorded
    client.cookies["djdtCachePanel"] = "on"
    assert 'class="djdt-smartcache-nested"' in _content(
        client, toolbar_get(client, "/lookups/")
    )
