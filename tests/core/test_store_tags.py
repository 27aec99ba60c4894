"""MemoryStore tags: O(1) invalidation, a bounded purge queue, an index that shrinks."""

from __future__ import annotations

import pytest

from django_smartcache.core.patterns import KeyPattern
from django_smartcache.core.sizing import ENTRY_OVERHEAD, TAG_OVERHEAD, entry_weight
from django_smartcache.core.store import (
    ORPHAN_GRACE,
    ORPHAN_HOLD,
    PURGE_BATCH,
    MemoryStore,
)


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
    # "other" carries a tag, "unrelated" none
    assert stats["bytes_used"] == entry_weight(1, tags=1) + entry_weight(1)


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


# -- tag_keys: a tag's own key leaves with the last entry that carries it --------------


def _with_version_keys(store, n, ttl=None):
    """``n`` entries, each tagged with a tag whose own key holds its "version"."""
    for i in range(n):
        store.set(f"v{i}", b"version")  # the tagging layer's version key
        store.set(f"k{i}", b"value", ttl=ttl, tags=(f"v{i}",))


def _writes_after_the_grace(store, clock):
    """Writes do the work (reads never do), ORPHAN_BATCH at a time; the grace of an
    orphan starts at the first write that sees it."""
    for _ in range(3):
        for _ in range(2):
            store.set_many([("w", b"write")])
        clock.now += ORPHAN_GRACE


@pytest.mark.parametrize("how", ["delete", "expiry", "eviction", "untagged"])
def test_a_tags_key_leaves_with_the_last_entry_carrying_it(how):
    # Version keys of tags used once outlived their entries until the policy evicted
    # them: 42% of a 16 MB budget in an outside soak (one tag per entry, 3 s TTL).
    store, clock = make(max_entries=1000, tag_keys=True)
    _with_version_keys(store, 40, ttl=10)
    if how == "delete":
        store.delete_many([f"k{i}" for i in range(40)])
    elif how == "expiry":
        clock.now += 11
    elif how == "eviction":
        for i in range(40):
            store.get(f"v{i}")  # read with each entry: hotter than the entries
        store.resize(max_bytes=10**9, max_entries=40)  # LRU: the 40 entries go
    else:
        for i in range(40):
            store.set(f"k{i}", b"value")  # written again, untagged
    _writes_after_the_grace(store, clock)
    left = {key for key in (f"v{i}" for i in range(40)) if store.get(key) is not None}
    assert not left
    stats = store.stats()
    # (Full at 40 after an eviction, the first write evicts one version key itself.)
    dropped = 39 if how == "eviction" else 40
    assert stats["evictions_invalidated"] + stats["evictions_expired"] >= dropped


def test_a_tags_key_stays_while_an_entry_carries_it():
    store, clock = make(max_entries=1000, tag_keys=True)
    store.set("v", b"version")
    store.set("a", b"value", tags=("v",))
    store.set("b", b"value", tags=("v", "other"))
    store.set("a", b"again", tags=("v",))  # rewritten with its tag: never orphaned
    store.delete("a")
    _writes_after_the_grace(store, clock)
    assert store.get("v") == b"version"  # b still carries it
    store.delete("b")
    store.set("w", b"write")
    assert store.get("v") == b"version"  # within its grace (a writer read it)
    _writes_after_the_grace(store, clock)
    assert store.get("v") is None


def test_tag_keys_leave_alone_what_is_no_version_key():
    store, clock = make(max_entries=1000, tag_keys=True)
    store.set("t", b"a tagged entry named like a tag", tags=("x",))
    store.set("a", b"value", tags=("t",))
    store.delete("a")
    _writes_after_the_grace(store, clock)
    assert store.get("t") is not None  # tagged itself: not bookkeeping
    # Without tag_keys (the default), a tag's key is an ordinary entry.
    plain, plain_clock = make(max_entries=1000)
    _with_version_keys(plain, 3)
    plain.delete_many(["k0", "k1", "k2"])
    _writes_after_the_grace(plain, plain_clock)
    assert all(plain.get(f"v{i}") == b"version" for i in range(3))


def test_an_invalidated_tags_key_is_kept_for_the_new_version():
    # invalidate_tags() detaches the tag; its (new) version key stays, as before.
    store, _ = make(max_entries=1000, tag_keys=True)
    store.set("v", b"version 1")
    store.set("a", b"value", tags=("v",))
    store.invalidate_tags(["v"])
    store.set("v", b"version 2")
    store.purge_invalidated()
    store.set("w", b"write")
    assert store.get("a") is None
    assert store.get("v") == b"version 2"


def test_a_stream_of_large_batches_reclaims_what_expired():
    # set_many swept SWEEP_BATCH expired entries per call: batches of 512 with a 1 s
    # TTL left ~60% of a full budget expired (outside soak), reclaimed only for room.
    store, clock = make(max_bytes=10**9)
    for round_ in range(20):
        store.set_many([(f"r{round_}:{i}", b"x") for i in range(512)], ttl=1)
        assert len(store) <= 512 + 32  # this round's, and at most a sweep's worth
        clock.now += 2  # everything written so far has expired


def test_a_version_read_after_its_tag_was_orphaned_holds_it_for_the_computation():
    # The entry expired (or was deleted), get_or_set read the version and computes:
    # dropped under it, the version made its write a miss (a second computation per
    # expiry, reviewer's reproducer). A bookkeeping read holds it ORPHAN_HOLD.
    store, clock = make(max_entries=1000, tag_keys=True)
    store.set("v", b"version")
    store.set("a", b"value", tags=("v",))
    store.delete("a")  # v is orphaned
    assert store.get_many(["v"], counted=False) == {"v": b"version"}  # read to compute
    clock.now += ORPHAN_HOLD / 2  # a long computation; other writes go on
    store.set("w", b"write")
    assert store.get_many(["v"], counted=False) == {"v": b"version"}
    store.set("a", b"computed", tags=("v",))  # stored with the version it read
    clock.now += ORPHAN_HOLD
    store.set("w", b"write")
    assert store.get("v") == b"version"  # carried again: stays


def test_a_tags_key_written_anew_while_its_tag_is_orphaned_is_held():
    """A tag orphaned and due, its key gone (evicted), then a tagged write: the tagging
    layer makes the version again (add), and the sweep at the entry's own write (or
    in the add's own eviction) removed that fresh key as the orphan's bookkeeping:
    the entry was stored with a version no longer there, a miss at once; and an add()
    that saw its key so removed took it for a turn-away, evictions_capacity -1
    (helper probe). The key written anew is held as a bookkeeping read holds it."""
    from django_smartcache.core.store import ORPHAN_HOLD

    store, clock = make(max_entries=1000, tag_keys=True)
    store.set("v", b"version 1")
    store.set("a", b"value", tags=("v",))
    store.delete("a")
    store.set("w", b"write")  # the orphan's grace starts
    store.delete("v")  # its key evicted meanwhile
    clock.now += ORPHAN_GRACE + 1
    assert store.add("v", b"version 2", counted=False)  # made again for a writer
    store.set("a", b"new value", tags=("v",))
    assert store.get("v") == b"version 2"  # was None: swept before "a" was stored
    store.delete("a")
    clock.now += ORPHAN_HOLD + 1
    _writes_after_the_grace(store, clock)
    assert store.get("v") is None  # orphaned again: it leaves as before

    # The same sweep inside the add's own eviction (the budget exactly full).
    full, full_clock = make(max_bytes=50 * (ENTRY_OVERHEAD + 4), tag_keys=True)
    for i in range(41):
        full.set(f"e-T{i}", b"x", tags=(f"T{i}",))
    full.delete_many([f"e-T{i}" for i in range(41)])
    full.reclaim(0)  # adopted: due in ORPHAN_GRACE
    for i in range(50):
        full.set(f"f{i}", b"1234")
    full_clock.now += ORPHAN_GRACE + 1
    full.reset_stats()
    assert full.add("T40", b"version") is True
    assert full.get("T40") == b"version"
    stats = full.stats()
    assert stats["evictions_capacity"] >= 0
    assert stats["evictions_capacity"] + stats["evictions_invalidated"] >= 1


def test_a_held_orphan_does_not_block_the_grace_of_those_behind_it():
    """One FIFO held both delays: a tag's key held ORPHAN_HOLD (a bookkeeping read)
    at its head kept every key behind it, whose ORPHAN_GRACE was long over, until
    the held one was due: ~60 s of orphans outside the budget (outside probe: RSS
    6.2x a 16 MB budget). Each delay has its own FIFO now, drained by due time."""
    store, clock = make(max_entries=1000, tag_keys=True)
    store.set("held", b"version")
    store.set("a", b"value", tags=("held",))
    store.delete("a")  # orphaned...
    assert store.get_many(["held"], counted=False) == {"held": b"version"}  # ...held
    _with_version_keys(store, 40)
    store.delete_many([f"k{i}" for i in range(40)])  # orphaned behind it
    _writes_after_the_grace(store, clock)
    left = [i for i in range(40) if store.get(f"v{i}") is not None]
    assert not left  # all 40 stayed before
    assert store.get("held") == b"version"  # still held
    clock.now += ORPHAN_HOLD
    store.set("w", b"write")
    assert store.get("held") is None  # and leaves when its hold is over

    # A hold moves a key from the grace FIFO to the held one, not into both: a
    # key held again is due ORPHAN_HOLD after its last hold, not its first.
    store.set("v", b"version")
    store.set("b", b"value", tags=("v",))
    store.delete("b")
    store.set("w", b"write")  # adopted: its grace starts
    assert store.get_many(["v"], counted=False)
    clock.now += ORPHAN_HOLD / 2
    assert store.get_many(["v"], counted=False)  # held again
    clock.now += ORPHAN_HOLD / 2 + 1
    store.set("w", b"write")
    assert store.get("v") == b"version"
    clock.now += ORPHAN_HOLD / 2
    store.set("w", b"write")
    assert store.get("v") is None
    assert not store._orphan_due and not store._orphan_held


# -- the tag index is charged to the entries that carry tags ----------------------------


def test_a_tagged_entry_is_charged_per_tag_it_carries():
    """The tag index (a slot per tag in the tag's key set and in the entry's tuple)
    was not charged: 20 tags per entry from a pool of 1,000 held RSS 2.9x a 32 MB
    budget (outside probe). Each tag adds TAG_OVERHEAD to the entry's weight, for
    bytes_used, eviction and the MAX_ITEM_SIZE refusal alike."""
    store, _ = make()
    store.set("k", b"value", tags=("a", "b", "c"))
    assert store.bytes_used == entry_weight(5, "k", tags=3)
    assert entry_weight(5, tags=3) == 5 + ENTRY_OVERHEAD + 3 * TAG_OVERHEAD
    store.set("k", b"value", tags=("a",))
    assert store.bytes_used == entry_weight(5, tags=1)
    store.set("k", b"value")  # untagged again
    assert store.bytes_used == entry_weight(5)
    assert store.stats()["bytes_used"] == store.bytes_used

    # Refused as too large by its tagged weight, not its payload's alone.
    limited, _ = make(max_item_size=entry_weight(10, tags=2))
    assert limited.set("two", b"x" * 10, tags=("a", "b")) is True
    assert limited.set("three", b"x" * 10, tags=("a", "b", "c")) is False
    assert limited.stats()["refused"] == 1

    # Evicted by it: a budget of four tagged entries holds four, not more.
    full, _ = make(max_bytes=4 * entry_weight(10, tags=5))
    tags = tuple(f"t{i}" for i in range(5))
    for i in range(10):
        full.set(f"e{i}", b"x" * 10, tags=tags)
        assert full.bytes_used <= 4 * entry_weight(10, tags=5)
    assert len(full) == 4


def test_entries_share_one_string_per_tag():
    """SmartCache makes its tag strings anew on every write: each entry's tuple kept
    its own copies. The index hands back its one object per tag, which entries keep."""

    def tag() -> str:
        return "x-tag"[2:]  # an equal string, a new object each call

    store, _ = make()
    assert tag() == "tag" and tag() is not tag()
    for i in range(3):
        store.set(f"k{i}", b"v", tags=(tag(), f"own{i}"))
    held = [store._data[f"k{i}"][4] for i in range(3)]
    assert held[0][0] == "tag" and held[0][0] is held[1][0] is held[2][0]
    store.set("k0", b"again", tags=(tag(),))  # rewritten: the same
    assert store._data["k0"][4][0] is held[1][0]
