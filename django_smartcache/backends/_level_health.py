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
from collections.abc import Callable, Iterable

from django.core.cache.backends.base import BaseCache
from django.utils.module_loading import import_string

logger = logging.getLogger("django_smartcache.multilevel")

_monotonic = time.monotonic


#: pylibmc's errors that mean the server is unreachable or failing (not ``TooBig``,
#: ``BadKeyProvided``, ``ClientError``: the call's fault, raised to the caller).
_PYLIBMC_FAULTS = (
    "ConnectionError",
    "ConnectionBindError",
    "HostLookupError",
    "SocketCreateError",
    "UnixSocketError",
    "WriteError",
    "ReadError",
    "UnknownReadFailure",
    "ServerDead",
    "ServerDown",
    "NoServers",
    "SomeErrors",
    "ServerError",
    "Failure",
)


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
        *(f"pylibmc.{name}" for name in _PYLIBMC_FAULTS),
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
    "invalid expire time",
    "WRONGTYPE",
)

#: How redis-py prefixes the answer to one command of a pipeline.
_PIPELINE_ERROR = "of pipeline caused error: "


def _caller_error(exc: BaseException) -> bool:
    """A level's error about the call itself (as ``ValueError``/``TypeError``
    elsewhere): raised to the caller, as the backend alone raises it; the level is up."""
    if _memcache_caller_error(exc) or isinstance(exc, sqlite3.DataError):
        # sqlite3.DataError: a value over SQLite's limit (SQLiteCache refuses one over
        # SQLITE_MAX_LENGTH first; a build or connection with a lower limit raises).
        return True
    try:
        from redis.exceptions import DataError, ResponseError
    except ImportError:  # pragma: no cover - redis is an optional dependency
        return False
    if isinstance(exc, DataError) or _no_permission(exc):
        return True
    if not isinstance(exc, ResponseError):
        return False
    # A pipeline (Django's RedisCache.set_many) wraps the answer:
    # "Command # 2 (EXPIRE ...) of pipeline caused error: value is not an integer ..."
    answer = str(exc).rpartition(_PIPELINE_ERROR)[2]
    return answer.startswith(_CALLER_ERRORS)


def _no_permission(exc: BaseException) -> bool:
    """Redis' ``NOPERM``: the ACL user may not run the command (``FLUSHDB`` without
    ``@dangerous``) or touch the key (outside its ``~pattern``). The configuration's
    error, not an outage: raised to the caller, as Django's RedisCache alone raises
    it. It used to mark the level down and queue a repair (a clear, for a refused
    ``FLUSHDB``) that failed the same way at every retry: the level stayed down in
    that process for good, and its later writes never reached Redis. Also when a
    client wraps it (its ``__cause__``)."""
    try:
        from redis.exceptions import NoPermissionError
    except ImportError:  # pragma: no cover - redis is an optional dependency
        return False
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 4:
        if isinstance(current, NoPermissionError):
            return True
        current, seen = current.__cause__, seen + 1
    return False


def _memcache_caller_error(exc: BaseException) -> bool:
    """pymemcache's answers to a bad call: a key or value memcached refuses to parse
    (``CLIENT_ERROR``: too long a key in bytes, ``incr`` of text or past 2**64) or a
    value over its item size (``SERVER_ERROR object too large for cache``)."""
    module = type(exc).__module__
    if module.startswith("pymemcache"):
        from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

        if isinstance(exc, MemcacheClientError):
            return True
        return isinstance(exc, MemcacheServerError) and "too large" in str(exc)
    return False


def _no_epoch() -> int:
    return 0


class LevelHealth:
    """Per-process state of one level: down until when, errors, what it may have missed.

    Shared by the per-thread backend instances of one configuration, so one warning is
    logged per ``log_interval`` for the whole process, not per call or per thread.
    """

    def __init__(
        self,
        name: str,
        retry: float,
        log_interval: float,
        max_suspects: int,
        rebuild: Callable[[], BaseCache] | None = None,
    ):
        self.name = name
        #: Builds an instance of the level for the background repair (built once per
        #: outage, reused by its retries, which run one at a time).
        self._rebuild = rebuild
        self._repair_level: BaseCache | None = None
        self._timer: threading.Timer | None = None
        #: A background repair is running: no other is started meanwhile (it re-arms
        #: for what is left when it ends). Two used to run at once, sharing
        #: ``_repair_level``: the first to end closed it, the other raised on None.
        self._repairing = False
        self._stopped = False
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
        #: recovery, so it never serves the value they replaced. Each with the
        #: coherence channel's ``epoch`` when it was recorded (see ``heard``).
        self.suspects: dict[str, int] = {}
        #: A clear() was missed, or too many suspects: clear the level on recovery.
        self.clear_pending = False
        self._clear_epoch = 0
        #: The coherence channel's count of what it heard (the lowest level's only):
        #: a change heard at a later count was made after the suspect was recorded.
        self.epoch: Callable[[], int] = _no_epoch
        #: When ``reachable()`` last brought the repair forward.
        self._hinted = float("-inf")
        #: ``announce(keys or None)``: tell the other processes what a repair deleted
        #: (None: cleared), so they drop their L1 copies. Those copies were read from
        #: the level between its return and the repair, the values the outage writes
        #: replaced, and used to live on up to ``L1_MAX_TTL`` after it.
        self.announce: Callable[[list[str] | None], None] | None = None

    def repairing(self) -> bool:
        """Whether a repair is pending (a hint: read without the lock)."""
        return bool(self.suspects) or self.clear_pending

    def forked(self) -> None:
        """In a forked child: the lock may be held by a parent thread, gone here; so
        is the repair timer's thread (the next suspect arms a new one)."""
        self.lock = threading.Lock()
        self._timer = None
        self._repair_level = None
        self._repairing = False
        if self.clear_pending or self.suspects:
            self._arm()  # what the parent had to repair, the child repairs too

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

    def claim_probe(self, now: float) -> bool:
        """Whether this caller may try the level (down, its ``down_until`` passed).

        One caller per ``retry`` interval in the process: it pushes ``down_until`` on,
        so the others keep skipping the level while it tries. Every caller used to try
        at once, each waiting out the client's timeout against a server that hangs.
        """
        with self.lock:
            if self.down_until == 0.0:
                return True  # back meanwhile
            if now < self.down_until:
                return False
            self.down_until = now + self.retry
            return True

    def missed(self, keys: Iterable[str]) -> None:
        epoch = self.epoch()
        with self.lock:
            self._arm()
            if self.clear_pending:
                return
            self.suspects.update(dict.fromkeys(keys, epoch))
            if len(self.suspects) > self.max_suspects:
                self.suspects.clear()
                self.clear_pending = True
                self._clear_epoch = epoch

    def missed_clear(self) -> None:
        epoch = self.epoch()
        with self.lock:
            self._arm()
            self.suspects.clear()
            self.clear_pending = True
            self._clear_epoch = epoch

    def written(self, keys: Iterable[str] | None) -> None:
        """This process wrote (``None``: cleared) the level since it came back: that
        is newer than its outage writes, which must no longer be repaired."""
        if not (self.suspects or self.clear_pending):
            return
        with self.lock:
            if keys is None:
                self.suspects.clear()
                self.clear_pending = False
            else:
                for key in keys:
                    self.suspects.pop(key, None)

    def heard(self, keys: list[str] | None, since: int) -> None:
        """Another process changed ``keys`` in the level (``None``: cleared it), as the
        coherence channel heard with epoch ``since``: suspects recorded before that
        are older than the change, so the repair must leave it (it used to delete
        another process's write made after the level's return, a lock included)."""
        if not (self.suspects or self.clear_pending):
            return
        with self.lock:
            if keys is None:
                for key, epoch in list(self.suspects.items()):
                    if epoch < since:
                        del self.suspects[key]
                if self.clear_pending and self._clear_epoch < since:
                    self.clear_pending = False
            elif not self.clear_pending:
                for key in keys:
                    if self.suspects.get(key, since) < since:
                        del self.suspects[key]

    def reachable(self) -> None:
        """The coherence channel reached the level's server (Redis: a subscription;
        SQLite: a poll of the change log): repair now rather than at the next retry,
        which was up to ``retry`` later, while the other processes wrote to the level
        what the repair then deleted. At most 4 times per ``retry`` (a level that
        answers the channel may still refuse writes: a full disk)."""
        if not (self.suspects or self.clear_pending) or self._rebuild is None:
            return
        now = _monotonic()
        with self.lock:
            if self._stopped or not (self.suspects or self.clear_pending):
                return
            if self._repairing:
                return  # the running repair re-arms for what it leaves
            due = max(now, self._hinted + self.retry / 4)
            if self.down_until != 0.0:
                if due >= self.down_until:
                    return  # the timer, or the next call, tries it first anyway
                self.down_until = due  # the callers may try it from then on too
            self._hinted = due
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            self._arm(due - now)

    def _arm(self, delay: float | None = None) -> None:
        """Schedule a background repair (called with ``lock`` held).

        Repairs used to run only inside this process's next call to the level: a
        worker that went idle after writing through an outage left the level holding
        the values those writes replaced, and every other process read them, with no
        time bound. Now a timer repairs at ``down_until`` and retries while it fails.
        """
        if (
            self._rebuild is None
            or self._timer is not None
            or self._stopped
            or self._repairing
        ):
            return
        # Every ``retry``, failed attempts included: the level is tried that often by
        # the process's calls anyway. Failed attempts used to back off (doubling, up to
        # 32 intervals): after a 40 s outage an idle writer repaired 24 s after the
        # level's return, and every other process read the values it had replaced.
        if delay is None:
            delay = max(self.down_until - _monotonic(), 0.0) or self.retry
        timer = threading.Timer(delay, self._repair_in_background)
        timer.daemon = True
        timer.name = f"smartcache-repair {self.name}"
        self._timer = timer
        timer.start()

    def _repair_in_background(self) -> None:
        with self.lock:
            if self._timer is threading.current_thread():
                self._timer = None  # not one armed meanwhile (``reachable``)
            if self._repairing:
                return  # one at a time: that one re-arms when it ends
            pending = self.clear_pending or bool(self.suspects)
            early = self.down_until - _monotonic() > 0
            if pending and early:
                self._arm()
            if not pending or early:
                return
            self._repairing = True
        assert self._rebuild is not None
        try:
            if self._repair_level is None:
                self._repair_level = self._rebuild()
            self.repair(self._repair_level)
        except Exception as exc:  # noqa: BLE001 - retried, or abandoned and logged
            outage = isinstance(exc, FAULTS) and not _caller_error(exc)
            if outage:
                self.failed(exc, "repair")
            else:
                # Not an outage (a NOPERM: the user may not FLUSHDB): every retry
                # fails the same way. It used to be retried every RETRY_INTERVAL for
                # good, the level down meanwhile.
                self.abandon(exc)
            with self.lock:
                self._repairing = False
                if outage:
                    self._arm()
            return
        level, self._repair_level = self._repair_level, None
        try:
            level.close()
        finally:
            with self.lock:
                self._repairing = False
                if self.clear_pending or self.suspects:
                    self._arm()  # missed meanwhile

    def abandon(self, exc: BaseException) -> None:
        """The repair failed with an error that is no outage (the level answered: a
        NOPERM, a bug): retrying would fail the same way, so it is dropped, logged at
        ERROR with what the level may still hold, and the level counts as back."""
        with self.lock:
            keys = len(self.suspects)
            clear = self.clear_pending
            self.suspects.clear()
            self.clear_pending = False
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
        if clear:
            left = "the clear() it missed is not done: it keeps what was written before"
        else:
            left = f"{keys} keys written during the outage keep there the values they replaced"
        logger.error(
            "smartcache level %s: its repair after an outage was refused (%s: %s) and "
            "is abandoned; %s, until they expire. Give the level's user the "
            "permission the repair needs (FLUSHDB for a clear, UNLINK/DEL of the "
            "cache's keys)",
            self.name,
            type(exc).__name__,
            exc,
            left,
            exc_info=not isinstance(exc, FAULTS),
        )
        self.recovered()

    def stop(self) -> None:
        """Cancel the background repair for good (tests; a process shutting down)."""
        with self.lock:
            self._stopped = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def repair(self, level: BaseCache) -> None:
        """Before a level that was down serves again: undo what the outage may have hidden."""
        with self.lock:
            suspects = dict(self.suspects)
            clear = self.clear_pending
        if not (clear or suspects):
            return  # the next call is the probe; ``recovered()`` follows its success
        if clear:
            level.clear()
        else:
            level.delete_many(list(suspects))
        with self.lock:
            for key, epoch in suspects.items():
                if self.suspects.get(key) == epoch:
                    del self.suspects[key]
            if clear:
                self.clear_pending = False
        if self.announce is not None:
            self.announce(None if clear else list(suspects))
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
