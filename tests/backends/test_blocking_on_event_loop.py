"""A sync cache call from async code (Django's ``cache_page`` on an async view makes
one) does a SQLite or Redis round trip on the event loop's thread: every other request
of the worker waits, up to BUSY_TIMEOUT behind a SQLite lock (ASGI probe: /ping at 2.8
s while another process held the write lock). Logged once per cache, with the way out;
the async API never does it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from django_smartcache.backends import SQLiteCache
from django_smartcache.backends.multilevel import MultiLevelCache


def _blocking_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "django_smartcache" and "event loop" in r.getMessage()
    ]


@pytest.mark.parametrize("kind", ["sqlite", "multilevel"])
def test_a_sync_call_on_the_event_loop_is_logged_once(
    kind: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    location = str(tmp_path / f"{kind}.sqlite3")
    cache: Any = (
        SQLiteCache(location, {}) if kind == "sqlite" else MultiLevelCache(location, {})
    )

    async def view() -> None:
        await cache.aset("async", 1)  # the async API: in a thread, nothing logged
        assert await cache.aget("async") == 1
        assert not _blocking_warnings(caplog)
        for i in range(3):
            cache.set(f"sync:{i}", i)  # as cache_page on an async view does

    with caplog.at_level(logging.WARNING, "django_smartcache"):
        asyncio.run(view())
        cache.set("outside", 1)  # no loop: nothing
    warned = _blocking_warnings(caplog)
    assert len(warned) == 1, warned
    assert "cache_page" in warned[0] and "aget" in warned[0]
    assert location in warned[0] or "MultiLevelCache" in warned[0]
    cache.close()


def test_a_multilevel_cache_without_a_file_is_named_by_its_alias(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With LEVELS and no LOCATION the warning named the cache by a hash of its
    configuration (an outside probe): the alias says which one."""
    from django.core.cache import caches
    from django.test import override_settings

    config = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "pages": {
            "BACKEND": "django_smartcache.backends.MultiLevelCache",
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": "django_smartcache.backends.SmartCache"},
                    {
                        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                        "LOCATION": "blocking-named-by-alias",
                    },
                ]
            },
        },
    }
    with override_settings(CACHES=config):
        cache = caches["pages"]

        async def view() -> None:
            cache.set("k", 1)

        with caplog.at_level(logging.WARNING, "django_smartcache"):
            asyncio.run(view())
        assert any("MultiLevelCache 'pages'" in m for m in _blocking_warnings(caplog))
