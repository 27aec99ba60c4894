"""When a level of a MultiLevelCache fails: what counts as a fault, and its health.

A fault (a connection refused, a disk error, a database error) marks the level down for
``RETRY_INTERVAL``; the other levels keep serving, one warning is logged per interval,
and what the level missed meanwhile is repaired before it serves again.
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from django.core.cache.backends.base import BaseCache
from django.utils.module_loading import import_string

from ..core.patterns import glob_escape
from ._level_patterns import SCAN_COUNT
from ._level_ttl import raw_redis_client

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
    it. Taken for an outage, it would mark the level down and queue a repair (a
    clear, for a refused ``FLUSHDB``) that fails the same way at every retry: the
    level down in that process for good, its later writes never reaching Redis. Also
    when a client wraps it (its ``__cause__``)."""
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


#: How many refused keys an ERROR names (the rest are counted).
_NAMED_MAX = 20


def _key_text(key: str | bytes) -> str:
    return key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key


def _unlink_each(client: Any, keys: list[Any]) -> tuple[int, list[str]]:
    """Delete ``keys`` one command each in pipelines, an answer per key: (deleted,
    the keys refused with NOPERM). Any other error is raised."""
    deleted, refused = 0, []
    for start in range(0, len(keys), SCAN_COUNT):
        batch = keys[start : start + SCAN_COUNT]
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.unlink(key)
        for key, answer in zip(batch, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(answer, BaseException):
                if not _no_permission(answer):
                    raise answer
                refused.append(_key_text(key))
            else:
                deleted += int(answer or 0)
    return deleted, refused


def _delete_each(level: BaseCache, keys: list[str]) -> list[str]:
    """The suspects one by one, after the level refused to delete them together (one
    key outside the ACL user's ``~pattern`` makes the multi-key DEL fail): the keys
    refused with NOPERM. Any other error is raised."""
    client = raw_redis_client(level, write=True)
    if client is not None:
        return _unlink_each(client, list(keys))[1]
    refused = []
    for key in keys:
        try:
            level.delete(key)
        except FAULTS as exc:
            if not _no_permission(exc):
                raise
            refused.append(key)
    return refused


def _bare_copy(exc: BaseException, depth: int = 3) -> BaseException:
    """``exc`` again without its traceback or context, its cause copied the same way
    (a message may read it: django-redis's ``ConnectionInterrupted``); ``exc`` itself
    when it cannot be rebuilt faithfully. Never raises (it runs on an error path).

    ``copy.copy`` rebuilds from ``args``, which fails for an exception whose
    ``__init__`` takes keywords (``ConnectionInterrupted(connection=...)``): then the
    instance is made without ``__init__`` and given the original's attributes, and
    kept only if its message still reads as the original's.
    """
    try:
        try:
            new = copy.copy(exc)
        except Exception:  # noqa: BLE001 - rebuilt below
            new = type(exc).__new__(type(exc), *exc.args)
            new.__dict__.update(getattr(exc, "__dict__", {}))
            new.__cause__ = exc.__cause__  # (its message may read it)
            if str(new) != str(exc):
                return exc  # state kept elsewhere (slots, C fields): not rebuilt
        if new is exc:
            return exc
        if depth and exc.__cause__ is not None:
            new.__cause__ = _bare_copy(exc.__cause__, depth - 1)
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list):
            new.__notes__ = list(notes)
        return new
    except Exception:  # noqa: BLE001 - the original, as before
        return exc


#: A caller's own repair deletes at most this many refused suspects one by one; more
#: are left to the background repair (``RepairDeferred``).
_INLINE_DELETES = 32


class RepairDeferred(Exception):
    """A caller's repair met a refusal whose way round is slow (a SCAN of the whole
    database, a DEL per key): it is left to the background repair, and the caller
    skips the level meanwhile. Run inline, each caller let in per ``retry`` would
    start its own SCAN and wait for it (4 callers, 4.5-4.9 s each, over a database
    of 3M keys)."""


def _clear_namespace(level: BaseCache, namespace: str) -> tuple[int, list[str]]:
    """What a refused ``FLUSHDB`` was to do, for this cache's own keys: ``SCAN MATCH
    <namespace>*`` and ``UNLINK`` each key (neither is ``@dangerous``). (deleted, the
    keys refused with NOPERM); a level without a redis-py client raises NOPERM's
    absence as ``LookupError``."""
    client = raw_redis_client(level, write=True)
    match = glob_escape(namespace) + "*"
    if client is None:
        # A level with a pattern delete of its own (SQLiteCache; django-redis's
        # ShardClient, whose glob is Redis's: the escaped namespace reads the same).
        delete_pattern = getattr(level, "delete_pattern", None)
        if delete_pattern is None:
            raise LookupError("no redis-py client to scan the level's keys with")
        return int(delete_pattern(match) or 0), []
    deleted, refused = 0, []
    cursor = 0
    while True:
        cursor, batch = client.scan(cursor=cursor, match=match, count=SCAN_COUNT)
        if batch:
            gone, denied = _unlink_each(client, list(batch))
            deleted += gone
            refused += denied
        if not cursor:
            return deleted, refused


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


#: What a repair is to do: the suspects with their marks, whether to clear, the
#: clear's mark and reason (``LevelHealth._attempt``).
Attempt = tuple[dict[str, tuple[int, int]], bool, tuple[int, int], str, bool]


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
        #: When the armed ``_timer`` fires (monotonic): it is only brought forward.
        self._timer_due = 0.0
        #: A background repair is running: no other is started meanwhile (it re-arms
        #: for what is left when it ends). Two at once would share
        #: ``_repair_level``: the first to end closes it, the other raises on None.
        self._repairing = False
        #: A caller's repair left its slow way round to the background repair
        #: (``RepairDeferred``): callers skip the level until that repair has run,
        #: and it runs at once, not at ``down_until`` (which every probing caller
        #: pushes on: under steady traffic a caller always comes first, the timer
        #: would find the repair "early" again and again, and the level stay down).
        self._deferred = False
        self._stopped = False
        self.retry = retry
        self.log_interval = log_interval
        self.max_suspects = max_suspects
        self.lock = threading.Lock()
        #: Held for the whole of a repair (``repair``): one at a time in the process,
        #: the background one or a RAISE_ERRORS caller's (which waits for it). With
        #: several at once, one's SCAN+UNLINK would delete writes made after another
        #: had finished and the level was back (8 of 68 fresh writes lost).
        self._repair_mutex = threading.Lock()
        #: Outages met by repairs so far, and the last one (see ``repair``).
        self._repair_faults = 0
        self._repair_fault: BaseException | None = None
        self.down_until = 0.0  # 0.0: up
        #: Outages met (``failed``): a success proves the level back only if none
        #: came after the probe or repair it ends (see ``probed``).
        self.failures = 0
        #: ``probe``: the thread's claim (``failures`` then) of the call it probes with.
        self._local = threading.local()
        self.errors = 0
        self.recoveries = 0
        self.last_error = ""
        self._last_log = float("-inf")
        #: Whether a failure was logged since the last "is back": a level that flaps
        #: (reads answered, writes refused: Redis OOM under ``noeviction``) came back
        #: twice a second, and each return logged an INFO telling the operator the
        #: opposite of what was happening, between WARNINGs once per interval.
        self._down_logged = False
        self._last_refusal_log = float("-inf")
        #: Keys written or deleted while this level could not be: deleted from it on
        #: recovery, so it never serves the value they replaced. Each with its mark:
        #: the coherence channel's ``epoch`` when it was recorded (see ``heard``) and
        #: a count of records, which tells a key recorded again during a repair from
        #: the record the repair deleted (see ``_done``; the epoch alone is 0 but for
        #: a Redis lowest level, and a rewrite there would be forgotten with the
        #: attempt).
        self.suspects: dict[str, tuple[int, int]] = {}
        self._records = 0
        #: A clear() was missed, or a delete_pattern(), or too many suspects: clear
        #: the level on recovery...
        self.clear_pending = False
        self._clear_mark = (0, 0)
        #: ...all of it (a missed clear(): FLUSHDB, as clear() itself), or only this
        #: cache's keys (``namespaces``): a missed delete_pattern() or too many
        #: suspects flushed the whole database, other aliases' keys with it.
        self._clear_everything = False
        #: Why the level is to be cleared (what the ERROR of an abandoned repair says).
        self._clear_reason = ""
        #: How the keys of the caches over this level start (``"prefix:"`` per
        #: KEY_PREFIX of the aliases sharing it; ``""``: unknown, every key): a
        #: refused FLUSHDB is done as SCAN + UNLINK of these (see ``_clear``).
        self.namespaces: set[str] = set()
        #: The coherence channel's count of what it heard (the lowest level's only):
        #: a change heard at a later count was made after the suspect was recorded.
        self.epoch: Callable[[], int] = _no_epoch
        #: When ``reachable()`` last brought the repair forward.
        self._hinted = float("-inf")
        #: ``announce(keys or None)``: tell the other processes what a repair deleted
        #: (None: cleared), so they drop their L1 copies. Those copies were read from
        #: the level between its return and the repair, the values the outage writes
        #: replaced, and would otherwise live on up to ``L1_MAX_TTL`` after it.
        self.announce: Callable[[list[str] | None], None] | None = None
        #: Whether the level took a write of this process once (``written``): what
        #: the exit-time repair's failure is logged at (``repair_at_exit``).
        self.took_writes = False
        _EVERY_HEALTH.add(self)

    def repairing(self) -> bool:
        """Whether a repair is pending (a hint: read without the lock)."""
        return bool(self.suspects) or self.clear_pending

    def forked(self) -> None:
        """In a forked child: the lock may be held by a parent thread, gone here; so
        is the repair timer's thread (the next suspect arms a new one)."""
        self.lock = threading.Lock()
        self._repair_mutex = threading.Lock()
        self._repair_fault = None
        self._timer = None
        self._repair_level = None
        self._repairing = False
        self._deferred = False
        if self.clear_pending or self.suspects:
            self._arm()  # what the parent had to repair, the child repairs too

    def _count_error(self, exc: BaseException) -> None:
        """Count ``exc`` in ``stats()`` (called with ``lock`` held)."""
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    def failed(self, exc: BaseException, op: str) -> None:
        now = _monotonic()
        with self.lock:
            self._count_error(exc)
            self.failures += 1
            self.down_until = now + self.retry
            log = now - self._last_log >= self.log_interval
            if log:
                self._last_log = now
                self._down_logged = True
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

    def refused(self, exc: BaseException, op: str) -> None:
        """The level refused (NOPERM) a command the cache sends of its own accord (the
        TTL lookup of a promotion, a promotion's write): no outage, and not the
        caller's error either, so nothing is raised; counted, and logged once per
        ``log_interval``. The level stays up."""
        now = _monotonic()
        with self.lock:
            self._count_error(exc)
            log = now - self._last_refusal_log >= self.log_interval
            if log:
                self._last_refusal_log = now
        if log:
            logger.warning(
                "smartcache level %s refused the cache's own %s (%s); %s. Give the "
                "level's user that command (errors so far: %d)",
                self.name,
                "TTL lookup" if op == "ttl" else "promotion write",
                self.last_error,
                "values read from it are promoted with L1_MAX_TTL"
                if op == "ttl"
                else "the promotion into it is skipped",
                self.errors,
            )

    def claim_probe(self, now: float) -> bool:
        """Whether this caller may try the level (down, its ``down_until`` passed).

        One caller per ``retry`` interval in the process: it pushes ``down_until`` on,
        so the others keep skipping the level while it tries, instead of each waiting
        out the client's timeout against a server that hangs.
        """
        with self.lock:
            if self.down_until == 0.0:
                return True  # back meanwhile
            if now < self.down_until:
                return False
            self.down_until = now + self.retry
            self._local.probe = self.failures
            return True

    def probing(self) -> None:
        """This thread probes the level with its next call (a RAISE_ERRORS caller,
        which probes without ``claim_probe``)."""
        self._local.probe = self.failures

    def probed(self) -> None:
        """A call to the level succeeded while it counts as down: it is back if this
        thread claimed the probe and no call failed since. A call that was in flight
        when another failed proves nothing of what failed (reads answered while
        writes are refused: Redis OOM, a SQLite write lock held past BUSY_TIMEOUT);
        marking the level back then would make it flap, each return repaired at once."""
        claimed = getattr(self._local, "probe", None)
        self._local.probe = None
        if claimed is not None and claimed == self.failures:
            self.recovered()

    def missed(self, keys: Iterable[str]) -> None:
        """A write of ``keys`` skipped this level. Recorded while a clear is pending
        too: a clear under way may have passed them already (another process's write
        since then would be served in place of this one's)."""
        mark = self._mark()
        with self.lock:
            self._pending_now()
            self.suspects.update(dict.fromkeys(keys, mark))
            if len(self.suspects) > self.max_suspects:
                self.suspects.clear()
                self.clear_pending = True
                self._clear_mark = mark
                self._clear_reason = (
                    f"more than MAX_SUSPECT_KEYS ({self.max_suspects}) keys were "
                    f"written during the outage"
                )

    def missed_clear(
        self,
        reason: str = "a clear() missed during the outage",
        *,
        everything: bool = True,
    ) -> None:
        """Clear the level on recovery: all of it, or (``everything=False``) only this
        cache's keys, where the level can find them (``_clear``)."""
        mark = self._mark()
        with self.lock:
            self._pending_now()
            self.suspects.clear()
            self._clear_everything = everything or (
                self.clear_pending and self._clear_everything
            )
            self.clear_pending = True
            self._clear_mark = mark
            self._clear_reason = reason

    def _mark(self) -> tuple[int, int]:
        """A new record's mark: (the coherence epoch, a count of records)."""
        epoch = self.epoch()
        with self.lock:
            self._records += 1
            return (epoch, self._records)

    def _pending_now(self) -> None:
        """Something is to be repaired (called with ``lock`` held). Usually the level
        is down (the skipped write found it so): repaired when it answers. If a repair
        marked it back meanwhile, at once; its reads of these keys skip it until then
        (``pending``)."""
        if self.down_until == 0.0:
            self._repair_by(_monotonic())
        else:
            self._arm()

    def pending(self, key: str) -> bool:
        """Whether the level may hold a value ``key``'s write replaced (a repair is
        pending for it): a read of ``key`` skips the level. Callers test
        ``repairing()`` first, the common case without the lock."""
        return self.clear_pending or key in self.suspects

    def written(self, keys: Iterable[str] | None) -> None:
        """This process wrote (``None``: cleared) the level since it came back: that
        is newer than its outage writes, which must no longer be repaired."""
        self.took_writes = True
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
        are older than the change, so the repair must leave it (else it deletes
        another process's write made after the level's return, a lock included)."""
        if not (self.suspects or self.clear_pending):
            return
        with self.lock:
            if keys is None:
                for key, (epoch, _) in list(self.suspects.items()):
                    if epoch < since:
                        del self.suspects[key]
                if self.clear_pending and self._clear_mark[0] < since:
                    self.clear_pending = False
            else:
                for key in keys:
                    if self.suspects.get(key, (since, 0))[0] < since:
                        del self.suspects[key]

    def reachable(self) -> None:
        """The coherence channel reached the level's server (Redis: a subscription;
        SQLite: a poll of the change log): repair now rather than at the next retry,
        up to ``retry`` later, while the other processes write to the level what the
        repair would then delete. At most 4 times per ``retry`` (a level that
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
            # Down: the callers may try it from then on too (up: 0.0 stays).
            self.down_until = min(self.down_until, due)
            if self._timer is not None and self._timer_due <= due:
                return  # due first anyway
            self._hinted = due
            self._repair_by(due)

    def _repair_by(self, due: float) -> None:
        """Have the background repair run at ``due`` at the latest (called with
        ``lock`` held): an armed timer is only ever brought forward. Cancelled and
        re-armed by ``reachable()`` at each call, it would be pushed on for good by
        calls more often than every ``retry / 4`` (SQLite's change-log poll, every
        0.05 s under traffic), and the level keep the values the outage writes
        replaced."""
        if self._repairing or self._stopped or self._rebuild is None:
            return  # (a running repair re-arms for what it leaves)
        if self._timer is not None:
            if self._timer_due <= due:
                return
            timer, self._timer = self._timer, None
            timer.cancel()
        self._arm(max(due - _monotonic(), 0.0))

    def _arm(self, delay: float | None = None) -> None:
        """Schedule a background repair (called with ``lock`` held).

        A timer repairs at ``down_until`` and retries while it fails. Run only inside
        this process's next call to the level, a repair would never come for a worker
        that went idle after writing through an outage: the level would hold the
        values those writes replaced, read by every other process, with no time bound.
        """
        if (
            self._rebuild is None
            or self._timer is not None
            or self._stopped
            or self._repairing
        ):
            return
        # Every ``retry``, failed attempts included: the level is tried that often by
        # the process's calls anyway. No back-off: doubling up to 32 intervals, an idle
        # writer would repair 24 s after the level's return from a 40 s outage, every
        # other process reading the values it had replaced meanwhile.
        now = _monotonic()
        if delay is None:
            delay = max(self.down_until - now, 0.0) or self.retry
        timer = threading.Timer(delay, self._repair_in_background)
        timer.daemon = True
        timer.name = f"smartcache-repair {self.name}"
        self._timer = timer
        self._timer_due = now + delay
        timer.start()

    def _repair_in_background(self) -> None:
        with self.lock:
            if self._timer is threading.current_thread():
                self._timer = None  # not one armed meanwhile (``reachable``)
            if self._repairing:
                return  # one at a time: that one re-arms when it ends
            pending = self.clear_pending or bool(self.suspects)
            early = not self._deferred and self.down_until - _monotonic() > 0
            if pending and early:
                self._arm()
            if not pending:
                self._deferred = False  # (dropped meanwhile: heard another's writes)
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
                # Not an outage (building the level failed: a bug): every retry fails
                # the same way. A refusal of the repair itself is handled in
                # ``repair``.
                self.abandon(exc)
                self._close_repair_level()
            with self.lock:
                self._repairing = False
                self._deferred = False
                if outage:
                    self._arm()
            return
        level, self._repair_level = self._repair_level, None
        try:
            level.close()
        finally:
            with self.lock:
                self._repairing = False
                self._deferred = False
                if self.clear_pending or self.suspects:
                    # Recorded while it ran: at once if the level is back (its reads
                    # of those keys skip it meanwhile), else when it is due.
                    self._arm(0.0 if self.down_until == 0.0 else None)

    def _close_repair_level(self) -> None:
        level, self._repair_level = self._repair_level, None
        if level is not None:
            try:
                level.close()
            except Exception:  # noqa: BLE001 - closing an instance no one uses
                logger.debug("smartcache level %s: closing failed", self.name)

    def _attempt(self) -> Attempt:
        """What a repair starting now is to do (called with ``lock`` held)."""
        return (
            dict(self.suspects),
            self.clear_pending,
            self._clear_mark,
            self._clear_reason,
            self._clear_everything,
        )

    def _done(self, attempt: Attempt) -> None:
        """Forget what ``attempt`` was to do (called with ``lock`` held); what was
        recorded since (a key written again, a clear missed again) stays pending."""
        suspects, clear, clear_mark, _, _ = attempt
        for key, mark in suspects.items():
            if self.suspects.get(key) == mark:
                del self.suspects[key]
        if clear and self._clear_mark == clear_mark:
            self.clear_pending = False
            self._clear_everything = False

    def abandon(
        self,
        exc: BaseException,
        attempt: Attempt | None = None,
    ) -> None:
        """The repair failed with an error that is no outage (the level answered: a
        NOPERM its fallbacks could not get round, a bug): retrying would fail the same
        way, so what it was to do (``attempt``; None: all that is pending) is dropped,
        logged at ERROR with what the level may still hold, and the level counts as
        back. What was recorded after the attempt began stays pending."""
        with self.lock:
            if attempt is None:
                attempt = self._attempt()
            self._done(attempt)
            self._count_error(exc)
        suspects, clear, _, reason, _ = attempt
        if clear:
            left = (
                f"the clear it was to make ({reason}) is not done: the level keeps "
                f"the values written before the outage"
            )
        else:
            left = (
                f"{len(suspects)} keys written during the outage keep there the "
                f"values they replaced"
            )
        logger.error(
            "smartcache level %s: its repair after an outage was refused (%s: %s) and "
            "is abandoned; %s, until they expire. Give the level's user the "
            "permission the repair needs (FLUSHDB, or SCAN and UNLINK of the cache's "
            "keys, for a clear; DEL/UNLINK of its keys)",
            self.name,
            type(exc).__name__,
            exc,
            left,
            exc_info=not isinstance(exc, FAULTS),
        )
        self.recovered()

    def repair_at_exit(self) -> Callable[[float], None] | None:
        """The process exits with a repair of this level pending: start it, once, in
        a thread; the function returned waits for it until a deadline (monotonic)
        and says how it went. None: nothing to repair.

        Its suspects live in this process only. Unrepaired, a worker exiting before
        the level comes back (gunicorn's ``--max-requests``, a reload, a worker
        timeout: exits like any other) takes them along, and the level keeps the
        values its outage writes replaced until their timeout, served to every process
        (351 reads of the old value, 0 of the new, after a recycled worker's write
        during a Redis OOM outage; Redis accepts ``DEL`` then, so the repair works).
        If it still fails, or outlasts the deadline (a hung server, a client with no
        socket timeout: the exit must not wait on it), it says which keys may
        stay stale: an ERROR, or a WARNING where the level never took a write from
        this process (a test run with no Redis: nothing there to be stale about).
        """
        if self._stopped or self._rebuild is None or not self.repairing():
            return None
        self.stop()  # no background repair from now on: this one is the last
        outcome: list[BaseException | None] = []

        def attempt() -> None:
            try:
                level = self._repair_level or self._rebuild()  # type: ignore[misc]
                if _file_gone(level):
                    # Its file was removed (a temporary directory cleaned up): no
                    # stale value is left to serve, and opening it would make it again.
                    with self.lock:
                        self.suspects.clear()
                        self.clear_pending = False
                    outcome.append(None)
                    return
                self.repair(level)
                outcome.append(None)
            except Exception as exc:  # noqa: BLE001 - reported below
                outcome.append(exc)

        thread = threading.Thread(
            target=attempt, name=f"smartcache-exit-repair {self.name}", daemon=True
        )
        thread.start()
        return partial(self._exit_repair_done, thread, outcome)

    def _exit_repair_done(
        self,
        thread: threading.Thread,
        outcome: list[BaseException | None],
        deadline: float,
    ) -> None:
        thread.join(max(deadline - _monotonic(), 0.0))
        if outcome and outcome[0] is None:
            if not self.repairing():
                logger.info(
                    "smartcache level %s: repaired as this process exits", self.name
                )
            return
        error = (
            f"{type(outcome[0]).__name__}: {outcome[0]}"
            if outcome
            else f"not done within {EXIT_REPAIR_WAIT:g} s"
        )
        with self.lock:
            keys = list(self.suspects)
            clear = self.clear_pending
        shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
        logger.log(
            logging.ERROR if self.took_writes else logging.WARNING,
            "smartcache level %s: this process exits with %s the level missed "
            "while it was down, and its repair failed (%s). The level may keep the "
            "values those writes replaced until their timeout, read by every "
            "process. RAISE_ERRORS makes such writes fail instead "
            "(docs/multilevel.md, Faults).",
            self.name,
            "a clear()" if clear else f"{len(keys)} key(s) ({shown})",
            error,
        )

    def stop(self) -> None:
        """Cancel the background repair for good (tests; a process shutting down)."""
        with self.lock:
            self._stopped = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def repair(self, level: BaseCache, *, inline: bool = False) -> None:
        """Before a level that was down serves again: undo what the outage may have
        hidden. An outage raises (retried); a refusal its fallbacks cannot get round
        abandons the repair (``abandon``), and the level serves again. ``inline``: a
        caller's own repair, which leaves a slow fallback to the background repair
        (``RepairDeferred`` raised: the caller skips the level meanwhile)."""
        # One repair at a time (``_repair_mutex``): an inline caller finding one
        # running skips the level (it is being repaired), anyone else waits for it,
        # and does not try again if the one it waited for met an outage: it raises
        # that. Trying in turn, against a hung server, each waiter would wait out the
        # client's timeout after the others (RAISE_ERRORS: the sixth of six calls
        # returning after 3.0 s, with a 0.5 s socket timeout).
        if inline:
            if not self._repair_mutex.acquire(blocking=False):
                raise RepairDeferred
        else:
            ticket = self._repair_faults
            self._repair_mutex.acquire()
            # Only the last repair's outage (a success since clears it), and a copy
            # of its own: one object raised in several threads would grow one
            # traceback with all their frames, and keep the failed repair's frames
            # alive.
            fault = self._repair_fault
            if self._repair_faults != ticket and fault is not None:
                self._repair_mutex.release()
                raise _bare_copy(fault)
        try:
            self._repair(level, inline)
        except BaseException as exc:
            if isinstance(exc, FAULTS) and not _caller_error(exc):
                self._repair_fault = _bare_copy(exc)
                self._repair_faults += 1
            raise
        else:
            self._repair_fault = None
        finally:
            self._repair_mutex.release()

    def _repair(self, level: BaseCache, inline: bool) -> None:
        """Delete the suspects (or clear), and mark the level back. What writes
        recorded meanwhile (they skipped it while it was being repaired) is repaired
        at once after (``recovered``), not in rounds repeated until none is recorded,
        which would keep the level skipped for good under steady writes."""
        with self.lock:
            attempt = self._attempt()
            failures = self.failures
            suspects, clear = attempt[0], attempt[1]
            if not (clear or suspects):
                self._deferred = False
                return  # the next call is the probe; ``recovered()`` follows it
            if inline and self._deferred:
                raise RepairDeferred  # the background repair's, running or about to
        try:
            if clear:
                refused = self._clear(level, inline, everything=attempt[4])
            else:
                refused = self._delete(level, list(suspects), inline)
        except RepairDeferred:
            with self.lock:
                self._deferred = True
                self._repair_by(0.0)  # now: see ``_deferred``
            raise
        except Exception as exc:  # an outage is raised, the rest abandoned
            if isinstance(exc, FAULTS) and not _caller_error(exc):
                raise
            self.abandon(exc, attempt)
            return
        with self.lock:
            self._done(attempt)
        if refused:
            self._log_refused(refused)
        if self.announce is not None:
            self.announce(None if clear else list(suspects))
        self.recovered(len(suspects), failures)

    def _clear(
        self, level: BaseCache, inline: bool = False, *, everything: bool = True
    ) -> list[str]:
        """Clear the level; or, for a missed ``delete_pattern()`` or too many suspects
        (``everything=False``), delete only this cache's keys (``namespaces``) where
        the level can find them (``_clear_namespace``; a memcached level cannot: it is
        cleared whole), not a FLUSHDB, which would take every other alias's keys in
        the database with them. A user who may not FLUSHDB (NOPERM: no
        ``@dangerous``) gets this cache's keys deleted instead as well, rather than
        the repair abandoned with the outage's values left in the level. The keys
        still refused (NOPERM) are returned."""
        if not everything and self.namespaces:
            if inline:
                raise RepairDeferred  # a scan of the level: the background repair's
            try:
                deleted, refused, spaces = self._clear_namespaces(level)
            except LookupError:
                pass  # nothing finds this cache's keys there: all of it, as before
            else:
                logger.info(
                    "smartcache level %s: the repair after an outage deleted this "
                    "cache's keys (%s): %d deleted (%s)",
                    self.name,
                    ", ".join(repr(n + "*") for n in spaces),
                    deleted,
                    self._clear_reason,
                )
                return refused
        try:
            level.clear()
            return []
        except FAULTS as exc:
            if not _no_permission(exc) or not self.namespaces:
                raise
            if inline:
                raise RepairDeferred from exc
            flush_refused = exc
        try:
            deleted, refused, spaces = self._clear_namespaces(level)
        except LookupError:
            raise flush_refused from None
        logger.warning(
            "smartcache level %s: its user may not FLUSHDB (%s); the repair after an "
            "outage deleted this cache's keys (%s) with SCAN and UNLINK instead: %d "
            "deleted",
            self.name,
            flush_refused,
            ", ".join(repr(n + "*") for n in spaces),
            deleted,
        )
        return refused

    def _clear_namespaces(self, level: BaseCache) -> tuple[int, list[str], list[str]]:
        """Delete this cache's keys from ``level``: (deleted, refused, namespaces)."""
        spaces = sorted(self.namespaces)
        # "a:" covers "a:b:" (and "" every key): each key is scanned once.
        spaces = [
            n for n in spaces if not any(n.startswith(o) for o in spaces if o != n)
        ]
        deleted, refused = 0, []
        for namespace in spaces:
            gone, denied = _clear_namespace(level, namespace)
            deleted += gone
            refused += denied
        return deleted, refused, spaces

    def _delete(
        self, level: BaseCache, keys: list[str], inline: bool = False
    ) -> list[str]:
        """Delete the suspects; when the level refuses the one multi-key DEL (NOPERM:
        one key outside the user's ``~pattern``), one by one, returning the keys still
        refused. All were given up at the refusal: valid suspects kept the values the
        outage writes replaced, with no time bound."""
        try:
            level.delete_many(keys)
            return []
        except FAULTS as exc:
            if not _no_permission(exc):
                raise
            if inline and len(keys) > _INLINE_DELETES:
                raise RepairDeferred from exc
        return _delete_each(level, keys)

    def _log_refused(self, refused: list[str]) -> None:
        """The keys a repair could not delete (NOPERM), named at ERROR."""
        with self.lock:
            self.errors += 1
            self.last_error = f"NoPermissionError: {len(refused)} keys refused"
        named = ", ".join(repr(key) for key in refused[:_NAMED_MAX])
        more = len(refused) - _NAMED_MAX
        logger.error(
            "smartcache level %s: its repair after an outage could not delete %d keys "
            "its user may not touch (NOPERM): %s%s; the level keeps there the values "
            "the outage writes replaced, until they expire. The other keys were "
            "repaired. Give the level's user those keys (~pattern) or keep the cache's "
            "keys within it",
            self.name,
            len(refused),
            named,
            f" and {more} more" if more > 0 else "",
        )

    def recovered(self, repaired: int = 0, failures: int | None = None) -> None:
        """The level answered: it is back, unless a call failed since ``failures``
        (the count when the repair began: a write refused while it ran). What is still
        pending (keys of writes that skipped the level while it was repaired) is
        repaired at once, and reads of those keys skip the level until then
        (``pending``), rather than wait for the timer, up to ``retry``, while reads
        are served the values those writes replaced."""
        self._repair_fault = None  # (see ``repair``: the level answered since)
        with self.lock:
            if failures is not None and failures != self.failures:
                return  # down again: the timer retries at ``down_until``
            if self.suspects or self.clear_pending:
                self._repair_by(_monotonic())
            if self.down_until == 0.0:
                return
            self.down_until = 0.0
            self.recoveries += 1
            logged, self._down_logged = self._down_logged, False
        # Once per failure logged (at most once per ERROR_LOG_INTERVAL, as those are):
        # the returns of a flapping level in between are counted, not logged.
        (logger.info if logged else logger.debug)(
            "smartcache level %s is back (%d keys repaired)", self.name, repaired
        )


#: Every level's health in the process, for :func:`_repair_at_exit`.
_EVERY_HEALTH: weakref.WeakSet[LevelHealth] = weakref.WeakSet()


#: How long interpreter exit waits for the repairs of levels that missed writes
#: (all of them together): a hung server must not keep the process from exiting.
EXIT_REPAIR_WAIT = 2.0


def _file_gone(level: BaseCache) -> bool:
    """Whether ``level`` is a SQLite file that no longer exists."""
    from .sqlite import SQLiteCache

    return isinstance(level, SQLiteCache) and not os.path.exists(level._path)


def _repair_at_exit() -> None:
    """At interpreter exit: each level with a repair pending tries it once, all
    within :data:`EXIT_REPAIR_WAIT`."""
    deadline = _monotonic() + EXIT_REPAIR_WAIT
    started = []
    for health in list(_EVERY_HEALTH):  # (all at once: one hung level delays none)
        try:
            done = health.repair_at_exit()
        except Exception:  # (one level's trouble must not stop the others)
            logger.exception("smartcache level %s: repair at exit", health.name)
            continue
        if done is not None:
            started.append((health, done))
    for health, done in started:
        try:
            done(deadline)
        except Exception:
            logger.exception("smartcache level %s: repair at exit", health.name)


atexit.register(_repair_at_exit)
