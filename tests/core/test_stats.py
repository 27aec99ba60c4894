"""Stats: exact counters and their dict form."""

from __future__ import annotations

from django_smartcache.core.stats import Stats


def test_hit_rate_is_none_before_any_read():
    assert Stats().as_dict()["hit_rate"] is None


def test_as_dict_sums_evictions_by_cause():
    stats = Stats()
    stats.hits, stats.misses = 3, 1
    stats.evictions_capacity, stats.evictions_expired, stats.evictions_invalidated = (
        1,
        2,
        4,
    )
    snapshot = stats.as_dict()
    assert snapshot["hit_rate"] == 0.75
    assert snapshot["evictions"] == 7
    assert snapshot["evictions_expired"] == 2


def test_reset_zeroes_every_counter():
    stats = Stats()
    for name in Stats.__slots__:
        setattr(stats, name, 5)
    stats.reset()
    assert all(getattr(stats, name) == 0 for name in Stats.__slots__)


def test_a_recount_after_a_reset_never_makes_hits_negative() -> None:
    """A tagged read counted a hit, then a ``reset_stats()`` in another thread, then
    the tagging layer found the value stale and recounted the hit as a miss: hits -1,
    a hit rate of -1.0 (concurrency probe: 762 such snapshots in 2 s)."""
    from django_smartcache.core.store import MemoryStore

    store = MemoryStore(max_bytes=1 << 20)
    store.set("k", b"v", None)
    assert store.get("k") == b"v"  # a hit
    store.reset_stats()  # another thread's
    store.recount_as_misses(1)  # the read above was stale
    assert store.counters.hits == 0
    assert store.counters.misses == 0
