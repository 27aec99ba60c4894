"""The Redis channel's publisher under a burst of writers (outside probe, session 16).

redis-py 8 bounds a ConnectionPool at 100 connections by default and refuses the
next one at once ("Too many connections"). Under ASGI each concurrent request's sync
calls run in a thread of their own: 150 writers at once dropped 60-180 invalidations,
and other processes kept their old L1 copies up to L1_MAX_TTL. The publisher's pool
now blocks (up to ``PUBLISH_POOL_WAIT``) for a free connection instead. Real
redis-server (the session's), real threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import redis

from django_smartcache.backends import _coherence
from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.test_multilevel import REDIS

pytestmark = pytest.mark.redis

WRITERS = 150


def _burst(cache: MultiLevelCache, writers: int, writes: int = 10) -> None:
    start = threading.Barrier(writers)

    def write(i: int) -> None:
        start.wait()
        for j in range(writes):
            cache.set(f"w{i}:{j}", "x" * 1000, 30)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_a_burst_of_writers_beyond_the_pool_publishes_every_change(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """The level itself is Django's RedisCache on a plain pool: under redis-py 8 it may
    refuse some of the burst's writes itself (its owner's pool; docs/multilevel.md says
    how to make it wait), but every write that landed was published."""
    cache = make_cache({"BACKEND": REDIS, "LOCATION": redis_url})
    _burst(cache, WRITERS)
    assert cache.stats()["coherence"]["errors"] == 0
    pool = cache._co._client().connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == _coherence.PUBLISH_POOL_SIZE


def test_a_level_on_a_blocking_pool_takes_the_whole_burst(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """As docs/multilevel.md advises for many threads: the level's pool waits too (50
    connections, redis-py's default for a blocking pool), and the publisher keeps to
    the level's bound."""
    cache = make_cache(
        {
            "BACKEND": REDIS,
            "LOCATION": redis_url,
            "OPTIONS": {"pool_class": "redis.BlockingConnectionPool", "timeout": 10},
        }
    )
    _burst(cache, WRITERS)
    stats = cache.stats()
    assert (stats["errors"], stats["coherence"]["errors"]) == (0, 0)
    assert cache._co._client().connection_pool.max_connections == 50


def test_a_level_pool_bounded_lower_bounds_the_publisher_too(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """The level's own bound is its owner's choice of how many connections this process
    may open: the publisher keeps to it, and writers wait their turn."""
    cache = make_cache(
        {
            "BACKEND": REDIS,
            "LOCATION": redis_url,
            "OPTIONS": {"max_connections": 4},
        }
    )
    pool = cache._co._client().connection_pool
    assert pool.max_connections == 4
    published = threading.Barrier(40)
    errors: list[BaseException] = []

    def publish() -> None:
        published.wait()
        try:
            for _ in range(20):
                # Our own token: the cache's listener ignores what it sent.
                cache._co._client().publish(cache._co.channel, cache._co.token + "k")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(pool._connections) <= 4


@pytest.mark.parametrize(
    ("bound", "size"),
    [(None, 100), (2**31, 100), (100, 100), (7, 7), (0, 100), (True, 100)],
)
def test_publisher_pool_size(bound: object, size: int) -> None:
    class Pool:
        max_connections = bound

    assert _coherence._publisher_pool_size(Pool()) == size
    assert _coherence._publisher_pool_size(None) == _coherence.PUBLISH_POOL_SIZE
