"""Two processes writing one key at once: the one whose shared-level write lost must
not keep its own value in L1 (outside probe, session 20).

A set writes the shared level, then L1. When another process's write of the same key
lands in between (its shared write after ours, its invalidation message applied here
before our L1 write), L1 was left holding the value the shared level had already
replaced, served until ``L1_MAX_TTL`` (probe: 1,320 of 85,685 reads under gunicorn
disagreed with Redis for up to 0.995 s, L1_MAX_TTL 1 s). Real redis-server; the two
processes are two MultiLevelCache configurations of this process, each with an L1 and
a listener of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from django_smartcache.backends.multilevel import MultiLevelCache
from tests.backends.test_multilevel import REDIS, _unique
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.redis


def _listening(cache: MultiLevelCache) -> MultiLevelCache:
    """``cache`` with its listener subscribed (which flushes L1 first: a write racing
    that flush would not stay in L1 either)."""
    cache.get("warm-up")
    assert eventually(lambda: cache._co.connected, 5.0)
    return cache


def _interleave(
    first: MultiLevelCache, second: MultiLevelCache, write: Callable[[], Any]
) -> None:
    """Run ``write()`` on ``second`` just after ``first``'s next write of the shared
    level, and wait until ``first`` has heard it: as if ``second``'s shared write
    had landed just after ``first``'s, and its message before ``first`` writes L1."""
    shared = first._levels[1]
    heard = first._co.invalidations
    original = {name: getattr(shared, name) for name in ("set", "set_many")}

    def late(name: str) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            for restore, method in original.items():
                setattr(shared, restore, method)
            answer = original[name](*args, **kwargs)
            write()
            assert eventually(lambda: first._co.invalidations > heard, 5.0)
            return answer

        return run

    for name in original:
        setattr(shared, name, late(name))


@pytest.mark.parametrize("many", [False, True])
def test_the_losing_writer_does_not_keep_its_value_in_l1(
    redis_url: str, make_cache: Callable[..., MultiLevelCache], many: bool
) -> None:
    prefix = _unique()
    level = {"BACKEND": REDIS, "LOCATION": redis_url}
    loser = _listening(make_cache(level, prefix, L1_MAX_TTL=300))
    winner = _listening(make_cache(level, prefix, L1_MAX_TTL=300))
    assert loser._co.token != winner._co.token  # (two processes, as far as Redis knows)
    _interleave(loser, winner, lambda: winner.set("k", "winner"))
    if many:
        loser.set_many({"k": "loser"})
    else:
        loser.set("k", "loser")
    # Redis holds the later write; so must every L1 that serves the key.
    assert loser._levels[1].get(loser.make_key("k")) == "winner"
    assert loser.get("k") == "winner"
    assert loser._levels[0].get(loser.make_key("k")) in (None, "winner")


def test_a_write_with_no_concurrent_change_still_fills_l1(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """The check costs nothing when nobody else wrote: L1 holds the value at once."""
    cache = _listening(make_cache({"BACKEND": REDIS, "LOCATION": redis_url}))
    cache.set("k", "v")
    cache.set_many({"a": 1, "b": 2})
    l1 = cache._levels[0]
    assert l1.get(cache.make_key("k")) == "v"
    assert l1.get(cache.make_key("a")) == 1


def test_the_losing_adder_does_not_keep_its_value_in_l1(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    """add() the same way (review): its add won in Redis, another process's set landed
    just after, and L1 kept the add's value while Redis held the set's."""
    prefix = _unique()
    level = {"BACKEND": REDIS, "LOCATION": redis_url}
    loser = _listening(make_cache(level, prefix, L1_MAX_TTL=300))
    winner = _listening(make_cache(level, prefix, L1_MAX_TTL=300))
    shared = loser._levels[1]
    original = shared.add
    heard = loser._co.invalidations

    def late(*args: Any, **kwargs: Any) -> Any:
        shared.add = original
        answer = original(*args, **kwargs)
        winner.set("k", "winner")  # another process's set lands just after our add
        assert eventually(lambda: loser._co.invalidations > heard, 5.0)
        return answer

    shared.add = late
    assert loser.add("k", "loser")
    assert loser._levels[1].get(loser.make_key("k")) == "winner"
    assert loser.get("k") == "winner"


def test_an_add_with_no_concurrent_change_still_fills_l1(
    redis_url: str, make_cache: Callable[..., MultiLevelCache]
) -> None:
    cache = _listening(make_cache({"BACKEND": REDIS, "LOCATION": redis_url}))
    assert cache.add("k", "v")
    assert cache._levels[0].get(cache.make_key("k")) == "v"
