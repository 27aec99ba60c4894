"""Public signals sent by the backends: ``entry_evicted`` and ``stampede_wait``.

Real receivers on real caches: every test connects a receiver, makes the cache do
the thing, and compares what the receiver heard with the cache's own counters.
"""

from __future__ import annotations

import asyncio
import threading
import time
from itertools import count
from typing import Any, Self

import pytest
from django.core.cache.backends.locmem import LocMemCache

from django_smartcache.backends import SmartCache
from django_smartcache.backends.base import SingleFlightMixin
from django_smartcache.core.singleflight import SingleFlightGetOrSetMixin
from django_smartcache.core.sizing import entry_weight
from django_smartcache.signals import entry_evicted, stampede_wait
from tests.fixtures.waiting import wait_until

_names = count()


def make(location: str | None = None, **params: Any) -> SmartCache:
    """A fresh store per test unless ``location`` is shared on purpose."""
    return SmartCache(location or f"test-signals-{next(_names)}", params)


class Heard:
    """A connected receiver that records every call's keyword arguments."""

    def __init__(self, signal: Any) -> None:
        self.signal = signal
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal")
        with self.lock:
            self.calls.append({"sender": sender, **kwargs})

    def keys(self, cause: str) -> list[str]:
        return [call["key"] for call in self.calls if call["cause"] == cause]

    def __enter__(self) -> Self:
        self.signal.connect(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.signal.disconnect(self)


# -- entry_evicted ----------------------------------------------------------------------------


def test_capacity_evictions_report_exactly_the_evicted_keys():
    size = 1000
    cache = make(OPTIONS={"MAX_MEMORY": 6 * entry_weight(size + 40)})
    written = [f"k{i}" for i in range(50)]
    with Heard(entry_evicted) as heard:
        for i, key in enumerate(written):
            cache.set(key, "x" * size)
            if i % 4 == 0:
                cache.get(written[i // 2])
        cache.set_many({f"m{i}": "y" * size for i in range(5)})
    written += [f"m{i}" for i in range(5)]
    gone = [cache.make_key(key) for key in written if not cache.has_key(key)]
    assert len(gone) > 40
    assert sorted(heard.keys("capacity")) == sorted(gone)
    assert len(heard.calls) == cache.stats()["evictions_capacity"] == len(gone)
    assert all(c["sender"] is SmartCache and c["cache"] is cache for c in heard.calls)


def test_expired_entries_are_reported_as_they_are_reclaimed():
    cache = make()
    cache.set("read", 1, timeout=0.05)
    cache.set("swept", 2, timeout=0.05)
    cache.set("kept", 3, timeout=None)
    with Heard(entry_evicted) as heard:
        cache.set("zero", 4, timeout=0)  # Django: written and expired at once
        assert heard.keys("expired") == [cache.make_key("zero")]
        time.sleep(0.1)
        assert cache.get("read") is None  # reclaimed by the read (or the sweeper)
        cache.clear_expired()  # "swept", unless that read's sweep took it already
    assert sorted(heard.keys("expired")) == sorted(
        cache.make_key(key) for key in ("zero", "read", "swept")
    )
    assert len(heard.calls) == cache.stats()["evictions_expired"] == 3
    assert cache.get("kept") == 3


def test_tag_invalidation_reports_the_purged_entries():
    cache = make(KEY_PREFIX="shop")
    for i in range(10):
        cache.set(f"book-{i}", i, tags=["books"])
    cache.set("author", "a", tags=["authors"])
    with Heard(entry_evicted) as heard:
        cache.invalidate_tags("books")
        # Invalidation is O(1) per tag: later writes free the entries a batch at a time.
        for i in range(3):
            cache.set(f"other-{i}", i)
    assert sorted(heard.keys("invalidated")) == sorted(
        cache.make_key(f"book-{i}") for i in range(10)
    )
    assert len(heard.calls) == cache.stats()["evictions_invalidated"] == 10
    assert cache.get("author") == "a"


def test_deletes_overwrites_and_clear_send_nothing():
    cache = make()
    with Heard(entry_evicted) as heard:
        cache.set("a", 1)
        cache.set("a", 2)
        cache.delete("a")
        cache.set_many({"b": 1, "c": 2})
        cache.delete_many(["b"])
        cache.delete_pattern("*")
        cache.set("d", 1)
        cache.clear()
    assert heard.calls == []


def test_a_receiver_that_uses_the_cache_does_not_deadlock():
    size = 1000
    cache = make(OPTIONS={"MAX_MEMORY": 4 * entry_weight(size + 40)})
    logged: list[str] = []

    def receiver(sender: Any, cache: SmartCache, key: str, cause: str, **kw: Any):
        if ":log-" in key:
            return
        assert cache.get("anything") is None  # a read under the store's lock would hang
        cache.set(f"log-{len(logged)}", key)  # a write that evicts again: nested sends
        logged.append(key)

    entry_evicted.connect(receiver)
    done = threading.Event()

    def writer():
        for i in range(20):
            cache.set(f"k{i}", "x" * size)
        done.set()

    try:
        threading.Thread(target=writer, daemon=True).start()
        assert done.wait(10), "a receiver using the cache deadlocked it"
    finally:
        entry_evicted.disconnect(receiver)
    gone = [cache.make_key(f"k{i}") for i in range(20) if not cache.has_key(f"k{i}")]
    assert len(gone) >= 16
    assert sorted(logged) == sorted(gone)


def test_aliases_sharing_a_store_report_through_the_instance_that_created_it():
    location = f"test-signals-shared-{next(_names)}"
    options = {"MAX_ENTRIES": 3, "MAX_MEMORY": None}
    one = make(location, KEY_PREFIX="one", OPTIONS=options)
    two = make(location, KEY_PREFIX="two", OPTIONS=options)
    with Heard(entry_evicted) as heard:
        for i in range(5):
            two.set(f"k{i}", i)
    assert [c["key"] for c in heard.calls] == ["two:1:k0", "two:1:k1"]
    assert all(c["cache"] is one for c in heard.calls)


def test_no_receiver_no_send_and_receivers_for_another_sender_hear_nothing():
    cache = make(OPTIONS={"MAX_ENTRIES": 2, "MAX_MEMORY": None})
    heard = Heard(entry_evicted)
    entry_evicted.connect(heard, sender=LocMemCache)
    try:
        for i in range(5):
            cache.set(f"k{i}", i)
    finally:
        entry_evicted.disconnect(heard, sender=LocMemCache)
    assert heard.calls == []
    assert cache.stats()["evictions_capacity"] == 3


# -- stampede_wait from get_or_set --------------------------------------------------------------


def _cold_get_or_set_from_threads(cache: Any, threads_count: int) -> tuple[list, list]:
    flight_key = (cache.singleflight_scope(), cache.make_key("cold"))
    runs: list[int] = []
    results: list[Any] = []

    def compute() -> str:
        runs.append(1)
        # Hold the computation until every other thread waits for it.
        wait_until(
            lambda: (
                SingleFlightGetOrSetMixin._singleflight.waiting(flight_key)
                == threads_count - 1
            )
        )
        return "computed"

    threads = [
        threading.Thread(
            target=lambda: results.append(cache.get_or_set("cold", compute))
        )
        for _ in range(threads_count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs, results


def test_stampede_wait_from_ten_threads_on_one_cold_get_or_set():
    cache = make(KEY_PREFIX="p")
    with Heard(stampede_wait) as heard:
        runs, results = _cold_get_or_set_from_threads(cache, 10)
    assert runs == [1]
    assert results == ["computed"] * 10
    assert len(heard.calls) == 9
    for call in heard.calls:
        assert call["sender"] is SmartCache and call["cache"] is cache
        assert (call["key"], call["scope"]) == ("p:1:cold", "process")
        assert call["seconds"] >= 0
    with Heard(stampede_wait) as heard:
        assert cache.get_or_set("cold", lambda: "again") == "computed"  # a hit: no wait
    assert heard.calls == []


def test_stampede_wait_from_async_get_or_set():
    cache = make()
    runs: list[int] = []

    def compute() -> str:
        runs.append(1)
        return "computed"

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(cache.aget_or_set("cold", compute) for _ in range(10))
        )

    with Heard(stampede_wait) as heard:
        results = asyncio.run(main())
    assert runs == [1]
    assert results == ["computed"] * 10
    assert [c["scope"] for c in heard.calls] == ["process"] * 9
    assert {c["key"] for c in heard.calls} == {cache.make_key("cold")}


class SignalledLocMemCache(SingleFlightMixin, LocMemCache):
    """What SQLiteCache and MultiLevelCache get by swapping their mixin for this one."""


def test_the_django_layer_mixin_makes_any_backend_send_stampede_wait():
    cache = SignalledLocMemCache(f"test-signals-locmem-{next(_names)}", {})
    with Heard(stampede_wait) as heard:
        runs, results = _cold_get_or_set_from_threads(cache, 10)
    assert runs == [1]
    assert results == ["computed"] * 10
    assert len(heard.calls) == 9
    assert {(c["sender"], c["scope"]) for c in heard.calls} == {
        (SignalledLocMemCache, "process")
    }


@pytest.mark.parametrize("backend", ["MultiLevelCache", "SQLiteCache"])
def test_file_backed_get_or_set_sends_stampede_wait(tmp_path, backend):
    from django_smartcache import backends

    cls = getattr(backends, backend)
    cache = cls(str(tmp_path / "cache.sqlite3"), {"KEY_PREFIX": "fb"})
    with Heard(stampede_wait) as heard:
        runs, results = _cold_get_or_set_from_threads(cache, 6)
    assert runs == [1]
    assert results == ["computed"] * 6
    assert len(heard.calls) == 5
    for call in heard.calls:
        assert call["sender"] is cls and call["cache"] is cache
        assert (call["key"], call["scope"]) == ("fb:1:cold", "process")


def test_stores_record_evictions_only_while_someone_listens():
    cache = make(OPTIONS={"MAX_MEMORY": None, "MAX_ENTRIES": 2})
    assert cache._store.on_evict is None  # nobody listens: nothing is recorded
    with Heard(entry_evicted) as heard:
        assert cache._store.on_evict is not None
        for i in range(4):
            cache.set(f"k{i}", i)
        assert len(heard.keys("capacity")) == 2
    assert cache._store.on_evict is None
    cache.set("k9", 9)  # evicts, unheard and unrecorded
    assert cache._store._evicted == []
