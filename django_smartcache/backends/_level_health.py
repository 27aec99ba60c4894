"""When a level of a MultiLevelCache fails: what counts as a fault, and its health.

A fault (a connection refused, a disk error, a database error) marks the level down for
``RETRY_INTERVAL``; the other levels keep serving, one warning is logged per interval,
and what the level missed meanwhile is repaired before it serves again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable

from django.core.cache.backends.base import BaseCache
from django.utils.module_loading import import_string

logger = logging.getLogger("django_smartcache.multilevel")

_monotonic = time.monotonic


def _fault_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this level is unavailable", not "the call was wrong"."""
    types: list[type[BaseException]] = [OSError, sqlite3.Error]
    try:
        import redis

        types.append(redis.exceptions.RedisError)
    except ImportError:  # pragma: no cover - redis is an optional dependency
        pass
    try:
        from django.db import Error as DatabaseError

        types.append(DatabaseError)
    except ImportError:  # pragma: no cover
        pass
    for name in (
        "django_redis.exceptions.ConnectionInterrupted",
        "pymemcache.exceptions.MemcacheError",
    ):
        try:
            types.append(import_string(name))
        except ImportError:
            pass
    return tuple(types)


FAULTS = _fault_types()

#: Redis answers to a wrong call (not a level in trouble), by message start.
_CALLER_ERRORS = (
    "value is not an integer",
    "increment or decrement would overflow",
    "WRONGTYPE",
)


def _caller_error(exc: BaseException) -> bool:
    """A Redis error about the call itself (as ``ValueError``/``TypeError`` elsewhere)."""
    try:
        from redis.exceptions import DataError, ResponseError
    except ImportError:  # pragma: no cover - redis is an optional dependency
        return False
    if isinstance(exc, DataError):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_CALLER_ERRORS)


class LevelHealth:
    """Per-process state of one level: down until when, errors, what it may have missed.

    Shared by the per-thread backend instances of one configuration, so one warning is
    logged per ``log_interval`` for the whole process, not per call or per thread.
    """

    def __init__(self, name: str, retry: float, log_interval: float, max_suspects: int):
        self.name = name
        self.retry = retry
        self.log_interval = log_interval
        self.max_suspects = max_suspects
        self.lock = threading.Lock()
        self.down_until = 0.0  # 0.0: up
        self.errors = 0
        self.recoveries = 0
        self.last_error = ""
        self._last_log = float("-inf")
        #: Keys written or deleted while this level could not be: deleted from it on
        #: recovery, so it never serves the value they replaced.
        self.suspects: set[str] = set()
        #: A clear() was missed, or too many suspects: clear the level on recovery.
        self.clear_pending = False

    def forked(self) -> None:
        """In a forked child: the lock may be held by a parent thread, gone here."""
        self.lock = threading.Lock()

    def failed(self, exc: BaseException, op: str) -> None:
        now = _monotonic()
        with self.lock:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.down_until = now + self.retry
            log = now - self._last_log >= self.log_interval
            if log:
                self._last_log = now
        if log:
            logger.warning(
                "smartcache level %s failed during %s (%s); serving from the other "
                "levels and retrying every %ss (errors so far: %d)",
                self.name,
                op,
                self.last_error,
                self.retry,
                self.errors,
            )

    def missed(self, keys: Iterable[str]) -> None:
        with self.lock:
            if self.clear_pending:
                return
            self.suspects.update(keys)
            if len(self.suspects) > self.max_suspects:
                self.suspects.clear()
                self.clear_pending = True

    def missed_clear(self) -> None:
        with self.lock:
            self.suspects.clear()
            self.clear_pending = True

    def repair(self, level: BaseCache) -> None:
        """Before a level that was down serves again: undo what the outage may have hidden."""
        with self.lock:
            suspects = list(self.suspects)
            clear = self.clear_pending
        if not (clear or suspects):
            return  # the next call is the probe; ``recovered()`` follows its success
        if clear:
            level.clear()
        else:
            level.delete_many(suspects)
        with self.lock:
            self.suspects.difference_update(suspects)
            if clear:
                self.clear_pending = False
        self.recovered(len(suspects))

    def recovered(self, repaired: int = 0) -> None:
        with self.lock:
            if self.down_until == 0.0:
                return
            self.down_until = 0.0
            self.recoveries += 1
        logger.info(
            "smartcache level %s is back (%d keys repaired)", self.name, repaired
        )
