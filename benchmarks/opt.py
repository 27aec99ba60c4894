"""Belady's OPT: the offline optimum a policy's hit ratio is measured against.

On a miss, OPT knows every key's next use. It stores the new key only if it is used
again before some resident key, which it then evicts (the resident used furthest in
the future). Declining to store is allowed, so this is the true optimum for an entry
budget; no online policy can beat it. O(n log n) with a lazily cleaned max-heap.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

__all__ = ["next_uses", "opt_hits"]


def next_uses(keys: Sequence[int]) -> list[int]:
    """For each request, the index of the next request of the same key (``len`` if none)."""
    n = len(keys)
    following = [n] * n
    seen: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        key = keys[i]
        following[i] = seen.get(key, n)
        seen[key] = i
    return following


def opt_hits(
    keys: Sequence[int], capacity: int, following: list[int] | None = None
) -> int:
    """How many of ``keys`` hit in an optimal cache of ``capacity`` entries."""
    n = len(keys)
    if following is None:
        following = next_uses(keys)
    resident: dict[int, int] = {}  # key -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, key); stale pairs are skipped
    push, pop = heapq.heappush, heapq.heappop
    hits = 0
    for i, key in enumerate(keys):
        nxt = following[i]
        if key in resident:
            hits += 1
            if nxt == n:
                del resident[key]  # never used again: free the slot now
            else:
                resident[key] = nxt
                push(heap, (-nxt, key))
            continue
        if nxt == n:
            continue  # never used again: not worth a slot
        if len(resident) < capacity:
            resident[key] = nxt
            push(heap, (-nxt, key))
            continue
        while True:
            far, victim = heap[0]
            if resident.get(victim) == -far:
                break
            pop(heap)
        if -far > nxt:
            pop(heap)
            del resident[victim]
            resident[key] = nxt
            push(heap, (-nxt, key))
    return hits
