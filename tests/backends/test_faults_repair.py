"""What the repair after a lower level's outage deletes, and what it must leave alone.

A process remembers the keys it wrote while a level was down ("suspects") and deletes
them from the level once it is back, so the level never serves the values those writes
replaced. These tests check the repair deletes nothing else: not the old value of a
write the level refused as the caller's error, not another process's newer write.
Real redis-servers (``tests/fixtures/redis_server.py``), real processes where the
defect needs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.test_faults import RETRY
from tests.backends.test_multilevel import REDIS, SMART, _unique

pytestmark = pytest.mark.redis


@pytest.fixture
def make_cache() -> Iterator[Callable[..., MultiLevelCache]]:
    """A MultiLevelCache over ``l2`` with an L1 of its own (``KEY_PREFIX`` given, as
    another process would have: several in one test share the keys)."""
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
            health.stop()  # no repair timer outlives the test (its Redis may be gone)


def test_a_write_refused_as_the_callers_error_leaves_no_suspect(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """Redis refuses an expiry of 1e20 s (``value is not an integer or out of range``):
    the set raised, as it should, but the key was also remembered as a suspect
    (``pending_repairs: 1`` with ``errors: 0``) and the repair deleted its old, valid
    value about a RETRY_INTERVAL later."""
    cache = make_cache({"BACKEND": REDIS, "LOCATION": redis_url})
    client = redis.Redis.from_url(redis_url)
    cache.set("one", "old", None)
    cache.set("many", "old", None)
    with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
        cache.set("one", "new", 1e20)
    with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
        cache.set_many({"many": "new"}, 1e20)
    stats = cache.stats()["levels"][1]
    assert stats["errors"] == 0 and stats["down"] is False
    assert stats["pending_repairs"] == 0
    time.sleep(RETRY * 4)  # a repair would have run by now
    assert client.get(cache.make_key("one")) is not None
    # (Django's RedisCache.set_many pipelines SET then EXPIRE: the SET took effect.)
    assert client.get(cache.make_key("many")) is not None
    cache.levels[0].clear()
    assert cache.get("one") == "old"


# -- another process's write after the level came back -------------------------------


def _worker(url: str, prefix: str, retry: float, commands: Any, results: Any) -> None:
    """A separate process with its own MultiLevelCache over Redis at ``url``: runs
    ``(method, *args)`` from ``commands`` and puts each answer in ``results``."""
    import django

    django.setup()
    cache = MultiLevelCache(
        "",
        {
            "KEY_PREFIX": prefix,
            "OPTIONS": {
                "LEVELS": [{"BACKEND": SMART}, {"BACKEND": REDIS, "LOCATION": url}],
                "RETRY_INTERVAL": retry,
            },
        },
    )
    cache.get("warm-up")  # starts the listener
    while True:
        command = commands.get()
        if command[0] == "quit":
            return
        if command[0] == "connected":
            deadline = time.monotonic() + 10
            while not cache._co.connected and time.monotonic() < deadline:
                time.sleep(0.01)
            results.put(cache._co.connected)
        else:
            results.put(getattr(cache, command[0])(*command[1:]))


class _Processes:
    """Named worker processes (spawned: no state inherited from the test runner)."""

    def __init__(self, names: str, url: str, prefix: str, retry: float) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.queues = {name: (context.Queue(), context.Queue()) for name in names}
        self.processes = [
            context.Process(target=_worker, args=(url, prefix, retry, *self.queues[n]))
            for n in names
        ]
        for process in self.processes:
            process.start()

    def __call__(self, name: str, *command: Any) -> Any:
        commands, results = self.queues[name]
        commands.put(command)
        return results.get(timeout=30)

    def stop(self) -> None:
        for commands, _ in self.queues.values():
            commands.put(("quit",))
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


def test_an_add_during_an_outage_never_deletes_a_later_holders_lock(
    private_redis: Any,
) -> None:
    """Redis down, process A's add wins in its L1 (documented: each process may win
    while the level is down). Redis back, B (which met no outage) takes the lock in
    Redis. A's repair, within RETRY_INTERVAL, deleted B's lock as a suspect of A's
    add, and C's add won as well: two holders (outside probe, 3 runs of 3)."""
    client = redis.Redis.from_url(private_redis.url)
    run = _Processes("ABC", private_redis.url, _unique(), retry=1.0)
    try:
        for name in "ABC":
            assert run(name, "connected")
        private_redis.stop()
        assert run("A", "add", "lock", "A", 60) is True  # L1 alone decided
        private_redis.start()  # empty
        assert run("B", "add", "lock", "B", 60) is True  # the lock, in Redis
        time.sleep(1.5)  # A's repair runs within RETRY_INTERVAL of the return
        assert run("C", "add", "lock", "C", 60) is False
        assert run("C", "get", "lock") == "B"
        assert client.exists(run("C", "make_key", "lock")) == 1
    finally:
        run.stop()
