"""The store's loop over a policy, replayed against a model of the resident keys.

Property tests of several policies drive a policy exactly as ``MemoryStore`` does
(insert, then evict while over budget; a resize half way) and check their own
invariants after every step through ``check``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any


def replay(
    policy: Any,
    ops: list[tuple[str, int, int]],
    resize_to: int,
    check: Callable[[dict[Hashable, int]], None],
) -> dict[Hashable, int]:
    """Apply ``(op, key, weight)`` steps; return the resident keys and their weights."""
    resident: dict[Hashable, int] = {}

    def shrink() -> None:
        while sum(resident.values()) > policy.capacity:
            victim = policy.evict()
            assert victim in resident
            del resident[victim]

    for step, (op, key, weight) in enumerate(ops):
        if step == len(ops) // 2:
            policy.resize(resize_to)
            shrink()
        if op == "get":
            if key in resident:
                policy.record_hit(key)
            else:
                policy.record_miss(key)
        elif op == "delete":
            if key in resident:
                policy.remove(key)
                del resident[key]
        elif weight <= policy.capacity:
            if key in resident:
                policy.update(key, weight)
            else:
                policy.insert(key, weight)
            resident[key] = weight
            shrink()
        check(resident)
    return resident
