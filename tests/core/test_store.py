"""MemoryStore: budgets, refusal of oversized entries, TTL reclaim, exact counters."""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time

import pytest

from django_smartcache.core.sizing import ENTRY_OVERHEAD, entry_weight, parse_size
from django_smartcache.core.store import HOLD_BATCH, PURGE_BATCH, MemoryStore


class Clock:
    """An injectable clock: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(max_bytes=None, max_entries=None, **kw):
    clock = Clock()
    kw.setdefault("policy", "lru")
    return MemoryStore(max_bytes, max_entries, clock=clock, **kw), clock


def payload(n: int, fill: bytes = b"x") -> bytes:
    return fill * n


def test_roundtrip_and_counters():
    store, _ = make(max_bytes=10_000)
    assert store.set("a", b"1") is True
    assert store.get("a") == b"1"
    assert store.get("b") is None
    stats = store.stats()
    assert (stats["hits"], stats["misses"], stats["sets"]) == (1, 1, 1)
    assert stats["hit_rate"] == 0.5
    assert stats["entries"] == 1
    assert stats["bytes_used"] == 1 + ENTRY_OVERHEAD
    assert stats["max_bytes"] == 10_000


def test_byte_budget_evicts_least_recent_under_lru():
    size = 100
    budget = 3 * entry_weight(size)
    store, _ = make(max_bytes=budget)
    for key in "abc":
        store.set(key, payload(size))
    store.get("a")  # b is now the least recent
    store.set("d", payload(size))
    assert store.get("b") is None
    assert [store.has(k) for k in "acd"] == [True, True, True]
    assert store.bytes_used == budget
    assert store.stats()["evictions_capacity"] == 1


def test_bigger_entry_evicts_as_many_as_needed_and_never_exceeds_budget():
    store, _ = make(max_bytes=4 * entry_weight(10))
    for key in "abcd":
        store.set(key, payload(10))
    store.set("big", payload(10 + 2 * entry_weight(10)))
    assert store.bytes_used <= 4 * entry_weight(10)
    assert store.has("big")
    assert store.stats()["evictions_capacity"] == 3


def test_entry_budget_together_with_byte_budget():
    store, _ = make(max_bytes=1_000_000, max_entries=3)
    for i in range(10):
        store.set(i, b"v")
    assert len(store) == 3
    assert [store.has(i) for i in range(7, 10)] == [True, True, True]


def test_entry_only_budget_counts_entries_not_bytes():
    store, _ = make(max_entries=2)
    store.set("a", payload(10_000))
    store.set("b", payload(10_000))
    assert len(store) == 2
    store.set("c", b"")
    assert len(store) == 2 and not store.has("a")


def test_oversized_entry_refused_logged_and_evicts_nothing(caplog):
    store, _ = make(max_bytes=3 * entry_weight(100))
    store.set("a", payload(100))
    store.set("b", payload(100))
    with caplog.at_level(logging.WARNING, logger="django_smartcache"):
        assert store.set("huge", payload(3 * entry_weight(100))) is False
        assert store.add("huge", payload(3 * entry_weight(100))) is False
    assert "huge" in caplog.text and "over the limit" in caplog.text
    assert not store.has("huge")
    assert store.has("a") and store.has("b")
    stats = store.stats()
    assert stats["evictions_capacity"] == 0
    assert stats["refused"] == 2


def test_a_key_refused_again_is_logged_at_debug_until_the_interval_passes(caplog):
    """A MultiLevelCache retried the promotion of a large L2 value into L1 on every
    read, and a memoized function returning one its write on every call: each refusal
    was a WARNING (20 reads, 20 warnings). Now one per key per REFUSAL_LOG_INTERVAL;
    ``refused`` still counts each."""
    from django_smartcache.core.store import REFUSAL_LOG_INTERVAL

    store, clock = make(max_bytes=10_000)
    big = payload(20_000)
    with caplog.at_level(logging.DEBUG, logger="django_smartcache"):
        for _ in range(5):
            assert store.set("big", big) is False
        assert store.add("other", big) is False
        clock.now += REFUSAL_LOG_INTERVAL
        assert store.set("big", big) is False
    warned = [r.args[0] for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["big", "other", "big"]
    assert [r.levelno for r in caplog.records].count(logging.DEBUG) == 4
    assert store.stats()["refused"] == 7


def test_oversized_overwrite_drops_the_stale_value():
    store, _ = make(max_bytes=10_000)
    store.set("k", b"old")
    assert store.set("k", payload(20_000)) is False
    assert store.get("k") is None
    assert store.stats()["evictions_invalidated"] == 1
    assert store.bytes_used == 0


def test_max_item_size_refuses_below_the_budget():
    store, _ = make(max_bytes=1_000_000, max_item_size=entry_weight(50))
    assert store.set("ok", payload(50)) is True
    assert store.set("no", payload(51)) is False
    assert store.set_many([("x", payload(10)), ("y", payload(60))]) == ["y"]


def test_expired_entries_are_never_returned():
    store, clock = make(max_bytes=100_000)
    store.set("k", b"v", ttl=10)
    clock.now += 9.999
    assert store.get("k") == b"v"
    clock.now += 0.002
    assert store.get("k") is None
    assert store.has("k") is False
    assert store.stats()["evictions_expired"] == 1


def test_expired_entries_are_reclaimed_without_being_read():
    store, clock = make(max_bytes=10_000_000, sweep_batch=16)
    for i in range(100):
        store.set(f"dead{i}", payload(100), ttl=5)
    store.set("alive", b"v")
    full = store.bytes_used
    clock.now += 6
    store.get("alive")  # any call sweeps one bounded batch
    assert len(store) == 101 - 16
    for _ in range(10):
        store.get("alive")
    assert len(store) == 1
    assert store.bytes_used == full - 100 * entry_weight(100)
    assert store.stats()["evictions_expired"] == 100


def test_overwritten_ttl_is_not_swept_early():
    store, clock = make(max_bytes=100_000)
    store.set("k", b"v", ttl=5)
    store.set("k", b"w", ttl=100)
    clock.now += 10
    store.get("other")
    assert store.get("k") == b"w"


def test_rewrites_and_touches_keep_one_expiry_filing_per_key():
    store, clock = make(max_bytes=100_000)
    filings = store._expiry.__len__
    store.set("k", b"v", ttl=9.2)  # expires at 1009.2: the bucket of second 1010
    store.set("k", b"w", ttl=9.7)  # same second: stays filed once
    assert filings() == 1
    store.set("k", b"x", ttl=20)  # another second: moved
    assert filings() == 1
    store.set("k", b"y")  # no expiry: not filed
    assert filings() == 0
    assert store.touch("k", ttl=9.5) is True
    assert filings() == 1
    assert store.touch("k", ttl=9.6) is True
    assert filings() == 1
    clock.now += 9.55
    assert store.get("k") == b"y"  # touched to 1009.6, not the 1009.5 before
    clock.now += 0.5  # second 1010 is due: any call sweeps its bucket
    store.get("other")
    assert (len(store), filings()) == (0, 0)
    assert store.stats()["evictions_expired"] == 1


def test_a_write_over_an_expired_entry_not_yet_swept_counts_the_expiry():
    store, clock = make(max_bytes=100_000)
    store.set("k", b"v", ttl=0.3)  # filed under the next whole second
    store.set("a", b"v", ttl=0.3)
    clock.now += 0.5  # expired, its second not yet due: not swept
    store.set("k", b"w")
    assert store.add("a", b"w") is True
    assert store.stats()["evictions_expired"] == 2
    assert (store.get("k"), store.get("a")) == (b"w", b"w")


def test_reset_stats_zeroes_the_read_counts_of_top_accessed():
    store, _ = make(max_bytes=100_000)
    store.set("a", b"1")
    store.get("a")
    assert store.stats()["top_accessed"] == [("a", 1)]
    store.reset_stats()
    assert store.stats()["top_accessed"] == []
    assert store.stats()["hits"] == 0


def test_clear_expired_counts_everything_expired_including_this_second():
    store, clock = make(max_bytes=1_000_000)
    for i in range(5):
        store.set(i, b"v", ttl=1)
    store.set("late", b"v", ttl=3.2)
    store.set("forever", b"v")
    clock.now += 3.5  # "late" expired within the current second's bucket
    assert store.clear_expired() == 6
    assert len(store) == 1
    assert store.clear_expired() == 0


def test_zero_or_negative_ttl_expires_at_once():
    store, _ = make(max_bytes=100_000)
    store.set("k", b"v")
    assert store.set("k", b"w", ttl=0) is True
    assert store.get("k") is None
    assert store.add("k2", b"w", ttl=-1) is True
    assert store.has("k2") is False
    assert store.bytes_used == 0


def test_touch():
    store, clock = make(max_bytes=100_000)
    store.set("k", b"v", ttl=1)
    assert store.touch("k", ttl=10) is True
    clock.now += 5
    assert store.get("k") == b"v"
    assert store.touch("k", ttl=None) is True
    clock.now += 10_000
    assert store.get("k") == b"v"
    assert store.touch("missing") is False
    assert store.touch("k", ttl=0) is True
    assert store.get("k") is None


def test_add_is_set_if_absent():
    store, clock = make(max_bytes=100_000)
    assert store.add("k", b"1", ttl=1) is True
    assert store.add("k", b"2") is False
    clock.now += 2
    assert store.add("k", b"3") is True
    assert store.get("k") == b"3"


def test_transform_keeps_expiry_and_is_unchanged_on_error():
    store, clock = make(max_bytes=100_000)
    store.set("n", b"1", ttl=10)
    assert store.transform("n", lambda p: str(int(p) + 1).encode()) == b"2"

    def boom(p: bytes) -> bytes:
        raise RuntimeError

    with pytest.raises(RuntimeError):
        store.transform("n", boom)
    assert store.get("n") == b"2"
    with pytest.raises(KeyError):
        store.transform("missing", lambda p: p)
    clock.now += 11
    with pytest.raises(KeyError):
        store.transform("n", lambda p: p)


def test_delete_and_delete_many_count_only_live_keys():
    store, clock = make(max_bytes=100_000)
    store.set("a", b"1")
    store.set("b", b"1")
    store.set("c", b"1", ttl=1)
    assert store.delete("a") is True
    assert store.delete("a") is False
    clock.now += 2
    assert store.delete_many(["b", "c", "zz"]) == 1
    stats = store.stats()
    assert stats["deletes"] == 2
    assert stats["evictions_expired"] == 1
    assert stats["entries"] == 0 and stats["bytes_used"] == 0


def test_get_many_and_set_many():
    store, _ = make(max_bytes=100_000)
    assert store.set_many([("a", b"1"), ("b", b"2")], ttl=None) == []
    assert store.get_many(["a", "b", "c"]) == {"a": b"1", "b": b"2"}
    stats = store.stats()
    assert (stats["hits"], stats["misses"], stats["sets"]) == (2, 1, 2)


class _CollectionsWhileHeld:
    """The store's lock, counting the garbage collections run while it is held."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.held = False
        self.collections = 0

    def on_gc(self, phase: str, info: dict) -> None:
        if phase == "start" and self.held:
            self.collections += 1

    def __enter__(self) -> None:
        self.lock.acquire()
        self.held = True

    def __exit__(self, *exc: object) -> None:
        self.held = False
        self.lock.release()


def test_stats_allocates_nothing_per_entry_under_the_lock():
    """The snapshot for ``top_accessed`` copied ``items()``: a tuple per entry, each
    tracked by the garbage collector, whose collections ran inside the lock (held
    1.4-1.9 s at 10^6 entries, every other call waiting)."""
    import gc

    store, _ = make(max_bytes=10**9)
    for i in range(50_000):
        store.set(f"k{i}", b"v")
    store.get("k7")
    spy = _CollectionsWhileHeld(store.lock)
    store.lock = spy  # type: ignore[assignment]
    # Start from no pending allocations: stats() makes a few objects of its own, and
    # after earlier tests' garbage those alone could cross the collector's threshold
    # (the full run failed once so); 50,000 per-entry objects still would.
    gc.collect()
    gc.callbacks.append(spy.on_gc)
    try:
        stats = store.stats()
    finally:
        gc.callbacks.remove(spy.on_gc)
        store.lock = spy.lock
    assert stats["top_accessed"] == [("k7", 1)]
    assert spy.collections == 0


def test_top_accessed_is_exact():
    store, _ = make(max_bytes=100_000)
    for key, reads in (("cold", 1), ("hot", 5), ("warm", 3), ("never", 0)):
        store.set(key, b"v")
        for _ in range(reads):
            store.get(key)
    assert store.stats(top=2)["top_accessed"] == [("hot", 5), ("warm", 3)]
    assert store.stats()["top_accessed"] == [("hot", 5), ("warm", 3), ("cold", 1)]


def test_clear_keeps_counters_reset_stats_zeroes_them():
    store, _ = make(max_bytes=100_000)
    store.set("a", b"v")
    store.get("a")
    store.clear()
    assert len(store) == 0 and store.bytes_used == 0
    assert store.stats()["hits"] == 1
    store.reset_stats()
    assert store.stats()["hits"] == 0


def test_resize_evicts_down_to_the_new_budget():
    store, _ = make(max_bytes=10 * entry_weight(10))
    for i in range(10):
        store.set(i, payload(10))
    store.resize(max_bytes=4 * entry_weight(10))
    assert len(store) == 4
    assert store.bytes_used == 4 * entry_weight(10)
    with pytest.raises(ValueError, match="cannot switch"):
        store.resize(max_entries=3)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"max_bytes": 0}, {"max_entries": -1}, {"max_bytes": 10, "max_item_size": 0}],
)
def test_invalid_budgets(kwargs):
    with pytest.raises(ValueError):
        MemoryStore(**kwargs)


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(KeyError, match="lru"):
        MemoryStore(1000, policy="nope")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (123, 123),
        ("123", 123),
        ("64MB", 64 * 1024**2),
        ("512 KiB", 512 * 1024),
        ("1.5gb", int(1.5 * 1024**3)),
        ("10k", 10 * 1024),
        ("64mb", 64 * 1024**2),  # the informal spelling of MB
        ("2TB", 2 * 1024**4),  # a SQLiteCache file may be that large
        ("1 tib", 1024**4),
    ],
)
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value", ["", "MB", "12 parsecs", True, 1.5, None, "-5MB", "1" + "0" * 400 + "GB"]
)
def test_parse_size_rejects(value):
    with pytest.raises(ValueError, match="64MB"):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "suggested"),
    [
        ("64Mb", "MB"),
        ("512Kb", "KB"),
        ("1 Gb", "GB"),
        ("1Tb", "TB"),
        # IEC bits (mebibits...): were still read as 64 MiB (review of eaacc30).
        ("64Mib", "MiB"),
        ("512 Kib", "KiB"),
        ("1Gib", "GiB"),
        ("1Tib", "TiB"),
    ],
)
def test_parse_size_refuses_bits(value, suggested):
    """ "64Mb" is megabits: it was read as 64 MiB without a word."""
    with pytest.raises(ValueError, match=f"reads as bits.*write {suggested} for bytes"):
        parse_size(value)


def test_parse_size_rejects_negative():
    with pytest.raises(ValueError, match="negative"):
        parse_size(-1)


def test_get_many_skips_expired_entries_still_in_this_seconds_bucket():
    store, clock = make(max_bytes=100_000)
    store.set("a", b"1", ttl=0.3)
    store.set("b", b"2")
    clock.now += (
        0.5  # expired, but its expiry bucket (the next whole second) is not due
    )
    assert store.get_many(["a", "b"]) == {"b": b"2"}
    assert store.stats()["evictions_expired"] == 1


# -- the on_evict listener ------------------------------------------------------------------


class Recorder:
    """An eviction listener that also proves it runs with the store's lock released."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.seen: list[tuple[str, str]] = []
        self.locked_during_call: list[bool] = []

    def __call__(self, batch):
        self.locked_during_call.append(self.store.lock.locked())
        self.seen.extend(batch)

    def keys(self, cause: str) -> list[str]:
        return [key for key, c in self.seen if c == cause]


def listened(**kw):
    store, clock = make(**kw)
    recorder = Recorder(store)
    store.on_evict = recorder
    return store, clock, recorder


def test_on_evict_reports_exactly_the_capacity_victims():
    size = 100
    store, _, rec = listened(max_bytes=5 * entry_weight(size))
    written = [f"k{i}" for i in range(40)]
    for i, key in enumerate(written):
        store.set(key, payload(size))
        if i % 3 == 0:
            store.get(written[i // 2])
    store.set_many([(f"m{i}", payload(size)) for i in range(7)])
    written += [f"m{i}" for i in range(7)]
    store.resize(max_bytes=2 * entry_weight(size))
    gone = [key for key in written if not store.has(key)]
    assert sorted(rec.keys("capacity")) == sorted(gone)
    assert len(rec.seen) == store.stats()["evictions_capacity"] == len(gone) > 0
    assert rec.locked_during_call and not any(rec.locked_during_call)


def test_on_evict_reports_every_expiry_with_the_counter():
    store, clock, rec = listened(max_bytes=1_000_000, sweep_batch=4)
    for i in range(20):
        store.set(f"s{i}", b"v", ttl=5)  # reclaimed by the sweeper on later calls
    for key in ("get", "many", "has", "touch", "delete", "incr", "late"):
        store.set(key, b"1", ttl=5)
    store.set("zero", b"v", ttl=0)  # written and expired at once
    store.set("live", b"v")
    store.touch("live", ttl=-1)  # a touch into the past expires it
    clock.now += 6
    store.get("get")
    store.get_many(["many"])
    store.has("has")
    store.touch("touch")
    store.delete("delete")  # already expired: not a delete, an expiry
    with pytest.raises(KeyError):
        store.transform("incr", lambda p: p)
    store.clear_expired()
    expected = [f"s{i}" for i in range(20)]
    expected += [
        "get",
        "many",
        "has",
        "touch",
        "delete",
        "incr",
        "late",
        "zero",
        "live",
    ]
    assert sorted(rec.keys("expired")) == sorted(expected)
    assert len(rec.seen) == store.stats()["evictions_expired"] == len(expected)
    assert store.stats()["deletes"] == 0
    assert not any(rec.locked_during_call)


def test_on_evict_reports_invalidated_entries_when_purged():
    store, _, rec = listened(max_bytes=1_000_000)
    for i in range(30):
        store.set(f"t{i}", b"v", tags=("t",))
    store.set("u", b"v", tags=("u",))
    store.invalidate_tags(["t"])
    assert rec.seen == []  # queued, not yet removed
    store.set("x", b"v")  # a write purges a batch of the queue
    assert len(rec.seen) == PURGE_BATCH
    store.purge_invalidated()
    assert sorted(rec.keys("invalidated")) == sorted(f"t{i}" for i in range(30))
    assert len(rec.seen) == store.stats()["evictions_invalidated"] == 30
    assert store.get("u") == b"v"


def test_oversized_overwrite_is_reported_as_invalidated():
    store, _, rec = listened(max_bytes=10_000)
    store.set("a", b"small")
    assert store.set("a", payload(20_000)) is False
    assert rec.seen == [("a", "invalidated")]


def test_deletes_overwrites_and_clear_are_not_evictions():
    store, _, rec = listened(max_bytes=1_000_000)
    store.set("a", b"1")
    store.set("a", b"2")
    store.set_many([("b", b"1"), ("c", b"1")])
    store.delete("a")
    store.delete_many(["b"])
    store.delete_matching("", lambda key: True)
    store.set("d", b"1")
    store.clear()
    assert rec.seen == []


def test_listener_may_use_the_store_and_is_called_after_the_lock():
    size = 100
    store, _ = make(max_bytes=3 * entry_weight(size))
    reentered: list[str] = []

    def listener(batch):
        for key, _cause in batch:
            store.get(key)  # a miss now; would deadlock if the lock were held
            if not key.startswith("note-"):
                store.set(f"note-{key}", b"n")  # may evict again: a nested delivery
                reentered.append(key)

    store.on_evict = listener
    done = threading.Event()

    def writer():
        for i in range(10):
            store.set(f"k{i}", payload(size))
        done.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert done.wait(10), "the listener deadlocked the store"
    gone = [f"k{i}" for i in range(10) if not store.has(f"k{i}")]
    assert len(gone) >= 7 and sorted(reentered) == sorted(gone)


def test_without_a_listener_nothing_is_recorded_and_a_later_one_hears_later_evictions():
    size = 100
    store, _ = make(max_bytes=2 * entry_weight(size))
    for key in "abc":
        store.set(key, payload(size))
    assert store._evicted == []  # counted, not recorded
    seen: list[tuple[str, str]] = []
    store.on_evict = seen.extend
    store.set("d", payload(size))
    assert seen == [("b", "capacity")]
    assert store.stats()["evictions_capacity"] == 2


def test_listener_errors_reach_the_caller_and_the_store_stays_consistent():
    store, _ = make(max_bytes=2 * entry_weight(10))

    def broken(batch):
        raise RuntimeError("receiver failed")

    store.on_evict = broken
    store.set("a", payload(10))
    store.set("b", payload(10))
    with pytest.raises(RuntimeError, match="receiver failed"):
        store.set("c", payload(10))
    assert store.get("c") == payload(10) and store.get("a") is None


def test_a_long_key_is_charged_what_it_costs_beyond_the_overhead() -> None:
    from django_smartcache.core.sizing import KEY_ALLOWANCE

    store, _ = make(max_bytes=10 * entry_weight(100))
    store.set("k" * KEY_ALLOWANCE, payload(100))
    assert store.bytes_used == entry_weight(100)
    long_key = "k" * 4000
    store.set(long_key, payload(100))
    assert store.bytes_used == 2 * entry_weight(100) + 4000 - KEY_ALLOWANCE
    assert entry_weight(100, long_key) == entry_weight(100) + 4000 - KEY_ALLOWANCE
    # A budget of long keys holds as many entries as the keys' real cost allows.
    for i in range(100):
        store.set(f"{i:04d}" + long_key, payload(100))
    assert len(store) <= 10 * entry_weight(100) // entry_weight(100, long_key) + 1


@pytest.mark.parametrize("method", ["set_many", "get_many", "delete_many"])
def test_a_big_batch_lets_other_threads_in_between(method: str) -> None:
    """A 200,000-key set_many held the lock for a second: every other thread (an event
    loop's inline async calls) waited that long. Batches take it a HOLD_BATCH at a time."""
    store = MemoryStore(max_bytes=1 << 30)
    store.set("hot", b"v")
    keys = [f"k{i}" for i in range(100_000)]
    if method != "set_many":
        store.set_many((k, b"x") for k in keys)
    started = threading.Event()

    def batch_items() -> object:
        for i, key in enumerate(keys):
            if i == HOLD_BATCH:
                started.set()  # one critical section done, the next one coming
            yield (key, b"x") if method == "set_many" else key

    worker = threading.Thread(target=getattr(store, method), args=(batch_items(),))
    worker.start()
    assert started.wait(10)
    assert store.get("hot") == b"v"
    assert worker.is_alive()  # the get did not wait for the whole batch
    worker.join()


@pytest.mark.parametrize("policy", ["adaptive", "tinylfu", "s3fifo", "lru"])
@pytest.mark.parametrize(
    "size, resident", [(100, 20), (3_000, 4), (60_000, 3)], ids=["small", "3k", "60k"]
)
def test_a_key_just_written_is_readable_in_a_warm_cache(policy, size, resident):
    # A W-TinyLFU window or an S3-FIFO small queue lighter than one entry (by weight:
    # a small budget, large values, a window the climber shrank during a run of hits)
    # sent each newcomer straight to admission or to the ghost: a key just set was
    # gone before its first read, and add() said False for keys that were never
    # there (Django's cache sessions could not create one: no login).
    store, _, rec = listened(max_bytes=resident * entry_weight(size), policy=policy)
    for i in range(resident):
        store.set(f"hot{i}", payload(size))
    for _ in range(10):
        for i in range(resident):
            store.get(f"hot{i}")
    before = store.stats()
    for i in range(50):
        store.set(f"set{i}", payload(size))
        assert store.get(f"set{i}") is not None, (policy, i)
        assert store.add(f"add{i}", payload(size)), (policy, i)
        assert store.get(f"add{i}") is not None, (policy, i)
    after = store.stats()
    assert after["sets"] - before["sets"] == 100
    assert after["evictions_capacity"] - before["evictions_capacity"] == len(
        rec.keys("capacity")
    )
    assert after["bytes_used"] <= resident * entry_weight(size)


@pytest.mark.parametrize("policy", ["adaptive", "s3fifo"])
@pytest.mark.parametrize("write", ["set", "add"])
def test_a_key_written_again_while_a_ghost_is_readable(policy, write):
    # S3-FIFO sends a key written again while its ghost is remembered straight to
    # main's tail, unread; the key shielded used to be small's only one instead, and
    # main's pass (every other resident read) evicted the key just written.
    store, _ = make(max_entries=4, policy=policy)
    for key in "ABCD":
        store.set(key, b"v")
    for key in "ABC":
        store.get(key)
    store.set("X", b"v")  # A, B, C to main; D (never read) to the ghost
    for key in "ABC":
        store.get(key)
    store.set("Y", b"v")  # X (never read) to the ghost; small = [Y]
    assert getattr(store, write)("D", b"v")
    assert store.get("D") == b"v"


@pytest.mark.parametrize("policy", ["adaptive", "s3fifo", "tinylfu", "lru"])
def test_a_key_rewritten_larger_is_readable(policy):
    # A rewrite is the key's write too: S3-FIFO moved the key (read) to main with its
    # counter reset and main's pass evicted it, the small queue's newest unread key
    # shielded instead.
    budget = 20 * entry_weight(1000)
    store, _ = make(max_bytes=budget, policy=policy)
    for _ in range(4):
        for i in range(30):
            if store.get(f"hot{i}") is None:
                store.set(f"hot{i}", payload(1000))
    for i in range(30):
        store.get(f"hot{i}")
    for key in list(store._data)[:3]:
        store.delete(key)
    store.set("K", payload(1000))
    store.set("W", payload(1000))
    store.set("K", payload(6000))  # 17% of the budget
    assert store.get("K") == payload(6000)


def test_a_value_within_the_byte_budget_is_readable_when_max_entries_binds():
    # With both budgets and the entry limit binding, the policy works in the bytes of
    # MAX_ENTRIES entries (far below MAX_MEMORY): W-TinyLFU took a value heavier than
    # that for one that "outweighs the whole capacity" and evicted it at once.
    store, _ = make(max_bytes=16 * 2**20, max_entries=100, policy="tinylfu")
    for i in range(300):
        store.set(f"k{i}", payload(1000))
        store.get(f"k{i}")
    assert store._policy.capacity < 300_000 < store.max_bytes
    for n in range(5):
        assert store.set(f"page{n}", payload(300_000))
        assert store.get(f"page{n}") is not None
        assert store.add(f"session{n}", payload(300_000))
        assert store.get(f"session{n}") is not None
    assert store.bytes_used <= store.max_bytes and len(store) <= 100


def _random_writes(seed: int, policy: str) -> str | None:
    """A seeded random walk of writes, reads, deletes, clears and resizes; the first
    broken promise, or None: a value the store accepted (True) must be there for the
    next read, and the budgets must hold after every call."""
    rng = random.Random(seed)
    max_bytes = rng.choice(
        [None, rng.randint(ENTRY_OVERHEAD + 1, 40 * ENTRY_OVERHEAD)]
        + [rng.randint(ENTRY_OVERHEAD, 300 * ENTRY_OVERHEAD)] * 2
    )
    max_entries = (
        rng.choice([None, rng.randint(1, 5), rng.randint(1, 60)])
        if max_bytes is not None
        else rng.randint(1, 60)
    )
    store, _ = make(max_bytes=max_bytes, max_entries=max_entries, policy=policy)
    keys = rng.choice([5, 30, 200])
    limit = min(x for x in (max_bytes, 300 * ENTRY_OVERHEAD) if x is not None)
    for step in range(rng.choice([200, 2000])):
        op, key = rng.random(), f"k{rng.randrange(keys)}"
        if op < 0.55:
            size = rng.choice(
                [0, rng.randint(0, 200), rng.randint(0, 3 * ENTRY_OVERHEAD)]
                + [max(0, limit - ENTRY_OVERHEAD)] * 2
            )
            write = "set" if op < 0.45 else "add"
            if getattr(store, write)(key, payload(size)) and store.get(key) is None:
                return f"{write} of {key} ({size} B) unreadable at step {step}"
        elif op < 0.9:
            store.get(key)
        elif op < 0.97:
            store.delete(key)
        elif op < 0.98:
            store.clear()
        elif max_bytes is not None:
            max_bytes = rng.randint(ENTRY_OVERHEAD + 1, 300 * ENTRY_OVERHEAD)
            max_entries = max_entries and rng.randint(1, 60)
            store.resize(max_bytes=max_bytes, max_entries=max_entries)
            limit = min(max_bytes, 300 * ENTRY_OVERHEAD)
        if max_bytes is not None and store.bytes_used > max_bytes:
            return f"over the byte budget at step {step}"
        if max_entries is not None and len(store) > max_entries:
            return f"over the entry budget at step {step}"
    return None


@pytest.mark.parametrize("policy", ["adaptive", "s3fifo", "tinylfu", "lru"])
def test_a_write_the_store_takes_is_readable_at_once(policy):
    # An outside review's fuzz, kept: 150 seeds found 12 rewrites unreadable under
    # W-TinyLFU (a rewritten key back in probation by a demotion was still listed as
    # an admission candidate) after the newest-key rule's first version.
    failures = {seed: _random_writes(seed, policy) for seed in range(60)}
    assert {seed: why for seed, why in failures.items() if why} == {}


def test_batches_pause_only_between_critical_sections(monkeypatch) -> None:
    # A pause hands the GIL over (5 ms with a busy thread): a small get_many (its keys
    # come as a dict) paid one after its only batch, 20 us became 100-7,000 us.
    import django_smartcache.core.store as store_module

    pauses = []
    monkeypatch.setattr(store_module.time, "sleep", pauses.append)
    store = MemoryStore(max_bytes=1 << 24)
    keys = {f"k{i}": i for i in range(10)}
    store.set_many((k, b"x") for k in keys)
    store.get_many(keys)
    store.delete_many(keys.keys())
    assert pauses == []
    store.set_many((f"b{i}", b"x") for i in range(2 * HOLD_BATCH + 1))  # 3 batches
    assert len(pauses) == 2


class _TimedLock:
    """The store's lock, timing each hold (for tests about how long one lasts)."""

    def __init__(self, lock) -> None:
        self.lock = lock
        self.holds: list[float] = []

    def __enter__(self) -> None:
        self.lock.acquire()
        self.since = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.holds.append(time.perf_counter() - self.since)
        self.lock.release()


def test_clear_frees_the_entries_without_the_lock():
    # clear() emptied the structures in place under the lock: every other thread (and
    # an event loop's inline aget) waited for the whole clear (1M entries: 184 ms).
    store, _ = make(max_bytes=1 << 30)
    store.set_many((f"k{i}", b"v" * 50) for i in range(200_000))
    store.lock = timed = _TimedLock(store.lock)
    started = time.perf_counter()
    store.clear()
    took = time.perf_counter() - started
    assert len(store) == 0 and store.bytes_used == 0
    assert max(timed.holds) < took / 5
    store.lock = timed.lock
    store.set("a", b"1")  # a working, empty store: a new policy, attached
    assert store.get_many(["a", "k1"]) == {"a": b"1"}
    assert store.stats()["entries"] == 1


def test_clear_frees_a_small_store_at_once_and_refits_its_policy(monkeypatch):
    # clear() went through the chunked _release whatever the size (1.3-1.8x the cost
    # of freeing at once), and kept the fit countdown of the old policy: the new one,
    # at full capacity, went unfitted for up to FIT_EVERY evictions.
    from django_smartcache.core import store as store_module

    released: list[int] = []
    real = store_module._release

    def counted(data, rest):
        released.append(len(data))
        real(data, rest)

    monkeypatch.setattr(store_module, "_release", counted)
    store, _ = make(max_bytes=1 << 30, max_entries=100)
    store.set_many((f"k{i}", b"v" * 50) for i in range(150))  # evicts: fitted
    assert store._fit_countdown > 0
    store.clear()
    assert store._fit_countdown == 0 and released == []
    big, _ = make(max_bytes=1 << 30)
    big.set_many((f"k{i}", b"v") for i in range(store_module.CLEAR_AT_ONCE + 1))
    big.clear()
    assert released == [store_module.CLEAR_AT_ONCE + 1] and len(big) == 0


def test_clear_expired_takes_the_lock_per_batch():
    """clear_expired() held the lock for its whole pass: with 291,000 expired entries
    another thread's get() waited 650-850 ms (an event loop's inline aget as long).
    It now expires at most HOLD_BATCH entries per critical section, as the other O(n)
    calls do: seen here as the expirations done between two acquisitions of the lock."""
    import threading

    from django_smartcache.core.store import HOLD_BATCH

    store, clock = make(max_entries=10 * HOLD_BATCH)
    for i in range(5 * HOLD_BATCH + 7):
        store.set(f"k{i}", b"v", ttl=1 + i % 3)
    clock.now += 10
    sections = []

    class Counting:
        """The store's own lock, noting the expirations done before each acquisition."""

        def __init__(self) -> None:
            self.inner = threading.Lock()

        def __enter__(self):
            self.inner.acquire()
            sections.append(store.counters.evictions_expired)
            return self

        def __exit__(self, *exc):
            self.inner.release()

    store.lock = Counting()
    assert store.clear_expired() == 5 * HOLD_BATCH + 7
    store.lock = store.lock.inner
    done = [*sections, store.stats()["evictions_expired"]]
    steps = [after - before for before, after in itertools.pairwise(done)]
    assert max(steps) <= HOLD_BATCH and sum(steps) == 5 * HOLD_BATCH + 7
