"""S3-FIFO: three FIFO queues, "Simple and Scalable caching with three Static FIFO queues".

Yang et al., SOSP 2023. New keys enter a small FIFO (10% of the capacity); a key read
again while there moves to the main FIFO when it reaches the small queue's head,
otherwise it leaves and is remembered in a ghost FIFO (keys only). A key inserted while
its ghost is remembered goes straight to main. Main is a FIFO with lazy promotion: a
key at its head that was read since its last pass (a 2-bit counter) is put back at the
tail with one count less, else it leaves. Selectable for comparison (``"s3fifo"``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["S3FIFOPolicy"]

#: Share of the capacity held by the small (probationary) FIFO, as in the paper.
SMALL_SHARE = 0.10
#: Reads counted per key (2 bits in the paper).
MAX_FREQ = 3


class S3FIFOPolicy:
    """S3-FIFO over weights: the small queue holds 10% of ``capacity``, ghosts as much as main."""

    def __init__(self, capacity: int, *, small_share: float = SMALL_SHARE) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._small_share = small_share
        self._small: OrderedDict[Hashable, int] = OrderedDict()
        self._main: OrderedDict[Hashable, int] = OrderedDict()
        self._ghost: OrderedDict[Hashable, int] = OrderedDict()
        self._freq: dict[Hashable, int] = {}
        self.small_weight = 0
        self.main_weight = 0
        self.ghost_weight = 0
        self.resize(capacity)

    def resize(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.small_max = max(1, int(self._small_share * capacity))
        self.ghost_max = capacity - self.small_max
        self._trim_ghost()

    @property
    def weight(self) -> int:
        return self.small_weight + self.main_weight

    def __len__(self) -> int:
        return len(self._freq)

    def __contains__(self, key: object) -> bool:
        return key in self._freq

    def segments(self) -> dict[str, list[Hashable]]:
        """Keys per queue, oldest first (for tests and debugging; O(n))."""
        return {
            "small": list(self._small),
            "main": list(self._main),
            "ghost": list(self._ghost),
        }

    def entries(self) -> list[tuple[Hashable, int, int]]:
        """Resident ``(key, weight, reads)``, first to be evicted first (main, then small).

        ``reads`` is the key's counter: reads since it was last looked at (at most 3).
        """
        freq = self._freq
        return [
            (k, w, freq[k])
            for queue in (self._main, self._small)
            for k, w in queue.items()
        ]

    def weight_of(self, key: Hashable) -> int:
        """The weight a resident ``key`` was given."""
        weight = self._small.get(key)
        return self._main[key] if weight is None else weight

    def adopt(
        self,
        entries: list[tuple[Hashable, int, int]],
        like: S3FIFOPolicy | None = None,
    ) -> None:
        """Take over another policy's residents (oldest first) in an empty instance.

        The newest ``small_max`` of weight go to small, the rest to main, with their
        ``reads`` as counters (at most 3):
        without this, every adopted key would sit in small and the next evictions
        would drop 90% of them in FIFO order, useful or not. ``like`` (a shadow that
        saw the same requests at the same capacity) lends its ghost.
        """
        if like is not None and like.capacity == self.capacity:
            for key, weight in like._ghost.items():
                if key not in like._freq:
                    self._ghost[key] = weight
                    self.ghost_weight += weight
            self._trim_ghost()
        small_weight = 0
        split = len(entries)
        while split and small_weight + entries[split - 1][1] <= self.small_max:
            split -= 1
            small_weight += entries[split][1]
        for index, (key, weight, reads) in enumerate(entries):
            self._freq[key] = min(reads, MAX_FREQ)
            if index < split:
                self._main[key] = weight
                self.main_weight += weight
            else:
                self._small[key] = weight
                self.small_weight += weight

    def record_hit(self, key: Hashable) -> None:
        freq = self._freq
        count = freq[key]
        if count < MAX_FREQ:
            freq[key] = count + 1

    def record_miss(self, key: Hashable) -> None:
        pass

    def insert(self, key: Hashable, weight: int) -> None:
        self._freq[key] = 0
        ghost_weight = self._ghost.pop(key, None)
        if ghost_weight is not None:
            self.ghost_weight -= ghost_weight
            self._main[key] = weight
            self.main_weight += weight
        else:
            self._small[key] = weight
            self.small_weight += weight

    def update(self, key: Hashable, weight: int) -> None:
        small = self._small
        old = small.get(key)
        if old is not None:
            if weight != old:
                self.small_weight += weight - old
                small[key] = weight
        else:
            main = self._main
            old = main[key]
            if weight != old:
                self.main_weight += weight - old
                main[key] = weight
        freq = self._freq  # record_hit, inlined: set_many updates every key
        count = freq[key]
        if count < MAX_FREQ:
            freq[key] = count + 1

    def remove(self, key: Hashable) -> None:
        del self._freq[key]
        weight = self._small.pop(key, None)
        if weight is not None:
            self.small_weight -= weight
        else:
            self.main_weight -= self._main.pop(key)

    def evict(self) -> Hashable:
        small, main, freq = self._small, self._main, self._freq
        while True:
            if small and (self.small_weight >= self.small_max or not main):
                key, weight = small.popitem(last=False)
                self.small_weight -= weight
                if freq[key]:
                    freq[key] = 0
                    main[key] = weight
                    self.main_weight += weight
                    continue
                del freq[key]
                self._ghost[key] = weight
                self.ghost_weight += weight
                self._trim_ghost()
                return key
            key, weight = next(iter(main.items()))
            count = freq[key]
            if count:
                freq[key] = count - 1
                main.move_to_end(key)
                continue
            del main[key], freq[key]
            self.main_weight -= weight
            return key

    def clear(self) -> None:
        self._small.clear()
        self._main.clear()
        self._freq.clear()
        self.small_weight = self.main_weight = 0

    def _trim_ghost(self) -> None:
        ghost = self._ghost
        while self.ghost_weight > self.ghost_max and ghost:
            self.ghost_weight -= ghost.popitem(last=False)[1]
