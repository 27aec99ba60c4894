"""``stats()`` counts the caller's reads, tagged or not: one ``get`` is one hit or one miss.

The tagging layer reads bookkeeping of its own (tag versions, dependencies' write ids,
an ``add``'s occupant); those reads are not the caller's and are left out. A tagged
entry found stale is a miss: that is what the caller gets.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_smartcache.backends import MultiLevelCache, SmartCache

_names = itertools.count()


@pytest.fixture(params=["smart", "multilevel"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    n = next(_names)
    if request.param == "smart":
        yield SmartCache(f"tag-stats-{n}", {})
        return
    levels = [
        {"BACKEND": "django_smartcache.backends.SmartCache", "LOCATION": f"tl1-{n}"},
        {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "l2.sqlite3"),
        },
    ]
    ml = MultiLevelCache("", {"OPTIONS": {"LEVELS": levels}})
    yield ml
    ml.close()


def reads(cache: Any) -> tuple[int, int]:
    stats = cache.stats()
    return stats["hits"], stats["misses"]


def test_tagged_writes_read_nothing(cache: Any) -> None:
    cache.set("a", 1, tags=["t1"])
    cache.set_many({"b": 2, "c": 3}, tags=["t1", "t2"])
    cache.add("d", 4, tags=["t3"])
    cache.set("e", 5, depends_on=["a"])
    assert reads(cache) == (0, 0)


def test_a_tagged_hit_is_one_hit(cache: Any) -> None:
    cache.set("a", 1, tags=["t1", "t2"])
    assert cache.get("a") == 1
    assert reads(cache) == (1, 0)


def test_a_stale_tagged_entry_is_a_miss(cache: Any) -> None:
    cache.set("a", 1, tags=["t1"])
    cache.invalidate_tags("t1")
    assert cache.get("a") is None
    assert reads(cache) == (0, 1)


def test_get_many_counts_each_key_once(cache: Any) -> None:
    cache.set("fresh", 1, tags=["keep"])
    cache.set("stale", 2, tags=["drop"])
    cache.set("plain", 3)
    cache.invalidate_tags("drop")
    got = cache.get_many(["fresh", "stale", "plain", "absent"])
    assert got == {"fresh": 1, "plain": 3}
    assert reads(cache) == (2, 2)


def test_a_dependency_is_checked_without_a_read(cache: Any) -> None:
    cache.set("base", 1)
    cache.set("derived", 2, depends_on=["base"])
    assert cache.get("derived") == 2
    assert reads(cache) == (1, 0)
    cache.set("base", 10)  # the dependency changed: derived is stale
    assert cache.get("derived") is None
    assert reads(cache) == (1, 1)


def test_add_over_a_stale_occupant_reads_nothing(cache: Any) -> None:
    cache.set("a", 1, tags=["t1"])
    cache.invalidate_tags("t1")
    assert cache.add("a", 2, tags=["t1"])
    assert reads(cache) == (0, 0)
    assert cache.get("a") == 2


def test_async_twins_count_the_same(cache: Any) -> None:
    import asyncio

    cache.set("fresh", 1, tags=["keep"])
    cache.set("stale", 2, tags=["drop"])
    cache.invalidate_tags("drop")

    async def run() -> tuple[Any, Any, Any]:
        return (
            await cache.aget("fresh"),
            await cache.aget("stale"),
            await cache.aget_many(["fresh", "stale", "absent"]),
        )

    assert asyncio.run(run()) == (1, None, {"fresh": 1})
    assert reads(cache) == (2, 3)


def test_version_keys_are_not_among_the_hottest(tmp_path: Path) -> None:
    cache = SmartCache(f"tag-stats-{next(_names)}", {})
    cache.set("page", "html", tags=["model:shop.product"])
    for _ in range(5):
        cache.get("page")
    top = cache.stats()["top_accessed"]
    assert [key for key, _ in top] == [cache.make_key("page")]


def test_multilevel_recounts_a_stale_hit_at_the_level_it_came_from(
    tmp_path: Path,
) -> None:
    levels = [
        {"BACKEND": "django_smartcache.backends.SmartCache", "LOCATION": "tl1-x"},
        {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "l2.sqlite3"),
        },
    ]
    cache = MultiLevelCache("", {"OPTIONS": {"LEVELS": levels}})
    try:
        cache.set("one", 1, tags=["t"])
        cache.set("many", 2, tags=["t"])
        cache.levels[0].clear()  # only L2 holds them now
        cache.invalidate_tags("t")
        cache.levels[0].clear()
        assert cache.get("one") is None
        assert cache.get_many(["many"]) == {}
        stats = cache.stats()
        assert [level["hits"] for level in stats["levels"]] == [0, 0]
        assert stats["misses"] == 2
    finally:
        cache.close()


def test_hit_rate_is_none_before_any_read(cache: Any) -> None:
    """Both backends say "no reads yet" the same way (not a rate of 0)."""
    assert cache.stats()["hit_rate"] is None
    cache.get("absent")
    assert cache.stats()["hit_rate"] == 0.0


def test_uncounted_version_reads_still_keep_the_versions_resident() -> None:
    """Left out of the statistics, not out of the eviction policy: under LRU a tag's
    version key read on every tagged hit stays recent, so the entry stays valid."""
    cache = SmartCache(
        f"tag-stats-{next(_names)}", {"OPTIONS": {"MAX_ENTRIES": 4, "POLICY": "lru"}}
    )
    cache.set("page", "html", tags=["t"])  # the version key of "t" is written first
    for i in range(20):
        assert cache.get("page") == "html"
        cache.set(f"filler:{i}", i)  # evicts the least recently used entry
    assert reads(cache) == (20, 0)


# -- get_or_set, has_key, bookkeeping writes, stale drops (review findings) ---------------


@pytest.mark.parametrize("default", [5, lambda: 5], ids=["value", "callable"])
@pytest.mark.parametrize("tags", [None, ["t"]], ids=["plain", "tagged"])
def test_a_get_or_set_is_one_read(cache: Any, default: Any, tags: Any) -> None:
    """Its read-back of what was stored is bookkeeping, not a hit."""
    assert cache.get_or_set("k", default, tags=tags) == 5
    assert reads(cache) == (0, 1)
    assert cache.get_or_set("k", default, tags=tags) == 5
    assert reads(cache) == (1, 1)
    assert asyncio.run(cache.aget_or_set("j", default, tags=tags)) == 5
    assert reads(cache) == (1, 2)


def test_callers_waiting_for_one_computation_each_count_a_miss(cache: Any) -> None:
    started = threading.Event()
    flight = (cache.singleflight_scope(), cache.make_key("k"))

    def slow() -> int:
        started.set()
        # Computes until the 7 other callers wait for it: a fixed 0.2 s could end on a
        # loaded machine before they arrived, and they then read the stored value (hits).
        deadline = time.monotonic() + 30
        while cache._singleflight.waiting(flight) < 7 and time.monotonic() < deadline:
            time.sleep(0.001)
        return 5

    def call() -> None:
        cache.get_or_set("k", slow)

    first = threading.Thread(target=call)
    first.start()
    started.wait(30)
    others = [threading.Thread(target=call) for _ in range(7)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join()
    assert reads(cache) == (0, 8)


def test_has_key_is_not_a_read_wherever_the_key_is(cache: Any) -> None:
    cache.set("a", 1)
    if isinstance(cache, MultiLevelCache):
        cache.levels[0].clear()  # in L2 only: has_key asks the level below
    assert cache.has_key("a") and not cache.has_key("nope")
    assert reads(cache) == (0, 0)


def test_tag_versions_written_are_not_sets() -> None:
    cache = SmartCache(f"tag-stats-{next(_names)}", {})
    cache.set("a", 1, tags=["t", "u"])
    assert cache.stats()["sets"] == 1
    cache.invalidate_tags("t")
    assert cache.stats()["sets"] == 1


def test_a_stale_entry_read_leaves_as_invalidated_not_deleted() -> None:
    cache = SmartCache(f"tag-stats-{next(_names)}", {})
    cache.set("a", 1, tags=["t"])
    cache.invalidate_tags("t")
    assert cache.get("a") is None
    stats = cache.stats()
    assert (stats["deletes"], stats["evictions_invalidated"]) == (0, 1)
    assert stats["entries"] == 1  # the tag's version key only


def test_a_multilevel_l1_does_not_count_tag_version_reads(tmp_path: Path) -> None:
    levels = [
        {"BACKEND": "django_smartcache.backends.SmartCache", "LOCATION": "tl1-own"},
        {
            "BACKEND": "django_smartcache.backends.SQLiteCache",
            "LOCATION": str(tmp_path / "l2.sqlite3"),
        },
    ]
    ml = MultiLevelCache("", {"OPTIONS": {"LEVELS": levels}})
    try:
        ml.set("t", 1, tags=["x", "y"])
        for _ in range(10):
            assert ml.get("t") == 1
        l1 = ml.levels[0].stats()
        assert (l1["hits"], l1["misses"]) == (10, 0)
        assert [key for key, _ in l1["top_accessed"]] == [":1:t"]
    finally:
        ml.close()
