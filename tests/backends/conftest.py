"""Fixtures shared by the backend tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.test_multilevel import SMART, _unique

#: The fault tests' ``RETRY_INTERVAL``: short, so a test sees a level retried.
RETRY = 0.2


@pytest.fixture
def make_cache() -> Iterator[Callable[..., MultiLevelCache]]:
    """``make(l2, prefix="", **options)``: a MultiLevelCache over ``l2`` with an L1 of
    its own, ``RETRY_INTERVAL`` :data:`RETRY` unless ``options`` say otherwise. Each
    has a ``KEY_PREFIX`` of its own unless ``prefix`` is given (several caches sharing
    keys, as other processes would). Stops their listeners and repair timers after the
    test (the Redis they use may be gone)."""
    made: list[MultiLevelCache] = []

    def make(l2: dict[str, Any], prefix: str = "", **options: Any) -> MultiLevelCache:
        cache = MultiLevelCache(
            "",
            {
                "KEY_PREFIX": prefix or _unique(),
                "OPTIONS": {
                    "LEVELS": [{"BACKEND": SMART, "LOCATION": _unique()}, l2],
                    "L1_MAX_TTL": 1000,
                    "RETRY_INTERVAL": RETRY,
                    **options,
                },
            },
        )
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache._co.stop()
        for health in cache._health:
            health.stop()
