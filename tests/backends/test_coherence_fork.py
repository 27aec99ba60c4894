"""A forked child does not serve what its parent cached over Redis (outside probe,
session 20).

gunicorn ``--preload`` builds the app, and maybe caches, in the parent: each worker
inherits the parent's L1. Its listener subscribes (and flushes L1) only once the
worker's first call has started it, some milliseconds later, and a change made
meanwhile reached no one: the probe's workers served the inherited copy up to 56 ms
after another worker's ``set`` had returned. The child's first call flushes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import redis

from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.test_multilevel import REDIS
from tests.backends.test_smart_fork import _fork_and_run
from tests.fixtures.waiting import eventually

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
]


def test_a_forked_child_does_not_serve_the_parents_l1_copy(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    cache = make_cache({"BACKEND": REDIS, "LOCATION": redis_url}, L1_MAX_TTL=300)
    cache.get("warm-up")  # the listener subscribes (and flushes L1) first
    assert eventually(lambda: cache._co.connected, 5.0)
    cache.set("k", "cached by the parent")
    # Changed in Redis before the child's listener can hear of it (a write no
    # channel carries to the child: it has none yet).
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(
            cache.make_key("k"), cache._levels[1]._cache._serializer.dumps("new")
        )
    finally:
        client.close()
    assert cache._levels[0].get(cache.make_key("k")) == "cached by the parent"

    def child() -> bool:
        return bool(cache.get("k") == "new")

    assert _fork_and_run(child) == 0
