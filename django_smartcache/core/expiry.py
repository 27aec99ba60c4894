"""Expiry buckets: find the keys whose TTL has passed without scanning the store.

Keys are filed by the whole second (``ceil``) at which they expire; a heap orders the
seconds. The store asks for due keys only when ``now >= next_due`` (one float comparison
per call), and takes at most a small batch each time, so reclaiming is incremental:
O(1) amortized per entry and bounded per call, with no sorting of keys.
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Hashable

INF = math.inf


class ExpiryBuckets:
    """Keys by expiry second. A key is in at most one bucket: the store discards it on change."""

    __slots__ = ("_buckets", "_heap", "next_due")

    def __init__(self) -> None:
        self._buckets: dict[int, set[Hashable]] = {}
        self._heap: list[int] = []
        #: The earliest second holding keys (``inf`` when none); due when ``now >= next_due``.
        self.next_due: float = INF

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def add(self, key: Hashable, expires_at: float) -> None:
        second = math.ceil(expires_at)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = set()
            heapq.heappush(self._heap, second)
            self.next_due = min(self.next_due, second)
        bucket.add(key)

    def discard(self, key: Hashable, expires_at: float) -> None:
        second = math.ceil(expires_at)
        bucket = self._buckets.get(second)
        if bucket is not None:
            bucket.discard(key)
            self._shrink(second, bucket)

    def _shrink(self, second: int, bucket: set[Hashable]) -> None:
        """After a key left ``bucket`` early (evicted, deleted, refiled): free what it no
        longer needs. A set never shrinks its table, and a bucket waits for its second:
        with long timeouts, every second of writes left a table sized for all the keys
        it once held (measured: +150 MiB over 40 s beside a full 64 MiB budget)."""
        size = len(bucket)
        if not size:
            del self._buckets[second]
            # The heap still holds the seconds of deleted buckets: drop them in bulk.
            if len(self._heap) > 2 * len(self._buckets) + 64:
                self._heap = list(self._buckets)
                heapq.heapify(self._heap)
        elif not size & 63 and sys.getsizeof(bucket) > 128 * size:
            self._buckets[second] = set(bucket)

    def refile(self, key: Hashable, old_expires: float, new_expires: float) -> None:
        """File ``key`` under ``new_expires`` instead of ``old_expires`` (either may be
        ``inf``: not filed). A rewrite within the same second leaves it where it is."""
        if old_expires != INF:
            second = math.ceil(old_expires)
            if new_expires != INF and math.ceil(new_expires) == second:
                return
            bucket = self._buckets.get(second)
            if bucket is not None:
                bucket.discard(key)
                self._shrink(second, bucket)
        if new_expires != INF:
            self.add(key, new_expires)

    def pop_due(self, now: float, limit: int) -> list[Hashable]:
        """Remove and return up to ``limit`` keys filed at seconds ``<= now``."""
        due: list[Hashable] = []
        heap, buckets = self._heap, self._buckets
        while heap and heap[0] <= now:
            second = heap[0]
            bucket = buckets.get(second)
            if bucket is None:  # emptied early and deleted (or a second pushed twice)
                heapq.heappop(heap)
                continue
            while bucket and len(due) < limit:
                due.append(bucket.pop())
            if bucket:
                break
            heapq.heappop(heap)
            del buckets[second]
        self.next_due = heap[0] if heap else INF
        return due

    def bucket_of(self, now: float) -> list[Hashable]:
        """The keys filed at the second containing ``now`` (some may already have expired)."""
        return list(self._buckets.get(math.ceil(now), ()))

    def clear(self) -> None:
        self._buckets.clear()
        self._heap.clear()
        self.next_due = INF
