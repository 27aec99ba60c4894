"""MemoryStore tags: O(1) invalidation, a bounded purge queue, an index that shrinks."""

from __future__ import annotations

import pytest

from django_smartcache.core.patterns import KeyPattern
from django_smartcache.core.sizing import ENTRY_OVERHEAD
from django_smartcache.core.store import PURGE_BATCH, MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw):
    clock = Clock()
    kw.setdefault("max_bytes", 10**9)
    kw.setdefault("policy", "lru")
    return MemoryStore(clock=clock, **kw), clock


def test_invalidation_queues_and_writes_drain_in_batches():
    store, _ = make()
    n = PURGE_BATCH * 3 + 5
    for i in range(n):
        store.set(f"k{i}", b"v", tags=("t",))
    store.set("other", b"v", tags=("u",))
    assert store.invalidate_tags(["t"]) == n
    stats = store.stats()
    assert stats["purge_pending"] == n and stats["entries"] == n + 1
    assert stats["tags_indexed"] == 1  # "t" is detached at once, "u" remains
    store.get("other")  # reads never purge
    assert store.stats()["entries"] == n + 1
    store.set("unrelated", b"v")  # one write purges one batch
    assert store.stats()["entries"] == n + 2 - PURGE_BATCH
    for _ in range(3):
        store.set("unrelated", b"v")
    stats = store.stats()
    assert stats["entries"] == 2  # "other" and "unrelated"
    assert stats["purge_pending"] == 0 and stats["tagged_entries"] == 1
    assert stats["evictions_invalidated"] == n
    assert stats["bytes_used"] == 2 * (1 + ENTRY_OVERHEAD)


def test_invalidated_entries_are_evicted_before_live_ones():
    store, _ = make(max_entries=100)
    for i in range(50):
        store.set(f"live{i}", b"v")
    for i in range(50):
        store.set(f"dead{i}", b"v", tags=("t",))
    store.invalidate_tags(["t"])
    store.purge_invalidated(limit=0)
    for i in range(50):
        store.add(f"new{i}", b"v")  # each add may purge a batch, then needs room
    stats = store.stats()
    assert stats["evictions_capacity"] == 0
    assert stats["evictions_invalidated"] == 50
    assert all(store.peek(f"live{i}") for i in range(50))


def test_a_key_written_again_after_invalidation_survives_the_purge():
    store, _ = make()
    store.set("a", b"old", tags=("t",))
    store.set("b", b"old", tags=("t",))
    store.invalidate_tags(["t"])
    store.set("a", b"new", tags=("t",))  # re-tagged after the invalidation
    store.set("b", b"plain")  # untagged now
    assert store.purge_invalidated() == 0
    assert store.get("a") == b"new" and store.get("b") == b"plain"
    # The new write is purged by the next invalidation.
    store.invalidate_tags(["t"])
    assert store.purge_invalidated() == 1
    assert store.get("a") is None and store.get("b") == b"plain"


def test_multi_tag_entry_queued_twice_is_removed_once():
    store, _ = make()
    store.set("ab", b"v", tags=("a", "b"))
    store.invalidate_tags(["a", "b"])
    assert store.stats()["purge_pending"] == 2
    assert store.purge_invalidated() == 1
    stats = store.stats()
    assert stats["evictions_invalidated"] == 1 and stats["purge_pending"] == 0
    assert stats["tags_indexed"] == 0 and stats["tagged_entries"] == 0


@pytest.mark.parametrize("how", ["delete", "expiry", "eviction", "clear", "overwrite"])
def test_the_index_shrinks_when_entries_leave(how):
    store, clock = make(max_entries=4)
    for i in range(4):
        store.set(f"k{i}", b"v", ttl=10, tags=(f"t{i}", "all"))
    if how == "delete":
        store.delete_many([f"k{i}" for i in range(4)])
    elif how == "expiry":
        clock.now += 11
        assert store.clear_expired() == 4
    elif how == "eviction":
        for i in range(4):
            store.set(f"plain{i}", b"v")
    elif how == "clear":
        store.clear()
    else:
        for i in range(4):
            store.set(f"k{i}", b"v")
    stats = store.stats()
    assert stats["tagged_entries"] == 0 and stats["tags_indexed"] == 0


def test_tag_churn_keeps_bookkeeping_bounded():
    store, _ = make(max_entries=100)
    for i in range(20_000):
        store.set(f"k{i % 500}", b"v", tags=(f"tag{i}",))
        if i % 3 == 0:
            store.invalidate_tags([f"tag{i - 1}"])
    stats = store.stats()
    assert stats["entries"] <= 100
    assert stats["tagged_entries"] <= 100 and stats["tags_indexed"] <= 100
    assert stats["purge_pending"] <= PURGE_BATCH


def test_set_many_and_add_take_tags():
    store, _ = make()
    store.set_many([("a", b"1"), ("b", b"2")], tags=("t",))
    assert store.add("c", b"3", tags=("t",))
    assert store.peek("a") == (b"1", True)
    store.set("d", b"4")
    assert store.peek("d") == (b"4", False)
    assert store.peek("missing") is None
    assert store.stats()["hits"] == 0  # peek is not a read
    store.invalidate_tags(["t"])
    assert store.purge_invalidated() == 3
    assert len(store) == 1


def test_delete_matching_counts_live_keys_only():
    store, clock = make()
    store.set("p:1:user:1", b"v")
    store.set("p:1:user:2", b"v", ttl=5)
    store.set("p:2:user:1", b"v")
    store.set("p:1:other", b"v")
    store.set(("tuple", "key"), b"v")
    clock.now += 6
    pattern = KeyPattern("user:*", head="p:1:")
    assert store.delete_matching(pattern.literal_prefix, pattern.matches) == 1
    assert store.get("p:2:user:1") == b"v" and store.get("p:1:other") == b"v"
    assert store.stats()["evictions_expired"] == 1
