"""An ``entry_evicted`` receiver may use the cache whose L1 evicted (the signal's
documented promise), from inside that cache's write or promotion (review, session 20).

A MultiLevelCache writes L1 under its coherence lock, in step with the generation
(a promotion, and since session 20 every write), and the L1's eviction is delivered
in the same thread before the lock is released: a receiver writing the same cache
took that lock again, and a plain lock hung the process (reads already, every write
after the change). Real SQLite file, real threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from django_smartcache.backends.multilevel import MultiLevelCache
from django_smartcache.signals import entry_evicted
from tests.backends.test_multilevel import SMART, _unique

SQLITE = "django_smartcache.backends.SQLiteCache"


@pytest.fixture
def counting(tmp_path: Path) -> Iterator[MultiLevelCache]:
    """A MultiLevelCache whose 5-entry L1 evicts, with a receiver counting the
    evictions in the same cache."""
    cache = MultiLevelCache(
        "",
        {
            "OPTIONS": {
                "LEVELS": [
                    {
                        "BACKEND": SMART,
                        "LOCATION": _unique(),
                        "OPTIONS": {"MAX_ENTRIES": 5},
                    },
                    {"BACKEND": SQLITE, "LOCATION": str(tmp_path / "c.sqlite3")},
                ]
            }
        },
    )

    def count(sender: Any, **kwargs: Any) -> None:
        if not cache.add("evictions", 1):
            cache.incr("evictions")

    entry_evicted.connect(count)
    try:
        yield cache
    finally:
        entry_evicted.disconnect(count)
        cache.close()


def _within(seconds: float, work: Any) -> None:
    done = threading.Event()

    def run() -> None:
        work()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert done.wait(seconds), "the cache call hung (the coherence lock taken twice)"


def test_a_receiver_writing_the_cache_during_its_writes(
    counting: MultiLevelCache,
) -> None:
    _within(10, lambda: [counting.set(f"k{i}", i) for i in range(20)])
    assert counting.get("evictions", levels=None) >= 1


def test_a_receiver_writing_the_cache_during_its_promotions(
    counting: MultiLevelCache,
) -> None:
    level = counting.levels[1]
    level.set_many({counting.make_key(f"k{i}"): i for i in range(20)})
    # Each read misses the 5-entry L1 and promotes from the file: L1 evicts.
    _within(10, lambda: [counting.get(f"k{i}") for i in range(20)])
    assert counting.get("evictions") >= 1


def _all_finish(works: list[Callable[[], object]], seconds: float = 30) -> bool:
    """Run each of ``works`` in a daemon thread: whether all ended within ``seconds``
    (a thread that hangs is left behind, daemon, not waited for)."""
    threads = [threading.Thread(target=work, daemon=True) for work in works]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    return not [thread for thread in threads if thread.is_alive()]


def _multilevel(tmp_path: Path, name: str, policy: str = "adaptive") -> MultiLevelCache:
    return MultiLevelCache(
        "",
        {
            "OPTIONS": {
                "LEVELS": [
                    {
                        "BACKEND": SMART,
                        "LOCATION": _unique(),
                        "OPTIONS": {"MAX_ENTRIES": 5, "POLICY": policy},
                    },
                    {"BACKEND": SQLITE, "LOCATION": str(tmp_path / f"{name}.sqlite3")},
                ]
            }
        },
    )


def test_a_receiver_rewarming_with_get_or_set_under_threads(tmp_path: Path) -> None:
    """A receiver that re-warms what L1 evicted with ``get_or_set``, while 6 threads
    ``get_or_set`` through the 5-entry L1: it ran inside a flight's leader (and the
    coherence lock) and waited on another thread's flight, whose leader waited on
    this one (review: 6 of 6 threads stuck, 3 runs of 3). Evictions are sent once the
    flight is over, outside the lock."""
    import random

    cache = _multilevel(tmp_path, "rewarm")
    keys = [f"k{i}" for i in range(8)]
    for key in keys:
        cache.set(key, key)
    busy = threading.local()

    def rewarm(sender: Any, key: str, **kwargs: Any) -> None:
        if getattr(busy, "on", False):
            return
        busy.on = True
        try:
            name = key.split(":", 2)[-1]
            cache.get_or_set(name, lambda: name)
        finally:
            busy.on = False

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(1500):
            key = rnd.choice(keys)
            assert cache.get_or_set(key, lambda k=key: k) == key

    entry_evicted.connect(rewarm)
    try:
        assert _all_finish([partial(reader, seed) for seed in range(6)]), "hung"
    finally:
        entry_evicted.disconnect(rewarm)
        cache.close()


def test_two_caches_whose_receivers_write_each_other(tmp_path: Path) -> None:
    """A receiver writing the other cache on each eviction, one thread writing each:
    each held its own coherence lock and waited on the other's (review)."""
    first, second = _multilevel(tmp_path, "a"), _multilevel(tmp_path, "b")
    l1s = {id(first.levels[0]): second, id(second.levels[0]): first}

    def cross(sender: Any, cache: Any, **kwargs: Any) -> None:
        other = l1s.get(id(cache))
        if other is not None:
            other.set("evictions-of-the-other", 1)

    def work(cache: MultiLevelCache) -> None:
        for i in range(1000):
            cache.set(f"k{i}", i)

    entry_evicted.connect(cross)
    try:
        assert _all_finish([partial(work, first), partial(work, second)]), "hung"
    finally:
        entry_evicted.disconnect(cross)
        first.close()
        second.close()


def test_a_receiver_write_during_a_promotion_is_not_overwritten(tmp_path: Path) -> None:
    """``get_many`` promotes keys of two TTLs in two L1 writes; a receiver writing one
    of them when the first evicted ran between the two, and the second wrote the old
    value back over it in L1 (review: L1 'old' while the shared level held 'new')."""
    cache = _multilevel(tmp_path, "groups", policy="lru")
    l1, shared = cache.levels
    for i in range(5):
        cache.set(f"fill{i}", i)  # L1 full
    shared.set(cache.make_key("a"), "a", 100)  # in the shared level only
    shared.set(cache.make_key("b"), "old", 0.5)  # under L1_MAX_TTL: its own group
    done: list[int] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        if not done:
            done.append(1)
            cache.set("b", "new")

    entry_evicted.connect(receiver)
    try:
        cache.get_many(["a", "b"])
    finally:
        entry_evicted.disconnect(receiver)
    assert done
    assert shared.get(cache.make_key("b")) == "new"
    assert l1.get(cache.make_key("b")) in (None, "new")
    assert cache.get("b") == "new"
    cache.close()
