"""Eviction policies: which resident key leaves when the store is over budget.

A policy only orders keys; the store owns values, expiry and byte accounting.
Every key carries a ``weight`` (its accounted bytes, or 1 under an entry budget),
and ``capacity`` is in the same unit. All methods are O(1) amortized and are
called with the store's lock held, so policies need no locking of their own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol


class Policy(Protocol):
    """The contract between :class:`~django_smartcache.core.store.MemoryStore` and a policy."""

    capacity: int

    def record_hit(self, key: Hashable) -> None:
        """A resident ``key`` was read."""

    def record_miss(self, key: Hashable) -> None:
        """An absent ``key`` was asked for (frequency policies count it)."""

    def insert(self, key: Hashable, weight: int) -> None:
        """A new resident ``key`` of ``weight``; the store evicts afterwards if over budget."""

    def update(self, key: Hashable, weight: int) -> None:
        """A resident ``key`` was overwritten, possibly with a new weight; counts as an access."""

    def remove(self, key: Hashable) -> None:
        """A resident ``key`` left for a reason other than eviction (delete, expiry)."""

    def evict(self) -> Hashable:
        """Choose a resident key to evict, forget it, and return it.

        May return the key just inserted (an admission policy refusing it).
        Only called while at least one key is resident.
        """

    def resize(self, capacity: int) -> None:
        """Change the capacity; the store evicts afterwards if over budget."""

    def clear(self) -> None:
        """Forget every key (frequency history may be kept)."""


class LRUPolicy:
    """Least recently used: recency only, the baseline LocMemCache implements."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._order: OrderedDict[Hashable, int] = OrderedDict()

    def record_hit(self, key: Hashable) -> None:
        self._order.move_to_end(key)

    def record_miss(self, key: Hashable) -> None:
        pass

    def insert(self, key: Hashable, weight: int) -> None:
        self._order[key] = weight

    def update(self, key: Hashable, weight: int) -> None:
        self._order[key] = weight
        self._order.move_to_end(key)

    def remove(self, key: Hashable) -> None:
        del self._order[key]

    def evict(self) -> Hashable:
        return self._order.popitem(last=False)[0]

    def resize(self, capacity: int) -> None:
        self.capacity = capacity

    def clear(self) -> None:
        self._order.clear()


PolicyFactory = Callable[[int], Policy]

# Imported here, not at the top: those modules are policies, this one is the registry.
from .duel import DuelPolicy  # noqa: E402
from .s3fifo import S3FIFOPolicy  # noqa: E402
from .tinylfu import TinyLFUPolicy  # noqa: E402

#: Policies selectable by name (``OPTIONS["POLICY"]``); see ``docs/eviction.md``.
POLICIES: dict[str, PolicyFactory] = {
    "adaptive": DuelPolicy,
    "lru": LRUPolicy,
    "s3fifo": S3FIFOPolicy,
    "tinylfu": TinyLFUPolicy,
}

#: The policy used when none is named: the S3-FIFO / W-TinyLFU duel, within half a point
#: of the best of LRU, S3-FIFO, theine and LocMemCache in all 21 of our cells
#: (``docs/eviction.md`` has the table, and where LRU still leads: strongly
#: recency-driven traffic, by up to 3.5 points in an outside probe's streams).
DEFAULT_POLICY = "adaptive"


def make_policy(name: str, capacity: int) -> Policy:
    """Build the policy registered as ``name``; ``KeyError`` lists the known names."""
    try:
        factory = POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise KeyError(f"unknown eviction policy {name!r}; known: {known}") from None
    return factory(capacity)
