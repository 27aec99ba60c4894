"""Expiry buckets: keys that leave before their second free the bucket's memory."""

from __future__ import annotations

import sys

from django_smartcache.core.expiry import ExpiryBuckets


def test_a_bucket_emptied_early_is_gone_with_its_second() -> None:
    expiry = ExpiryBuckets()
    for second in range(1, 10_001):  # distinct far timeouts (jittered TTLs)
        expiry.add(("k", second), 1_000_000 + second)
        expiry.discard(("k", second), 1_000_000 + second)  # evicted early
    assert expiry._buckets == {}
    assert len(expiry._heap) <= 64
    assert expiry.pop_due(2_000_000, 10) == []
    assert expiry.next_due == float("inf")


def test_a_bucket_mostly_emptied_gives_back_its_table() -> None:
    expiry = ExpiryBuckets()
    for i in range(50_000):
        expiry.add(i, 3600.5)
    peak = sys.getsizeof(expiry._buckets[3601])
    for i in range(50_000 - 64):
        expiry.discard(i, 3600.5)
    assert sys.getsizeof(expiry._buckets[3601]) < peak // 100
    assert sorted(expiry.pop_due(3601, 100)) == list(range(50_000 - 64, 50_000))


def test_refiled_and_re_added_keys_are_still_due_once() -> None:
    expiry = ExpiryBuckets()
    expiry.add("a", 10.2)
    expiry.refile("a", 10.2, 20.5)  # its bucket at 11 is emptied and deleted
    expiry.add("b", 10.7)  # the second 11 again: pushed on the heap once more
    assert expiry.pop_due(12, 10) == ["b"]
    assert expiry.pop_due(12, 10) == []
    assert expiry.pop_due(21, 10) == ["a"]
    assert expiry.next_due == float("inf")
