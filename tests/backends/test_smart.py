"""SmartCache through Django's API: sharing, threads, pickling, options, stats, async."""

from __future__ import annotations

import asyncio
import logging
import pickle
import sys
import threading
import time
import warnings
from itertools import count
from typing import Any

import pytest
from django.core.cache import CacheKeyWarning
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured

from django_smartcache.backends import SmartCache
from django_smartcache.backends.base import UnpicklableValueError
from django_smartcache.core.sizing import entry_weight

_names = count()


def make(location: str | None = None, **options) -> SmartCache:
    """A fresh store per test unless ``location`` is shared on purpose."""
    location = location or f"test-smart-{next(_names)}"
    return SmartCache(location, {"OPTIONS": options})


def test_instances_with_the_same_location_share_one_store_across_threads():
    first = make("shared-loc")
    first.clear()
    first.set("k", "v")
    seen = []
    thread = threading.Thread(target=lambda: seen.append(make("shared-loc").get("k")))
    thread.start()
    thread.join()
    assert seen == ["v"]
    assert make("another-loc").get("k") is None


def test_incr_under_eight_threads_loses_no_increment():
    location = "incr-threads"
    cache = make(location)
    cache.set("n", 0)
    per_thread = 500

    def work():
        local = SmartCache(location, {})  # Django gives each thread its own instance
        for _ in range(per_thread):
            local.incr("n")

    threads = [threading.Thread(target=work) for _ in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(
        1e-6
    )  # switch threads often, so a racy incr would lose updates
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert cache.get("n") == 8 * per_thread


def test_add_is_atomic_exactly_one_thread_wins():
    cache = make()
    barrier = threading.Barrier(8)
    results = []

    def work(i):
        barrier.wait()
        results.append(cache.add("once", i))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


def test_values_are_isolated_from_later_mutation():
    cache = make()
    value = {"a": [1]}
    cache.set("k", value)
    value["a"].append(2)
    fetched = cache.get("k")
    fetched["a"].append(3)
    assert cache.get("k") == {"a": [1]}


class Unpicklable:
    def __reduce__(self):
        raise TypeError("no pickling here")


def test_unpicklable_value_raises_clearly_and_leaves_the_cache_unchanged():
    cache = make()
    cache.set("k", "old")
    with pytest.raises(UnpicklableValueError, match="cannot be pickled") as info:
        cache.set("k", Unpicklable())
    assert isinstance(info.value, pickle.PickleError)
    assert isinstance(info.value, TypeError)
    assert cache.get("k") == "old"
    with pytest.raises(UnpicklableValueError):
        cache.set_many({"a": 1, "b": threading.Lock()})
    assert cache.get("a") is None
    assert cache.stats()["sets"] == 1


class LockProbe:
    """Records whether the store's lock is held while it is pickled (Django #20613)."""

    def __init__(self, cache, seen):
        self.cache, self.seen = cache, seen

    def __getstate__(self):
        self.seen.append(self.cache._store.lock.locked())
        return {}


def test_pickling_happens_outside_the_lock():
    cache = make()
    seen = []
    cache.set("set", LockProbe(cache, seen))
    cache.add("add", LockProbe(cache, seen))
    cache.set_many({"many": LockProbe(cache, seen)})
    assert seen == [False, False, False]


def test_oversized_value_is_refused_logged_and_add_returns_false(caplog):
    cache = make(MAX_MEMORY="64KB", MAX_ITEM_SIZE="16KB")
    cache.set("small", "x")
    with caplog.at_level(logging.WARNING, logger="django_smartcache"):
        assert cache.add("big", "x" * 20_000) is False
        cache.set("big", "x" * 20_000)
        assert cache.set_many({"ok": 1, "big2": "y" * 20_000}) == ["big2"]
    assert "big" in caplog.text
    assert cache.get("big") is None
    assert cache.get("small") == "x"
    assert cache.stats()["evictions"] == 0


def test_memory_budget_is_respected_through_django():
    cache = make(MAX_MEMORY=20 * entry_weight(1100), POLICY="lru")
    for i in range(100):
        cache.set(i, b"x" * 1000)
    stats = cache.stats()
    assert stats["bytes_used"] <= 20 * entry_weight(1100)
    assert stats["evictions_capacity"] == 100 - stats["entries"]
    assert cache.get(99) == b"x" * 1000


def test_incr_decr_and_errors():
    cache = make()
    cache.set("n", 1)
    assert cache.incr("n", 10) == 11
    assert cache.decr("n", 2) == 9
    with pytest.raises(ValueError, match="not found"):
        cache.incr("missing")
    cache.set("none", None)
    with pytest.raises(TypeError):
        cache.incr("none")
    assert cache.get("none") is None and cache.has_key("none")


def test_stats_and_clear_expired():
    cache = make()
    now = [0.0]
    cache._store._clock = lambda: now[0]  # the store's injectable clock
    cache.set("a", 1, timeout=5)
    cache.set("b", 2, timeout=5)
    cache.set("c", 3, timeout=None)
    cache.get("a")
    cache.get("zz")
    now[0] = 6.0
    assert cache.clear_expired() == 2
    stats = cache.stats()
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["hit_rate"] == 0.5
    assert stats["entries"] == 1
    assert stats["evictions_expired"] == 2
    assert stats["top_accessed"] == []  # "a", the only key read, has expired
    cache.get("c")
    cache.get("c")
    assert cache.stats()["top_accessed"] == [(":1:c", 2)]


def test_versions_prefix_and_custom_key_function():
    cache = SmartCache(
        "kf",
        {
            "KEY_PREFIX": "p",
            "VERSION": 3,
            "KEY_FUNCTION": lambda k, p, v: f"{p}|{v}|{k}",
        },
    )
    cache.set("k", 1)
    assert cache.get("k") == 1
    assert cache.incr_version("k") == 4
    assert cache.get("k") is None and cache.get("k", version=4) == 1
    assert cache.get_many(["k"], version=4) == {"k": 1}


KEYS = [
    "a" * 251,
    "with space",
    "ctrl\x01char",
    "del\x7f",
    "tab\tkey",
    "unicode-清-ok",
    "next-line\x85",  # not printable, but memcached accepts it: no warning
    "a" * 300 + " both",
]


@pytest.mark.parametrize("key", KEYS)
def test_key_warnings_are_djangos_exactly(key):
    ours, theirs = make(), LocMemCache("warn-ref", {})
    for method, args in (("get", ()), ("set", (1,)), ("get_many", None)):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            call = [[key]] if args is None else [key, *args]
            getattr(ours, method)(*call)
        with warnings.catch_warnings(record=True) as expected:
            warnings.simplefilter("always")
            getattr(theirs, method)(*call)
        # Key warnings only: a ResourceWarning of a collected socket may land here.
        got = [w for w in got if issubclass(w.category, CacheKeyWarning)]
        expected = [w for w in expected if issubclass(w.category, CacheKeyWarning)]
        assert [(w.category, str(w.message)) for w in got] == [
            (w.category, str(w.message)) for w in expected
        ]


def test_async_twins():
    cache = make()

    async def scenario():
        await cache.aset("a", 1)
        assert await cache.aget("a") == 1
        assert await cache.aadd("a", 2) is False
        assert await cache.aincr("a") == 2
        assert await cache.adecr("a") == 1
        assert await cache.aset_many({"b": 2, "c": 3}) == []
        assert await cache.aget_many(["a", "b", "zz"]) == {"a": 1, "b": 2}
        assert await cache.ahas_key("c") is True
        assert await cache.atouch("c", 100) is True
        assert await cache.adelete("c") is True
        await cache.adelete_many(["a"])
        assert await cache.aget_or_set("d", 4) == 4
        assert await cache.aincr_version("d") == 2
        await cache.aclear()
        assert await cache.aget("b") is None
        await cache.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"MAX_MEMORY": "lots"}, "MAX_MEMORY"),
        ({"MAX_MEMORY": 0}, "MAX_MEMORY"),
        ({"MAX_MEMORY": None}, "MAX_MEMORY"),
        ({"MAX_ENTRIES": "ten"}, "MAX_ENTRIES"),
        ({"MAX_ENTRIES": 0}, "MAX_ENTRIES"),
        ({"MAX_ENTRIES": True}, "MAX_ENTRIES"),
        ({"MAX_ENTRIES": [5]}, "MAX_ENTRIES"),
        ({"MAX_ITEM_SIZE": -3}, "MAX_ITEM_SIZE"),
        ({"POLICY": "random"}, "POLICY"),
        ({"MAX_MEMROY": "1MB"}, "MAX_MEMROY"),
        ({"CULL_FREQUENCY": "abc"}, "CULL_FREQUENCY"),
        ({"CULL_FREQUENCY": -3}, "CULL_FREQUENCY"),
        # Django's BaseCache reads these with int(): OverflowError, naming nothing.
        ({"MAX_ENTRIES": float("inf")}, "MAX_ENTRIES"),
        ({"CULL_FREQUENCY": float("inf")}, "CULL_FREQUENCY"),
    ],
)
def test_bad_options_raise_improperly_configured_naming_the_option(options, named):
    with pytest.raises(ImproperlyConfigured, match=named):
        make(**options)


@pytest.mark.parametrize("given", [["x"], "abc", 5])
def test_options_that_are_not_a_dict_are_named(given):
    with pytest.raises(ImproperlyConfigured, match="OPTIONS must be a dict"):
        SmartCache("", {"OPTIONS": given})


def test_option_defaults_and_forms():
    stats = make().stats()
    assert stats["max_bytes"] == 64 * 1024 * 1024
    assert stats["max_entries"] is None and stats["max_item_size"] is None
    stats = make(
        MAX_MEMORY="1.5MB", MAX_ENTRIES=10, MAX_ITEM_SIZE=4096, POLICY="lru"
    ).stats()
    assert (stats["max_bytes"], stats["max_entries"], stats["max_item_size"]) == (
        int(1.5 * 1024 * 1024),
        10,
        4096,
    )
    assert stats["policy"] == "lru"
    assert make(MAX_MEMORY=None, MAX_ENTRIES=5).stats()["max_bytes"] is None
    # MAX_ENTRIES is read as Django (and SQLiteCache) read it: int() of it.
    assert make(MAX_ENTRIES="500").stats()["max_entries"] == 500
    make(CULL_FREQUENCY=0)  # Django's generic option: accepted, ignored


# -- tags, single flight ---------------------------------------------------------------


def test_invalidated_tag_frees_bytes_and_counts_invalidated_evictions():
    cache = make(MAX_MEMORY="16MB")
    cache.set_many({f"k{i}": "x" * 500 for i in range(200)}, tags=["big"])
    cache.set("keep", "y", tags=["other"])
    cache.set("plain", "z")
    full = cache.stats()
    assert full["tagged_entries"] == 201 and full["tags_indexed"] == 2
    cache.invalidate_tags("big")
    # Invalidation itself removed nothing: the keys wait in the purge queue...
    assert cache.stats()["purge_pending"] == 200
    assert cache.get("k0") is None  # ...but are already misses.
    cache._store.purge_invalidated()
    after = cache.stats()
    assert after["purge_pending"] == 0 and after["tagged_entries"] == 1
    assert after["evictions_invalidated"] >= 199  # k0 may have left as stale on read
    assert after["bytes_used"] < full["bytes_used"] - 200 * 500
    assert cache.get("keep") == "y" and cache.get("plain") == "z"


def test_tagged_values_unwrap_in_every_read_path():
    cache = make()
    cache.set("a", [1], tags=["t"])
    cache.add("b", {"b": 2}, tags=["t"])
    cache.set("c", 3)
    assert cache.get("a") == [1]
    assert cache.get_many(["a", "b", "c", "nope"]) == {"a": [1], "b": {"b": 2}, "c": 3}
    assert cache.has_key("a") and cache.has_key("c") and not cache.has_key("nope")
    assert cache.incr("c") == 4
    cache.set("n", 10, tags=["t"])
    assert cache.incr("n", 5) == 15 and cache.get("n") == 15
    cache.invalidate_tags("t")
    assert not cache.has_key("a")
    assert cache.get_many(["a", "b", "c", "n"]) == {"c": 4}
    # An untagged add is not blocked by a stale tagged occupant.
    cache.set("s", "old", tags=["u"])
    cache.invalidate_tags("u")
    assert cache.add("s", "new") and cache.get("s") == "new"


def test_aliases_sharing_a_store_do_not_purge_each_others_tags():
    one = SmartCache("tags-shared", {"KEY_PREFIX": "one"})
    two = SmartCache("tags-shared", {"KEY_PREFIX": "two"})
    one.clear()
    one.set("k", 1, tags=["t"])
    two.set("k", 2, tags=["t"])
    one.invalidate_tags("t")
    one._store.purge_invalidated()
    assert one.get("k") is None and two.get("k") == 2


def test_get_or_set_is_single_flight_and_tagged():
    cache = make()
    threads = 8
    barrier = threading.Barrier(threads)
    release = threading.Event()
    calls = []

    def compute():
        calls.append(1)
        release.wait(10)
        return "value"

    results = []

    def worker():
        barrier.wait()
        results.append(cache.get_or_set("hot", compute, 60, tags=["t"]))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    # Wait until every other caller is parked on the one computation.
    scope = (cache.singleflight_scope(), cache.make_key("hot"))
    while cache._singleflight.waiting(scope) < threads - 1:
        if not any(t.is_alive() for t in pool):
            break
        threading.Event().wait(0.001)
    release.set()
    for thread in pool:
        thread.join()
    assert calls == [1] and results == ["value"] * threads
    cache.invalidate_tags("t")
    assert cache.get_or_set("hot", lambda: "fresh", tags=["t"]) == "fresh"


@pytest.mark.parametrize("first", ["thread", "coroutine"])
def test_a_thread_and_a_coroutine_missing_one_key_compute_once(first: str) -> None:
    """docs/backends.md: once per process for concurrent misses, whether the callers
    are threads (``get_or_set``) or coroutines (``aget_or_set``), in either order."""
    cache = make()
    started, release = threading.Event(), threading.Event()
    calls = []

    def compute():
        calls.append(1)
        started.set()
        release.wait(10)
        return "value"

    results = []
    scope = (cache.singleflight_scope(), cache.make_key("hot"))

    async def coroutine():
        results.append(await cache.aget_or_set("hot", compute, 60))

    def in_thread():
        results.append(cache.get_or_set("hot", compute, 60))

    async def main():
        if first == "thread":
            leader = threading.Thread(target=in_thread)
            leader.start()
            started.wait(10)
            joining = asyncio.ensure_future(coroutine())
            deadline = time.monotonic() + 10  # a regression fails, never hangs
            while cache._singleflight.waiting(scope) < 1 < deadline - time.monotonic():
                await asyncio.sleep(0.001)
            release.set()
            await joining
        else:
            # The coroutine leads on the loop (no await while it computes): the
            # thread joins from inside the computation.
            joiner = threading.Thread(target=in_thread)

            def compute_and_let_a_thread_join():
                calls.append(1)
                joiner.start()
                deadline = time.monotonic() + 10
                while (
                    cache._singleflight.waiting(scope) < 1 < deadline - time.monotonic()
                ):
                    time.sleep(0.001)
                return "value"

            results.append(
                await cache.aget_or_set("hot", compute_and_let_a_thread_join, 60)
            )
            joiner.join(10)
        if first == "thread":
            leader.join(10)

    asyncio.run(main())
    assert calls == [1] and results == ["value", "value"]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (0, 2)


def test_async_tagged_calls_run_inline_without_a_thread_hop():
    cache = make()
    where = []

    class Recorder:
        def __reduce__(self):
            where.append(threading.get_ident())
            return (str, ("recorded",))

    async def main():
        loop_thread = threading.get_ident()
        await cache.aset("a", Recorder(), tags=["t"])
        await cache.aset_many({"b": Recorder()}, tags=["t"])
        await cache.aadd("c", Recorder(), tags=["t"])
        got = await cache.aget_or_set("d", Recorder, tags=["t"])
        assert got == "recorded"
        assert await cache.aget("a") == "recorded"
        assert await cache.aget_many(["a", "b"]) == {"a": "recorded", "b": "recorded"}
        assert await cache.ahas_key("c")
        await cache.ainvalidate_tags("t")
        assert await cache.aget("a") is None
        await cache.aset("p:1", 1)
        assert await cache.adelete_pattern("p:*") == 1
        return loop_thread

    loop_thread = asyncio.run(main())
    assert where and set(where) == {loop_thread}


def test_large_async_batches_run_in_a_thread_small_ones_inline():
    # Every a* batch ran inline: 100k keys stalled the event loop 220-1030 ms.
    from django_smartcache.core.store import HOLD_BATCH as INLINE_BATCH  # (the same)

    cache = make(MAX_MEMORY="256MB")
    store = cache._store
    where: dict[str, set[int]] = {}

    def recorded(name):
        method = getattr(store, name)

        def call(*args, **kwargs):
            where.setdefault(name, set()).add(threading.get_ident())
            return method(*args, **kwargs)

        return call

    for name in ("set_many", "get_many", "delete_many", "delete_matching", "clear"):
        setattr(store, name, recorded(name))
    small = {f"s{i}": i for i in range(INLINE_BATCH)}
    large = {f"l{i}": i for i in range(INLINE_BATCH + 1)}

    async def main():
        loop_thread = threading.get_ident()
        await cache.aset_many(small)
        assert await cache.aget_many(iter(small)) == small
        await cache.adelete_many(list(small))
        inline = {name: set(threads) for name, threads in where.items()}
        where.clear()
        await cache.aset_many(large)
        assert await cache.aget_many(k for k in large) == large
        assert await cache.adelete_pattern("l1*") == 1 + 10 + 100
        await cache.adelete_many(list(large))
        await cache.aset_many(large)
        await cache.aclear()
        assert await cache.aget("l1") is None
        return loop_thread, inline

    loop_thread, inline = asyncio.run(main())
    assert inline == {name: {loop_thread} for name in inline} and len(inline) == 3
    assert set(where) == {*inline, "delete_matching", "clear"}
    assert all(loop_thread not in threads for threads in where.values())


@pytest.mark.parametrize("value", [3, "3", 0, "0", 2.0])
def test_cull_frequency_is_read_as_django_reads_it(value):
    make(CULL_FREQUENCY=value)  # accepted, as LocMemCache takes int() of it


def test_two_stores_of_one_location_never_share_a_computation():
    """Same LOCATION, other budgets: two stores (``_store_for``), so two scopes. With
    one scope, concurrent ``get_or_set`` of one key on both handed one alias the
    other's value and left its own store empty."""
    location = f"scope-{next(_names)}"
    first, second = make(location, MAX_MEMORY="1MB"), make(location, MAX_MEMORY="2MB")
    assert first._store is not second._store
    assert first.singleflight_scope() != second.singleflight_scope()
    same = make(location, MAX_MEMORY="1MB")
    assert same._store is first._store
    assert same.singleflight_scope() == first.singleflight_scope()
    started, release = threading.Event(), threading.Event()

    def slow_first():
        started.set()
        release.wait(5)
        return "of-first"

    results = {}
    thread = threading.Thread(
        target=lambda: results.update(first=first.get_or_set("k", slow_first))
    )
    thread.start()
    started.wait(5)
    helper = threading.Thread(
        target=lambda: results.update(
            second=second.get_or_set("k", lambda: "of-second")
        )
    )
    helper.start()
    helper.join(5)
    release.set()
    thread.join(5)
    assert results == {"first": "of-first", "second": "of-second"}
    assert second.get("k") == "of-second"


# -- outside probe, session 6 -------------------------------------------------------


def test_expired_entries_make_room_before_live_ones():
    """The sweep's batches alone left expired entries holding the budget while a write
    evicted live ones (counted as capacity evictions)."""
    clock = [1000.0]
    cache = make(MAX_MEMORY=200 * 2048, POLICY="lru")
    cache._store._clock = lambda: clock[0]  # this test's own store
    for i in range(100):
        cache.set(f"live{i}", b"L" * 1000, None)
    for i in range(100):
        cache.set(f"dead{i}", b"D" * 1000, 0.5)
    for i in range(100):
        cache.get(f"dead{i}")  # hot, for a policy
    clock[0] += 2.0  # every dead* has expired, its second is due
    cache.set("new", b"N" * (60 * 2048), None)
    stats = cache.stats()
    assert sum(cache.has_key(f"live{i}") for i in range(100)) == 100
    assert cache.has_key("new")
    assert stats["evictions_capacity"] == 0
    assert stats["evictions_expired"] >= 60


def test_add_is_false_when_the_policy_turns_the_value_away():
    """TinyLFU's admission may drop a newcomer at once: add() used to say True (a lock
    taken with add() then had two holders)."""
    cache = make(MAX_MEMORY=50 * 1100, POLICY="tinylfu")
    for i in range(50):
        cache.set(f"hot{i}", b"h" * 50)
    for _ in range(10):
        for i in range(50):
            cache.get(f"hot{i}")
    for j in range(50):
        added = cache.add(f"lock{j}", b"L" * 50, 30)
        assert added is cache.has_key(f"lock{j}")
        if added:
            assert cache.add(f"lock{j}", b"L" * 50, 30) is False


def test_joining_a_get_or_set_that_found_the_value_is_a_hit():
    """A caller that shared another's get_or_set of a present key counted a miss."""
    cache = make()
    cache.set("hot", "v")
    store, entered, release = cache._store, threading.Event(), threading.Event()
    real_get = store.get

    def slow_get(key):
        if not entered.is_set():  # the leader's read: hold it until the other joins
            entered.set()
            release.wait(5)
        return real_get(key)

    store.get = slow_get
    results = []
    leader = threading.Thread(
        target=lambda: results.append(cache.get_or_set("hot", lambda: "x"))
    )
    leader.start()
    assert entered.wait(5)
    joiner = threading.Thread(
        target=lambda: results.append(cache.get_or_set("hot", lambda: "x"))
    )
    joiner.start()
    scope = (cache.singleflight_scope(), cache.make_key("hot"))
    deadline = time.monotonic() + 5
    while cache._singleflight.waiting(scope) < 1:
        assert time.monotonic() < deadline, "the second caller did not join"
        threading.Event().wait(0.001)
    release.set()
    leader.join(5)
    joiner.join(5)
    del store.get
    assert results == ["v", "v"]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (2, 0)


@pytest.mark.parametrize("option", ["MAX_MEMORY", "MAX_ITEM_SIZE"])
@pytest.mark.parametrize("size", ["1KB", 1025, 1027, 0, "0MB", 1])
def test_a_budget_no_entry_fits_is_refused(option, size):
    """The smallest entry is the overhead plus a 4-byte pickle (``None``): budgets of
    1,025-1,027 bytes were accepted, and every write then refused. A budget of 0 said
    "at least 1 byte", and 1 then said 1,028 (helper probe)."""
    with pytest.raises(ImproperlyConfigured, match=rf"{option}.*at least 1028 bytes"):
        make(**{option: size})


@pytest.mark.parametrize("option", ["MAX_MEMORY", "MAX_ITEM_SIZE"])
def test_the_smallest_budget_stores_the_smallest_entry(option):
    cache = make(**{option: 1028})
    cache.set("k", None)
    assert cache.has_key("k")


@pytest.mark.parametrize("offset", range(5))
def test_aget_or_set_after_a_delete_never_joins_a_finished_flight(offset: int) -> None:
    """The per-loop flight's task stays listed until its done-callback runs, a loop
    iteration after it finished: a call in between joined it and got a value deleted
    before the call began."""
    cache = make()

    async def trial() -> Any:
        await cache.aset("k", "OLD")
        leader = asyncio.ensure_future(cache.aget_or_set("k", lambda: "computed"))
        for _ in range(offset):
            await asyncio.sleep(0)
        await cache.adelete("k")
        assert await cache.aget("k") is None
        got = await cache.aget_or_set("k", lambda: "NEW")
        await leader
        return got

    assert asyncio.run(trial()) in ("NEW", "computed")


@pytest.mark.parametrize("kind", ["threads", "coroutines"])
def test_callers_of_a_get_or_set_that_raised_are_each_counted(kind: str) -> None:
    """docs/backends.md: a get_or_set is one read, a miss when it waits for another
    caller's computation; so it is when that computation raised."""
    cache = make()
    release = threading.Event()
    callers = 6

    def fail() -> Any:
        release.wait(10)
        raise LookupError("no value")

    scope = (cache.singleflight_scope(), cache.make_key("k"))
    if kind == "threads":
        errors: list[BaseException] = []

        def call() -> None:
            try:
                cache.get_or_set("k", fail)
            except LookupError as exc:
                errors.append(exc)

        pool = [threading.Thread(target=call) for _ in range(callers)]
        for thread in pool:
            thread.start()
        deadline = time.monotonic() + 10
        while (
            cache._singleflight.waiting(scope) < callers - 1
            and time.monotonic() < deadline
        ):
            time.sleep(0.001)
        release.set()
        for thread in pool:
            thread.join(10)
        assert len(errors) == callers
    else:
        release.set()

        async def main() -> list[Any]:
            return await asyncio.gather(
                *(cache.aget_or_set("k", fail) for _ in range(callers)),
                return_exceptions=True,
            )

        assert all(isinstance(e, LookupError) for e in asyncio.run(main()))
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (0, callers)


def test_a_small_payload_is_kept_in_an_object_of_its_own_size(monkeypatch) -> None:
    # pickle.dumps returns its 4 KiB buffer shrunk in place: kept as is, each small
    # payload pinned a 4 KiB heap block, and RSS reached 2x the budget under read/write
    # churn (python -m benchmarks memory: the "reads mixed in" row, 1.97x -> 0.90x).
    from django_smartcache.backends import base

    buffers = []
    real = base.pickle.dumps

    def recording(value, protocol):
        buffers.append(real(value, protocol))
        return buffers[-1]

    monkeypatch.setattr(base.pickle, "dumps", recording)
    small = base.dumps("k", "x" * 50)
    large = base.dumps("k", "x" * 10_000)
    assert small == buffers[0] and small is not buffers[0]
    assert large is buffers[1]  # a large one is its own block already


def test_a_new_location_reclaims_what_expired_in_idle_ones() -> None:
    # Stores are kept for the process, like LocMemCache's, and only their own calls
    # swept them: 60 MultiLevelCache configurations closed and deleted kept 174 MiB of
    # L1 copies that had expired long before (outside soak).
    idle = SmartCache(f"idle-{next(_names)}", {})
    idle.set_many({f"k{i}": "v" * 100 for i in range(50)}, timeout=0.05)
    idle.set("forever", "v")
    time.sleep(1.1)  # expiry is filed by whole seconds: due within a second
    assert len(idle._store) == 51  # nothing swept: no call since
    SmartCache(f"new-{next(_names)}", {})
    assert len(idle._store) == 1
    assert idle.get("forever") == "v"


def test_a_tagged_value_is_charged_per_tag_and_shares_the_tags_strings():
    """The tag index was outside MAX_MEMORY (20 tags per entry: RSS 2.9x the budget),
    and each entry kept its own copies of the made tag keys (built anew per write).
    Deterministic accounting, not a timed memory test: a value written with three
    tags whose version keys exist grows bytes_used by exactly its tagged weight."""
    cache = make(MAX_MEMORY=10 * 2**20)
    tags = ["red", "green", "blue"]
    cache.set("first", 1, tags=tags)  # makes the three version keys
    before = cache.stats()["bytes_used"]
    cache.set("second", 2, tags=tags)
    made = cache.make_key("second")
    payload, tagged = cache._store.peek(made)
    assert tagged
    assert cache.stats()["bytes_used"] - before == entry_weight(len(payload), made, 3)
    ids = cache._store._data[made][4]
    assert ids == cache._tag_ids(tags)
    assert all(
        a is b
        for a, b in zip(
            ids, cache._store._data[cache.make_key("first")][4], strict=True
        )
    )


def _held_batches(cache: SmartCache, release_after: float):
    """The store's first ``set_many`` held in its worker thread until the next
    ``set_many`` has landed, or ``release_after`` seconds (whichever comes first)."""
    store = cache._store
    real = store.set_many
    entered, released, landed = threading.Event(), threading.Event(), threading.Event()
    calls = count()

    def set_many(*args, **kwargs):
        if next(calls) == 0:
            entered.set()
            released.wait(release_after)
            try:
                return real(*args, **kwargs)
            finally:
                landed.set()
        try:
            return real(*args, **kwargs)
        finally:
            released.set()  # the later write is in: the first one may land (after it)

    store.set_many = set_many
    return entered, landed


@pytest.mark.parametrize("how", ["cancel", "cancel twice", "wait_for"])
def test_a_cancelled_batch_lands_before_the_callers_next_write(how):
    # A large a* batch runs in a worker thread. Cancelled (or timed out in wait_for),
    # it returned at once while its thread ran on: the caller's next aset_many of the
    # same keys then landed first, and the cancelled batch overwrote it ("old" kept).
    from django_smartcache.backends.smart import INLINE_BATCH

    cache = make(MAX_MEMORY="64MB")
    keys = [f"k{i}" for i in range(INLINE_BATCH + 1)]
    entered, landed = _held_batches(cache, release_after=0.3)

    async def main():
        if how == "wait_for":
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(
                    cache.aset_many(dict.fromkeys(keys, "old")), 0.01
                )
        else:
            task = asyncio.ensure_future(cache.aset_many(dict.fromkeys(keys, "old")))
            await asyncio.to_thread(entered.wait, 5)
            task.cancel()
            if how == "cancel twice":
                await asyncio.sleep(0.05)
                task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        in_place = landed.is_set()  # when the caller goes on
        await cache.aset_many(dict.fromkeys(keys, "new"))
        await asyncio.to_thread(landed.wait, 5)
        return await cache.aget_many(keys), in_place

    got, in_place = asyncio.run(main())
    assert set(got.values()) == {"new"} and len(got) == len(keys)
    assert in_place


def test_a_batch_cancelled_at_the_loops_shutdown_does_not_hang_it():
    from django_smartcache.backends.smart import INLINE_BATCH

    cache = make(MAX_MEMORY="64MB")
    keys = [f"k{i}" for i in range(INLINE_BATCH + 1)]
    entered, landed = _held_batches(cache, release_after=0.2)

    async def main():
        asyncio.ensure_future(cache.aset_many(dict.fromkeys(keys, "v")))
        await asyncio.to_thread(entered.wait, 5)
        # returns with the batch in flight: asyncio.run cancels its task and ours

    runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    runner.start()
    runner.join(10)
    assert not runner.is_alive()
    assert landed.is_set() and cache.get_many(keys) == dict.fromkeys(keys, "v")


@pytest.mark.parametrize("policy", ["adaptive", "tinylfu", "s3fifo", "lru"])
@pytest.mark.parametrize(
    "options, fillers, size",
    [
        ({"MAX_ENTRIES": 8, "MAX_MEMORY": None}, 8, 10),
        ({"MAX_MEMORY": "4MB"}, 4000, 8000),
    ],
    ids=["8-entries", "4MB"],
)
@pytest.mark.parametrize("new_tags, old_tags", [(1, 0), (3, 0), (2, 1)])
def test_a_tagged_value_just_written_is_readable_in_a_warm_cache(
    policy, options, fillers, size, new_tags, old_tags
):
    # A tagged write stores its new tags' version keys, then the value; the evictions
    # those writes cause must not take those keys (new, never read), or the value
    # reads as stale at once: W-TinyLFU with a window under one entry turned every
    # new tag's key away, so a get_or_set per page computed twice before it stuck.
    cache = make(POLICY=policy, **options)
    for i in range(fillers):
        cache.set(f"filler{i}", b"x" * 100)
        cache.get(f"filler{i}")  # read once: warm

    def tags_of(name: str, n: int) -> list[str]:
        """``new_tags`` tags never used, and ``old_tags`` whose keys exist (cold)."""
        old = [f"old:{name}:{n}:{i}" for i in range(old_tags)]
        if old:
            cache.invalidate_tags(*old)
        return old + [f"{name}:{n}:{i}" for i in range(new_tags)]

    for n in range(20):
        tags = tags_of("user", n)
        assert cache.set(f"page{n}", b"p" * size, tags=tags) is None
        assert cache.get(f"page{n}") == b"p" * size, (policy, n)
        tags = tags_of("item", n)
        assert cache.add(f"added{n}", b"a" * size, tags=tags), (policy, n)
        assert cache.get(f"added{n}") == b"a" * size, (policy, n)
        calls = []

        def compute(calls: list[int] = calls) -> bytes:
            calls.append(1)
            return b"c"

        tags = tags_of("row", n)
        for _ in range(2):
            cache.get_or_set(f"computed{n}", compute, tags=tags)
        assert len(calls) == 1, (policy, n)
    stats = cache.stats()
    if stats["max_bytes"]:
        assert stats["bytes_used"] <= stats["max_bytes"]
    else:
        assert stats["entries"] <= 8
