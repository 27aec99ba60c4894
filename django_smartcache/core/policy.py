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

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def segments(self) -> dict[str, list[Hashable]]:
        """The keys, least recently used first (for tests and debugging; O(n))."""
        return {"lru": list(self._order)}

    # -- what the adaptive policy's duel needs (``duel.py``) ---------------------

    def entries(self) -> list[tuple[Hashable, int, int]]:
        """Resident ``(key, weight, reads)``, least recently used first. LRU counts no
        reads: ``reads`` is 0 (the policy adopting them counts from its sketch)."""
        return [(key, weight, 0) for key, weight in self._order.items()]

    def weight_of(self, key: Hashable) -> int:
        """The weight a resident ``key`` was given."""
        return self._order[key]

    def adopt(
        self, entries: list[tuple[Hashable, int, int]], like: object = None
    ) -> None:
        """Take over another policy's residents, first to be evicted first, in an empty
        instance: their order is taken as recency, least recent first."""
        order = self._order
        for key, weight, _reads in entries:
            order[key] = weight


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

#: The policy used when none is named: the S3-FIFO / W-TinyLFU / LRU duel, within half a
#: point of the best of LRU, S3-FIFO, theine and LocMemCache in all 21 of our cells
#: (``docs/eviction.md`` has the table, and where LRU still leads: strongly
#: recency-driven traffic, by up to 0.8 point on our own such streams).
DEFAULT_POLICY = "adaptive"


def make_policy(name: str, capacity: int) -> Policy:
    """Build the policy registered as ``name``; ``KeyError`` lists the known names."""
    try:
        factory = POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise KeyError(f"unknown eviction policy {name!r}; known: {known}") from None
    return factory(capacity)
