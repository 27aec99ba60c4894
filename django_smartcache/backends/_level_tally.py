"""MultiLevelCache's per-process counters, exact across per-thread backend instances."""

from __future__ import annotations

import threading
import weakref
from collections import deque


class _Counts:
    """One backend instance's counters: hits per level, misses, timed calls per level.

    Written without a lock, by the one thread that owns the instance (Django builds one
    instance per thread): a plain ``+=`` on a list item, as cheap as it gets on the L1
    hit path, and exact because no other thread writes these lists.
    """

    __slots__ = ("hits", "lat_calls", "lat_ns", "misses")

    def __init__(self, levels: int) -> None:
        self.hits = [0] * levels  # index 0: L1 hits
        self.lat_ns = [0] * levels
        self.lat_calls = [0] * levels
        self.misses = [0]

    def add(self, other: _Counts) -> None:
        for mine, theirs in (
            (self.hits, other.hits),
            (self.lat_ns, other.lat_ns),
            (self.lat_calls, other.lat_calls),
            (self.misses, other.misses),
        ):
            for i, value in enumerate(theirs):
                mine[i] += value


class _Tally:
    """The counters of every instance of one configuration, alive or collected.

    Django's ``CacheHandler`` keeps one backend instance per thread, and a threaded
    server drops a request's instance when its thread ends: the counts must outlive it.
    Each instance gets its own :class:`_Counts`, listed here; when the instance is
    collected, a ``weakref.finalize`` callback queues its counts (a ``deque.append``:
    atomic, no lock, so safe from a garbage collection that runs while this thread holds
    the lock) and the next :meth:`enlist` or :meth:`total` folds them into ``_retired``
    under the lock. A count is thus in exactly one place at any time: never lost, never
    counted twice.
    """

    def __init__(self, levels: int) -> None:
        self._levels = levels
        self._lock = threading.Lock()
        self._live: set[_Counts] = set()
        self._dead: deque[_Counts] = deque()
        self._retired = _Counts(levels)

    def forked(self) -> None:
        """In a forked child: the lock may be held by a parent thread, gone here."""
        self._lock = threading.Lock()

    def enlist(self, owner: object) -> _Counts:
        counts = _Counts(self._levels)
        with self._lock:
            self._fold()
            self._live.add(counts)
        weakref.finalize(owner, self._dead.append, counts).atexit = False
        return counts

    def total(self) -> _Counts:
        """The sum over every instance so far (the live ones as of now)."""
        out = _Counts(self._levels)
        with self._lock:
            self._fold()
            out.add(self._retired)
            for counts in list(self._live):
                out.add(counts)
        return out

    def _fold(self) -> None:
        while self._dead:
            counts = self._dead.popleft()
            self._live.discard(counts)
            self._retired.add(counts)
