"""memcached (Django's PyMemcacheCache) as the lower level, on a real memcached.

Its answers to a bad call (a value over the item size, ``incr`` of text or past 2**64,
a key too long in bytes) are the caller's errors, raised as PyMemcacheCache alone
raises them; they used to be taken as an outage: the level skipped for
``RETRY_INTERVAL``, where a second process's ``add`` of a lock won too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("pymemcache")

from django.core.cache.backends.memcached import PyMemcacheCache
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheServerError,
)

from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.test_multilevel import SMART, _unique

MEMCACHED = "django.core.cache.backends.memcached.PyMemcacheCache"
RETRY = 0.2


@pytest.fixture
def over_memcached(private_memcached: Any) -> Iterator[MultiLevelCache]:
    cache = MultiLevelCache(
        "",
        {
            "KEY_PREFIX": _unique(),
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": SMART, "LOCATION": _unique()},
                    {"BACKEND": MEMCACHED, "LOCATION": private_memcached.location},
                ],
                "RETRY_INTERVAL": RETRY,
            },
        },
    )
    yield cache
    for health in cache._health:
        health.stop()


def _raw_client(server: Any) -> Any:
    """pymemcache's client as Django configures it, keys used as given."""
    return PyMemcacheCache(server.location, {})._cache


def _l2(cache: MultiLevelCache) -> dict[str, Any]:
    return cache.stats()["levels"][1]


def test_the_callers_errors_are_raised_and_the_level_stays_up(
    over_memcached: MultiLevelCache, private_memcached: Any
) -> None:
    cache = over_memcached
    other = _raw_client(private_memcached)
    cache.set("text", "abc")
    for call, error in (
        (lambda: cache.set("big", "x" * (1024 * 1024 + 10)), MemcacheServerError),
        (lambda: cache.incr("text"), MemcacheClientError),
        (lambda: cache.set("é" * 200, 1), MemcacheClientError),  # 400 bytes
    ):
        with pytest.raises(error):
            call()
        assert _l2(cache)["down"] is False and _l2(cache)["errors"] == 0
        # Still shared: a lock taken here is seen by every other client.
        lock = _unique()
        assert cache.add(lock, 1) is True
        assert other.add(cache.make_key(lock), 1) is False  # taken


def test_memcached_killed_and_restarted(
    over_memcached: MultiLevelCache, private_memcached: Any
) -> None:
    cache = over_memcached
    cache.set("kept", "v")
    private_memcached.stop()
    assert cache.get("kept") == "v"  # L1
    assert cache.get("absent", "default") == "default"
    time.sleep(RETRY * 1.5)  # the level is tried again while memcached is still down
    # pymemcache's own default would answer this write quietly for a second (stored
    # nowhere, no error): the level would look back, the write would not be repaired.
    cache.set("written", "during the outage")  # skipped in L2, kept in L1
    assert _l2(cache)["down"] is True and _l2(cache)["errors"] >= 2
    assert _l2(cache)["pending_repairs"] >= 1
    private_memcached.start()  # empty
    time.sleep(RETRY * 1.5)
    cache.set("after", "recovered")
    assert _raw_client(private_memcached).get(cache.make_key("after")) == "recovered"
    assert _l2(cache)["down"] is False and _l2(cache)["recoveries"] >= 1
