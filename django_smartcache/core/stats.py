"""Exact counters kept by the store: plain integer attributes, one addition per event."""

from __future__ import annotations

from typing import Any


class Stats:
    """Event counters; the store bumps them with its lock held, so they are exact.

    Gauges (entries, bytes used, budget) and the hottest keys are not counters: the
    store adds them when it builds a snapshot (:meth:`MemoryStore.stats`).
    """

    __slots__ = (
        "deletes",
        "evictions_capacity",
        "evictions_expired",
        "evictions_invalidated",
        "hits",
        "misses",
        "refused",
        "sets",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.hits = 0
        self.misses = 0
        #: Values written (set, add that stored, set_many items, incr/decr).
        self.sets = 0
        #: Resident keys removed by an explicit delete.
        self.deletes = 0
        #: Keys evicted because the store was over a budget.
        self.evictions_capacity = 0
        #: Expired keys reclaimed (by the sweeper, a read, or ``clear_expired``).
        self.evictions_expired = 0
        #: Keys dropped because their value became invalid (an oversized overwrite).
        self.evictions_invalidated = 0
        #: Writes refused because the entry is larger than the budget or ``max_item_size``.
        self.refused = 0

    def as_dict(self) -> dict[str, Any]:
        """The counters, plus ``evictions`` (all causes) and ``hit_rate`` (None before any read)."""
        reads = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / reads if reads else None,
            "sets": self.sets,
            "deletes": self.deletes,
            "evictions": self.evictions_capacity
            + self.evictions_expired
            + self.evictions_invalidated,
            "evictions_capacity": self.evictions_capacity,
            "evictions_expired": self.evictions_expired,
            "evictions_invalidated": self.evictions_invalidated,
            "refused": self.refused,
        }
