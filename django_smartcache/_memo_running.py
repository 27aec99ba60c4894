"""The computations of ``@cached`` running in this process, which ``invalidate()``
voids directly, beside the ``:void`` token it writes for the other processes.

The token lives in the cache, and a cache may evict it before the computation reads
it again: a full SmartCache under churn drops a key nobody has read after 100 to
2,500 requests (``POLICY="tinylfu"``: after about 1% of its entries are rewritten).
A computation that found no token before and none after then stored a result an
``invalidate()`` had voided. An in-process cache is only ever written by this
process, so for it this mark is the whole answer; for a shared one it covers this
process's computations, and the token the others'.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager


class Computation:
    """One computation in flight; ``voided`` once an invalidation covers it."""

    __slots__ = ("voided",)

    def __init__(self) -> None:
        self.voided = False


class RunningComputations:
    """Computations in flight by ``(scope, key)`` and by ``(scope, function)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[Hashable, str], list[Computation]] = {}
        self._by_function: dict[tuple[Hashable, str], list[Computation]] = {}

    @contextmanager
    def running(
        self, scope: Hashable, key: str, function: str
    ) -> Iterator[Computation]:
        """Register a computation of ``key`` (of ``function``) for its duration."""
        computation = Computation()
        by_key, by_function = (scope, key), (scope, function)
        with self._lock:
            self._by_key.setdefault(by_key, []).append(computation)
            self._by_function.setdefault(by_function, []).append(computation)
        try:
            yield computation
        finally:
            with self._lock:
                _remove(self._by_key, by_key, computation)
                _remove(self._by_function, by_function, computation)

    def void(self, scope: Hashable, key: str) -> None:
        """Void the computations of ``key`` running now."""
        with self._lock:
            for computation in self._by_key.get((scope, key), ()):
                computation.voided = True

    def void_function(self, scope: Hashable, function: str) -> None:
        """Void every computation of ``function`` running now."""
        with self._lock:
            for computation in self._by_function.get((scope, function), ()):
                computation.voided = True

    def __len__(self) -> int:
        with self._lock:
            return sum(len(runs) for runs in self._by_key.values())


def _remove(
    table: dict[tuple[Hashable, str], list[Computation]],
    at: tuple[Hashable, str],
    computation: Computation,
) -> None:
    runs = table[at]
    runs.remove(computation)
    if not runs:
        del table[at]


#: Every ``@cached`` function's computations in this process.
RUNNING = RunningComputations()
