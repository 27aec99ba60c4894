"""SQLiteCache: a persistent cache in one SQLite file shared by every thread and process.

Design notes (details and measurements in ``docs/sqlite.md``):

- One connection per thread, reopened after ``fork``; WAL journal, so readers never
  block the writer and a killed process loses nothing it committed.
- Single-key reads are one indexed ``SELECT`` and write nothing; the ``accessed``
  column that drives LRU eviction is refreshed write-behind, at most once per key per
  ``ACCESS_INTERVAL``, batched into the next write transaction.
- Writes that can grow the file run in one ``BEGIN IMMEDIATE`` transaction that also
  enforces the budget: the running byte total lives in a meta row kept by triggers.
- Every change to a key is appended to a change log by the same triggers, for the
  multi-level cache's coherence (:meth:`SQLiteCache.changes_since`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from .._incr_envelopes import failed_envelope, incremented, note_incremented
from ..core.patterns import KeyPattern, glob_to_regex, prefix_end
from ..core.store import REPEATS_AT_DEBUG, RefusalLog
from ..core.tags import Tagged
from ..tagging import TaggingMixin
from . import _sqlite_schema as sql
from ._sqlite_budget import BudgetMixin
from ._sqlite_changes import ChangeCursor, ChangeLogMixin
from ._sqlite_connection import (
    MAX_ACCESS_AHEAD,
    ConnectionMixin,
    ThreadState,
    gated,
    newest_access,
)
from ._sqlite_file import is_busy
from ._sqlite_options import ROW_OVERHEAD, parse
from .base import SingleFlightMixin, SmartCacheKeyMixin, ThreadedIncrMixin, dumps

__all__ = ["BaseSQLiteCache", "ChangeCursor", "SQLiteCache"]

logger = logging.getLogger("django_smartcache.sqlite")

#: (file, key) of the refusals logged at WARNING by this process: a page over
#: MAX_SIZE that cache_page retries on every request would log a WARNING per request;
#: a repeat within a minute goes to DEBUG, as in SmartCache's stores.
_REFUSALS = RefusalLog()
_REFUSALS_LOCK = threading.Lock()


def _refusal_seen(path: str, key: str) -> bool:
    """Whether the refusal of ``key`` in ``path`` is a repeat (:class:`RefusalLog`)."""
    with _REFUSALS_LOCK:
        return _REFUSALS.quiet((path, key), time.monotonic())


#: SQLite's default limit on a string or blob (``SQLITE_MAX_LENGTH``), below the default
#: MAX_SIZE of 1 GiB: a larger value is refused as too large, as one over MAX_SIZE is
#: (SQLite raised ``DataError`` for it, which a MultiLevelCache took for an outage).
SQLITE_MAX_LENGTH = 1_000_000_000
#: Stored ints are SQLite integers (8 bytes); the rest is pickled.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
#: Parameters per ``IN (...)`` (SQLite's historical limit is 999).
_CHUNK = 500
#: Pending ``accessed`` refreshes that trigger a flush from the read path.
_ACCESS_FLUSH = 256
#: Seconds ``close()`` (the end of a request) waits for another process's write lock
#: to write pending access times, instead of ``BUSY_TIMEOUT``; then it defers them.
_CLOSE_WAIT = 0.05
#: A write whose call waited longer than this for the file's write lock is stamped
#: with the time it got it (``_granted_at``), not the time it began.
_LOCK_WAIT_NOTED = 0.01
#: Seconds of the cache's clock between two looks at its turnover (``_stale_before``).
_TURNOVER_EVERY = 1.0
_monotonic = time.monotonic
#: Per process, per file: [the newest ``accessed`` stamp of any thread or instance, the
#: monotonic time its next raise from the file's own newest is due] (``_stamp``).
_HIGH: dict[str, list[float]] = {}
#: Seconds between two reads of a file's newest ``accessed`` by a process (``_mark``).
_HIGH_EVERY = 1.0
_missing = object()
_T = TypeVar("_T")


@functools.lru_cache(maxsize=16)
def _set_rows_statement(count: int) -> str:
    return sql.set_rows(count)


#: A list of keys as a JSON array (raw UTF-8: SQLite's JSON parser takes it as is).
_json_keys: Callable[[list[str]], str] = json.JSONEncoder(ensure_ascii=False).encode


def _chunks(items: list[_T]) -> Iterator[list[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class BaseSQLiteCache(
    ConnectionMixin,
    BudgetMixin,
    ChangeLogMixin,
    SmartCacheKeyMixin,
    ThreadedIncrMixin,
    BaseCache,
):
    """The SQLite store: Django's cache API on the file named by ``LOCATION``.

    Values come back exactly as stored (a tag envelope is not unwrapped): this is the
    raw level :class:`SQLiteCache` adds tags and single-flight ``get_or_set`` to.

    Every method that reaches SQLite is ``@gated``: it runs with fork() kept out (a
    child must not inherit a SQLite mutex held by a parent thread, nor a connection in
    use; ``_sqlite_connection``), and so are the mixins' ``clear_expired``,
    ``change_cursor`` and ``changes_since``. ``tests/backends/test_sqlite_fork.py``
    checks that no statement runs outside the gate.
    """

    pickle_protocol = pickle.HIGHEST_PROTOCOL
    _utf8_keys = True  # keys are SQLite TEXT

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        options = parse(location, params)
        super().__init__({**params, "OPTIONS": {}})
        self.default_timeout = options.timeout  # type: ignore[assignment]
        self._path = os.path.abspath(options.location)
        self._options = options
        self._max_size = options.max_size
        #: The largest entry stored: MAX_SIZE, or SQLite's own limit on a value.
        self._item_limit = min(options.max_size, SQLITE_MAX_LENGTH)
        self._max_entries = options.max_entries  # type: ignore[assignment]
        self._cull_frequency = options.cull_frequency
        self._access_interval = options.access_interval
        #: (next look, oldest ``accessed`` if full, newest stamp): ``_stale_before``.
        self._turnover: tuple[float, float | None, float] = (0.0, None, 0.0)
        self._state = ThreadState()
        self._maintenance_lock = threading.Lock()
        self._writes = 0
        #: (time, newest log seq then), oldest first: what may be pruned, and when.
        self._checkpoints: deque[tuple[float, int]] = deque()
        self._clock: Callable[[], float] = time.time

    @gated
    def close(self, **kwargs: Any) -> None:
        """Write pending ``accessed`` refreshes if the file's write lock is free within
        :data:`_CLOSE_WAIT`; the connection stays open for reuse. Never raises.

        Django calls it at the end of every request (``request_finished``): a failure
        here raised out of the signal, from a read-only request, and stopped the
        aliases after this one from closing. A busy file defers the refreshes to the
        thread's next write (they are only LRU hints); any other error drops them.
        """
        state = self._state
        conn = state.conn
        if not state.pending or conn is None:
            return
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(_CLOSE_WAIT * 1000)}")
            try:
                self._write(self._flush_access_txn)
            finally:
                if state.conn is not None:  # (None: replaced after damage)
                    state.conn.execute(
                        f"PRAGMA busy_timeout = {int(self._options.busy_timeout * 1000)}"
                    )
        except sqlite3.DatabaseError as exc:
            if is_busy(exc):
                logger.debug(
                    "SQLiteCache: access times of %s deferred, the file is busy (%s).",
                    self._path,
                    exc,
                )
                return
            state.pending.clear()
            logger.warning(
                "SQLiteCache: access times not written to %s (%s); dropped.",
                self._path,
                exc,
            )

    # -- values ----------------------------------------------------------------------

    def _encode(self, key: str, value: Any) -> Any:
        # Ints are stored natively so incr is one atomic UPDATE; bool is not an int here.
        # An unpicklable value raises UnpicklableValueError before anything is written.
        if type(value) is int and _INT_MIN <= value <= _INT_MAX:
            return value
        return dumps(key, value)

    def _decode(self, stored: Any, key: str) -> Any:
        if type(stored) is int:
            return stored
        try:
            return pickle.loads(stored)
        except Exception as exc:  # noqa: BLE001
            # Unreadable (a class that no longer exists, a damaged value): a miss, logged,
            # and dropped if it is still there: left, it makes add() refuse (the key
            # is taken), so get_or_set would recompute on every call and never store.
            logger.error(
                "SQLiteCache: cannot unpickle %r in %s (%r); dropping it.",
                key,
                self._path,
                exc,
            )
            try:
                self._connection().execute(sql.DELETE_IF_VALUE, (key, stored))
            except sqlite3.DatabaseError:
                pass  # busy, read-only: a miss all the same
            return _missing

    def _size(self, key: str, stored: Any) -> int:
        return len(key) + (8 if type(stored) is int else len(stored)) + ROW_OVERHEAD

    def _expiry(self, timeout: Any, now: float) -> float | None:
        ttl = self._ttl(timeout)  # a NaN raises: SQLite would store NULL, never expire
        return None if ttl is None else now + ttl

    # -- reads -----------------------------------------------------------------------

    @gated
    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key = self._key(key, version)
        now = self._clock()
        try:
            row = (
                self._connection()
                .execute(sql.GET_LIVE, (self._stale_before(now), key, now))
                .fetchone()
            )
        except sqlite3.DatabaseError as exc:
            self._on_error(exc)
            return default
        if row is None:
            return default
        stored, stale = row
        if stale:
            self._note_access(key, now)
        if type(stored) is int:
            return stored
        value = self._decode(stored, key)
        return default if value is _missing else value

    @gated
    def get_many(
        self, keys: Iterable[Any], version: int | None = None
    ) -> dict[Any, Any]:
        originals = self._keys(keys, version)
        if not originals:
            return {}
        now = self._clock()
        try:
            conn = self._connection()
            if self._state.json:
                encoded = _json_keys(list(originals))
                # json_each ends a text value at a NUL character: such a key would
                # match the key before its NUL. Bound parameters keep the NUL.
                if "\\u0000" not in encoded:
                    return self._get_many_json(conn, originals, encoded, now)
            return self._get_many_in(conn, originals, now)
        except sqlite3.DatabaseError as exc:
            self._on_error(exc)
            return {}

    def _get_many_json(
        self,
        conn: sqlite3.Connection,
        originals: dict[str, Any],
        encoded: str,
        now: float,
    ) -> dict[Any, Any]:
        """One statement, one row of one column per key, in order (``GET_MANY_JSON``);
        ``encoded`` is the JSON array of ``originals``' keys."""
        rows = conn.execute(
            sql.GET_MANY_JSON, (self._stale_before(now), encoded, now)
        ).fetchall()
        found: dict[Any, Any] = {}
        loads = pickle.loads
        for (key, original), (stored,) in zip(originals.items(), rows, strict=True):
            kind = type(stored)
            if kind is bytes:
                if not stored or stored[0]:  # a pickle: never starts with a zero byte
                    try:
                        found[original] = loads(stored)
                    except Exception:  # noqa: BLE001 - the logged miss of _decode
                        self._decode(stored, key)
                    continue
                # Marked: its ``accessed`` is due a refresh.
                self._note_access(key, now)
                value = self._decode(stored[1:], key)
                if value is not _missing:
                    found[original] = value
            elif stored is None:
                continue
            elif kind is str:  # an int due a refresh, as its decimal text
                self._note_access(key, now)
                found[original] = int(stored)
            else:
                found[original] = stored
        return found

    def _get_many_in(
        self, conn: sqlite3.Connection, originals: dict[str, Any], now: float
    ) -> dict[Any, Any]:
        """Without JSON functions: ``SELECT ... IN (...)`` per 500 keys."""
        found: dict[Any, Any] = {}
        stale_before = self._stale_before(now)
        loads = pickle.loads
        for chunk in _chunks(list(originals)):
            rows = conn.execute(
                sql.GET_MANY_LIVE.format(sql.in_clause(len(chunk))),
                (stale_before, *chunk, now),
            ).fetchall()
            for key, stored, stale in rows:
                if type(stored) is not int:
                    try:
                        stored = loads(stored)
                    except Exception:  # noqa: BLE001 - the logged miss of _decode
                        if self._decode(stored, key) is _missing:
                            continue
                if stale:
                    self._note_access(key, now)
                found[originals[key]] = stored
        return found

    @gated
    def has_key(self, key: Any, version: int | None = None) -> bool:
        key = self._key(key, version)
        try:
            cursor = self._connection().execute(sql.HAS_KEY, (key, self._clock()))
            return cursor.fetchone() is not None
        except sqlite3.DatabaseError as exc:
            self._on_error(exc)
            return False

    @gated
    def ttl(self, key: Any, version: int | None = None) -> float | None:
        """Seconds ``key`` has left; ``None`` if it never expires; ``0.0`` if it is absent.

        As django-redis answers: "absent" and "expired" are the same (a 0 TTL), so a
        caller copying the entry elsewhere (``MultiLevelCache`` promoting a hit into L1)
        skips it either way. Reading a TTL is not an access (LRU order is unchanged).
        """
        return self.ttl_many([key], version).get(key, 0.0)

    @gated
    def ttl_many(
        self, keys: Iterable[Any], version: int | None = None
    ) -> dict[Any, float | None]:
        """:meth:`ttl` of many keys in one query per 500: live keys only, absent and
        expired ones left out of the result (``None``: never expires). ``{}`` when the
        file is damaged or lacks its tables (other errors raise)."""
        originals = self._keys(keys, version)
        found: dict[Any, float | None] = {}
        if not originals:
            return found
        now = self._clock()
        try:
            conn = self._connection()
            for chunk in _chunks(list(originals)):
                rows = conn.execute(
                    sql.TTL_MANY.format(sql.in_clause(len(chunk))), (*chunk, now)
                ).fetchall()
                for key, expires in rows:
                    found[originals[key]] = None if expires is None else expires - now
        except sqlite3.DatabaseError as exc:
            self._on_error(exc)
            return {}
        return found

    def _stale_before(self, now: float) -> float:
        """Entries last accessed before this are due an ``accessed`` refresh.

        ``now - ACCESS_INTERVAL``; but when the cache holds half its budget or
        more and turns over faster than that, no entry would ever be refreshed
        before it is evicted, and LRU would be FIFO. Then the middle of the
        cache's access-time span (its oldest ``accessed`` and now) is the bound:
        an entry read in the older half, the half eviction takes next, is moved
        up, at most once per half a turnover. Looked up (one indexed ``min``) at
        most once per :data:`_TURNOVER_EVERY` of clock time per instance.

        "Now" is on the stamps' scale (:meth:`_stamp`): the newest stamp when the
        wall clock is behind it, else no read would be due a refresh while it is
        (a hot key evicted as if never read, for as long as the step).
        """
        due, oldest, high = self._turnover
        if now >= due or due > now + _TURNOVER_EVERY:  # (or a wall clock stepped back)
            # (ACCESS_INTERVAL 0: every read refreshes, no oldest to look up.)
            oldest = self._oldest_if_full() if self._access_interval > 0 else None
            high = self._mark(None, now)[0]
            self._turnover = (now + _TURNOVER_EVERY, oldest, high)
        if high > now:  # noqa: PLR1730 - (the read path: no call)
            now = high
        bound = now - self._access_interval
        if oldest is not None and (oldest + now) / 2 > bound:
            return (oldest + now) / 2
        return bound

    def _oldest_if_full(self) -> float | None:
        try:
            oldest, size, count = (
                self._connection().execute(sql.OLDEST_ACCESS_AND_TOTALS).fetchone()
            )
        except sqlite3.DatabaseError:
            return None  # the read itself reports it
        full = size >= 0.5 * self._max_size or (
            self._max_entries is not None and count >= 0.5 * self._max_entries
        )
        return oldest if full else None

    def _mark(self, conn: sqlite3.Connection | None, now: float) -> list[float]:
        """This process's ``[newest stamp, next look due]`` for the file (:data:`_HIGH`),
        raised to the file's own newest ``accessed`` at most once per :data:`_HIGH_EVERY`
        (one descent of its index; ``conn``, or this thread's connection)."""
        mark = _HIGH.get(self._path)
        tick = _monotonic()
        if mark is None or tick >= mark[1]:
            newest = newest_access(
                conn if conn is not None else self._connection(), now
            )
            mark = _HIGH.setdefault(self._path, [0.0, 0.0])
            if mark[0] > now + MAX_ACCESS_AHEAD:
                # Its own stamps ran more than a day ahead (a clock stepped forward,
                # then corrected): followed by no other process, they would rank all
                # of theirs oldest for the rest of this one's life.
                mark[0] = newest
            else:
                mark[0] = max(mark[0], newest)
            mark[1] = tick + _HIGH_EVERY
        return mark

    def _stamp(self, now: float, conn: sqlite3.Connection | None = None) -> float:
        """The ``accessed`` stamp of a use at wall-clock time ``now``: ``now``, or just
        above the newest stamp when the clock is behind it.

        Stamped with the wall clock alone, a clock stepped back (an NTP step, a VM
        restored) would make every write after it look older than everything written
        before: a full cache would evict the newest entries first (a step of -60 s
        kept 12 of 400 new keys), an ``add()`` lock among them, which a second
        ``add()`` would then win. So the stamps never go back: the newest is shared by
        the process's threads and instances (else a thread idle since before the step
        stamps low), and raised to the file's newest, every other process's, at least
        once a second. A microsecond apart while the clock catches up, so the order of
        uses stays. Expiry still counts on the wall clock.
        """
        mark = self._mark(conn, now)
        high = mark[0]
        stamp = now if now >= high else high + 1e-6
        # (Two threads at once may each write theirs: the mark then holds the older of
        # two stamps microseconds apart, which the next stamp passes. No lock for it.)
        mark[0] = stamp
        return stamp

    def _note_access(self, key: str, now: float) -> None:
        pending = self._state.pending
        pending[key] = self._stamp(now)
        if len(pending) >= _ACCESS_FLUSH:
            try:
                self._write(self._flush_access_txn)
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    # Busy past BUSY_TIMEOUT: kept, retried at the next write.
                    logger.warning(
                        "SQLiteCache: access times not written yet (%s).", exc
                    )
                    return
                # Read-only, full: dropped (LRU hints), or every read after the 256th
                # retried the write and logged a WARNING.
                pending.clear()
                logger.warning(
                    "SQLiteCache: access times not written to %s (%s); dropped.",
                    self._path,
                    exc,
                )

    def _flush_access_txn(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._flush_access(conn)
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def _flush_access(self, conn: sqlite3.Connection) -> None:
        pending = self._state.pending
        if pending:
            conn.executemany(
                sql.REFRESH_ACCESS, [(t, k, t) for k, t in pending.items()]
            )
            pending.clear()

    # -- writes ----------------------------------------------------------------------

    @gated
    def set(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> None:
        key = self._key(key, version)
        stored = self._encode(key, value)  # unpicklable: raises, nothing written
        now = self._clock()
        expires = self._expiry(timeout, now)
        size = self._size(key, stored)
        if (expires is not None and expires <= now) or size > self._item_limit:
            if size > self._item_limit:
                self._too_large(key, size)
            self._write(self._delete_txn, [key], now)
            return
        self._store_rows([(key, stored, expires, now, size)], [], now)

    @gated
    def set_many(
        self,
        data: dict[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[Any]:
        now = self._clock()
        expires = self._expiry(timeout, now)
        expired = expires is not None and expires <= now
        # ``_keys`` maps each made key once: two keys making one made key (a custom
        # KEY_FUNCTION) keep the last, as sequential sets would.
        rows: list[tuple[str, Any, float | None, float, int]] = []
        dropped: list[str] = []
        failed: list[Any] = []
        max_size = self._item_limit
        pickle_dumps, protocol = pickle.dumps, self.pickle_protocol
        made = self._keys(data, version)
        for key, original in made.items():
            value = data[original]
            # _encode inlined (a function call per key is a tenth of a 100-key batch).
            if type(value) is int and _INT_MIN <= value <= _INT_MAX:
                stored: Any = value
                size = len(key) + 8 + ROW_OVERHEAD
            else:
                try:
                    stored = pickle_dumps(value, protocol)
                except Exception:  # noqa: BLE001 - dumps() raises the named error
                    stored = dumps(key, value)
                size = len(key) + len(stored) + ROW_OVERHEAD
            if size > max_size:
                self._too_large(key, size)
                failed.append(original)
                dropped.append(key)
            elif expired:
                dropped.append(key)
            else:
                rows.append((key, stored, expires, now, size))
        if rows or dropped:
            failed += [made[key] for key in self._store_rows(rows, dropped, now)]
        return failed

    def _store_rows(
        self,
        rows: list[tuple[str, Any, float | None, float, int]],
        dropped: list[str],
        now: float,
    ) -> list[str]:
        """Write ``rows`` and delete ``dropped`` in one transaction; the keys refused.

        SQLite refuses a value over its own limit with ``DataError``, which rolls the
        whole batch back. The limit is checked before (``SQLITE_MAX_LENGTH``), but a
        build or connection with a lower one raises: then each row is written alone,
        and one it refuses is too large, as one over ``MAX_SIZE`` is (its older value
        deleted, never a level error in a MultiLevelCache).
        """
        try:
            self._write(self._set_txn, rows, dropped, now)
            return []
        except sqlite3.DataError:
            pass
        refused = []
        for row in rows:
            try:
                self._write(self._set_txn, [row], [], now)
            except sqlite3.DataError:
                self._too_large(row[0], row[4], sqlite_refused=True)
                refused.append(row[0])
        self._write(self._set_txn, [], dropped + refused, now)
        return refused

    def _too_large(
        self, key: str, size: int, *, kept: bool = False, sqlite_refused: bool = False
    ) -> None:
        """Log a refused value; ``kept``: the older value stays (``add``), else it went;
        ``sqlite_refused``: SQLite itself refused it (a limit lower than we knew)."""
        if sqlite_refused:
            limit = "the limit of this SQLite (string or blob too big)"
        elif self._item_limit == self._max_size:
            limit = f"MAX_SIZE ({self._max_size})"
        else:
            limit = f"SQLite's limit on a value ({self._item_limit})"
        quiet = _refusal_seen(self._path, key)
        logger.log(
            logging.DEBUG if quiet else logging.WARNING,
            "SQLiteCache: not storing %r: %d bytes exceed %s; %s%s.",
            key,
            size,
            limit,
            "any older value is kept" if kept else "any older value was deleted",
            "" if quiet else REPEATS_AT_DEBUG,
        )

    def _granted_at(self, now: float) -> float:
        """The time a write got the file's write lock (``BEGIN IMMEDIATE`` returned), if
        it waited for it: ``now`` otherwise.

        Stamped ``accessed`` with the time its call began, a write that waited a
        second for another process's long write would be older than everything
        committed meanwhile: the least recently used row, evicted by the next write
        that needs room, an ``add()`` lock included, which a second ``add()`` would then
        win while its first holder holds it (1 of 1,348 grants with 8 processes). Its
        expiry still counts from the call, as Django's backends do.
        """
        granted = self._clock()
        return granted if granted - now > _LOCK_WAIT_NOTED else now

    def _set_txn(
        self,
        conn: sqlite3.Connection,
        rows: list[tuple[str, Any, float | None, float, int]],
        dropped: list[str],
        now: float,
    ) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            granted = self._granted_at(now)
            stamp = self._stamp(granted, conn)
            if stamp != now:  # waited for the lock (_granted_at), or a clock behind
                rows = [(k, v, e, stamp, s) for k, v, e, _, s in rows]
                now = granted
            if len(rows) == 1:
                conn.execute(sql.SET, rows[0])
            else:
                step = sql.SET_ROWS_PER_STATEMENT
                for start in range(0, len(rows), step):
                    part = rows[start : start + step]
                    conn.execute(
                        _set_rows_statement(len(part)),
                        [field for row in part for field in row],
                    )
            if dropped:
                conn.executemany(sql.DELETE, [(k,) for k in dropped])
            if rows:
                self._housekeep(conn, now, {row[0] for row in rows}, len(rows))
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    @gated
    def add(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> bool:
        key = self._key(key, version)
        stored = self._encode(key, value)
        now = self._clock()
        expires = self._expiry(timeout, now)
        size = self._size(key, stored)
        if size > self._item_limit:
            self._too_large(key, size, kept=True)
            return False
        try:
            return self._write(self._add_txn, (key, stored, expires, now, size), now)
        except sqlite3.DataError:  # over this connection's own limit: see _store_rows
            self._too_large(key, size, kept=True, sqlite_refused=True)
            return False

    def _add_txn(
        self,
        conn: sqlite3.Connection,
        row: tuple[str, Any, float | None, float, int],
        now: float,
    ) -> bool:
        key, stored_value, expires, _, size = row
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = self._granted_at(now)  # waited for the lock: see _granted_at
            row = (key, stored_value, expires, self._stamp(now, conn), size)
            if expires is not None and expires <= now:
                # Stored already expired: "added" iff nothing live was there.
                stored = conn.execute(sql.HAS_KEY, (key, now)).fetchone() is None
                if stored:
                    conn.execute(sql.DELETE_EXPIRED_ONE, (key, now))
            else:
                stored = conn.execute(sql.ADD, (*row, now)).rowcount == 1
                if stored:
                    self._housekeep(conn, now, {key}, 1)
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return stored

    @gated
    def touch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key = self._key(key, version)
        now = self._clock()
        expires = self._expiry(timeout, now)
        if expires is not None and expires <= now:
            # Touching with a past expiry ends the entry now, as Django's backends do.
            return self._write(self._autocommit_count, sql.DELETE_LIVE, (key, now)) > 0
        return self._write(self._touch, key, expires, now) > 0

    def _touch(
        self, conn: sqlite3.Connection, key: str, expires: float | None, now: float
    ) -> int:
        stamp = self._stamp(now, conn)
        params = {"expires": expires, "key": key, "now": now, "stamp": stamp}
        return conn.execute(sql.TOUCH, params).rowcount

    def _autocommit_count(
        self,
        conn: sqlite3.Connection,
        statement: str,
        params: tuple[Any, ...] | dict[str, Any],
    ) -> int:
        return conn.execute(statement, params).rowcount

    @gated
    def delete(self, key: Any, version: int | None = None) -> bool:
        key = self._key(key, version)
        return self._write(self._delete_txn, [key], self._clock()) > 0

    @gated
    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        db_keys = list(self._keys(keys, version))
        if db_keys:
            self._write(self._delete_txn, db_keys, self._clock())

    def _delete_txn(self, conn: sqlite3.Connection, keys: list[str], now: float) -> int:
        """Delete ``keys``; return how many of them were live (not expired)."""
        if len(keys) == 1:
            rows = conn.execute(
                "DELETE FROM smartcache_entry WHERE key = ? RETURNING expires", keys
            ).fetchall()
            return sum(1 for (e,) in rows if e is None or e > now)
        live = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for chunk in _chunks(keys):
                cursor = conn.execute(
                    "DELETE FROM smartcache_entry WHERE key IN "
                    + sql.in_clause(len(chunk))
                    + " RETURNING expires",
                    chunk,
                )
                live += sum(1 for (e,) in cursor.fetchall() if e is None or e > now)
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return live

    @gated
    def delete_pattern(
        self, pattern: str, *, regex: bool = False, version: int | None = None
    ) -> int:
        """Delete the keys matching ``pattern``; return how many of them were live.

        ``pattern`` applies to the caller's keys (``KEY_PREFIX`` and ``version`` are
        honoured): a glob (``*``, ``?``, ``[a-z]``, ``[!a]``, ``\\x``) run as SQLite
        ``GLOB``, or with ``regex=True`` Python's ``re.search`` through a registered
        ``REGEXP`` function. Either way only the keys in the range of the pattern's
        literal prefix are read (a range on the primary key: ``"user:42:*"`` costs
        the matching keys, ``"*:42"`` every key of this prefix and version). One
        transaction: the deletions reach the change log with it.
        """
        return len(
            self._delete_key_pattern(
                self.key_pattern(pattern, regex=regex, version=version)
            )
        )

    @gated
    def _delete_key_pattern(self, match: KeyPattern) -> set[str]:
        """Delete the stored keys ``match`` matches; return the live ones among them.

        ``match.head`` is the literal start of the stored keys and the pattern applies
        to the rest: for ``delete_pattern()`` the head of this cache's ``KEY_PREFIX``
        and version, for a MultiLevelCache whose level this is the head of its final
        keys (so its caller's regex is matched as written, and it learns which keys
        went from every level to count each once).
        """
        tail = match.pattern if match.regex else r"\A" + glob_to_regex(match.pattern)
        if match.regex:
            op, operand = "REGEXP", match.pattern
        else:
            glob = sql.glob_operand(match.pattern)
            # A class SQLite's GLOB cannot spell ("[]^-]"...): the same test in Python.
            op, operand = ("GLOB", glob) if glob is not None else ("REGEXP", tail)
        end = prefix_end(match.literal_prefix)
        if end is not None:
            statements = (sql.DELETE_PATTERN.format(op=op), sql.DELETE_PATTERN_NUL)
        else:
            statements = (
                sql.DELETE_PATTERN_OPEN.format(op=op),
                sql.DELETE_PATTERN_NUL_OPEN,
            )
        params = {
            "low": match.literal_prefix,
            "high": end,
            "start": len(match.head) + 1,
            "pattern": operand,
            "tail": tail,
        }
        if op == "REGEXP":
            # Python's regex, which may take seconds on a key (``(a+)+$``): matched
            # outside the write lock, then the keys found deleted. Inside it, every
            # other process's write would wait and fail past BUSY_TIMEOUT (10.2 s
            # for five such keys, another process's set() lost).
            selects = (
                (sql.SELECT_PATTERN, sql.SELECT_PATTERN_NUL)
                if end is not None
                else (sql.SELECT_PATTERN_OPEN, sql.SELECT_PATTERN_NUL_OPEN)
            )
            conn = self._connection()
            keys = [
                key for s in selects for (key,) in conn.execute(s.format(op=op), params)
            ]
            if not keys:
                return set()
            work = [
                (sql.DELETE_KEYS_RETURNING.format(sql.in_clause(len(chunk))), chunk)
                for chunk in _chunks(keys)
            ]
        else:
            work = [(s, params) for s in statements]
        return self._write(self._delete_returning_txn, work, self._clock())

    async def adelete_pattern(
        self, pattern: str, *, regex: bool = False, version: int | None = None
    ) -> int:
        return await sync_to_async(self.delete_pattern, thread_sensitive=True)(
            pattern, regex=regex, version=version
        )

    def _delete_returning_txn(
        self,
        conn: sqlite3.Connection,
        work: list[tuple[str, Any]],
        now: float,
    ) -> set[str]:
        """Run each ``(statement, parameters)`` of ``work`` (deletes ``RETURNING key,
        expires``) in one write transaction; the live keys they deleted."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = [row for s, params in work for row in conn.execute(s, params)]
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return {key for key, e in rows if e is None or e > now}

    @gated
    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        db_key = self._key(key, version)
        now = self._clock()
        if type(delta) is int and _INT_MIN <= delta <= _INT_MAX:
            try:
                conn = self._connection()
                params = {"delta": delta, "key": db_key, "now": now}
                params["stamp"] = self._stamp(now, conn)
                rows = conn.execute(sql.INCR, params).fetchall()
            except sqlite3.DatabaseError as exc:
                self._on_error(exc)
                rows = []
            if rows:
                return rows[0][0]
        # Absent, pickled (a big int, a float, a tag envelope...), or out of range.
        try:
            new_value, envelope = self._write(self._incr_txn, db_key, key, delta, now)
        except TypeError as exc:
            failed = failed_envelope(exc)
            if failed is not None:  # stale: ValueError, as for a stale number
                self._incremented_envelope(key, version, failed)
            raise
        if envelope is not None:
            self._incremented_envelope(key, version, envelope)
        return new_value

    def _incremented_envelope(self, key: Any, version: Any, envelope: Tagged) -> None:
        """A tagged value was incremented (its envelope kept): the tagging layer
        (``TaggingMixin``) judges it; the raw level hands it to its owner."""
        note_incremented(envelope)

    def _incr_txn(
        self, conn: sqlite3.Connection, db_key: str, key: Any, delta: Any, now: float
    ) -> Any:
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = self._granted_at(now)
            row = conn.execute(sql.GET, (db_key,)).fetchone()
            value = _missing
            if row is not None and (row[1] is None or row[1] > now):
                value = self._decode(row[0], db_key)
            if value is _missing:
                # The made key, as Django's backends name it.
                raise ValueError(f"Key '{db_key}' not found")
            envelope = None
            if isinstance(value, Tagged):  # keep the envelope: its tags and validity
                new_value = incremented(value, delta)
                envelope = type(value)(new_value, value.versions, value.deps, value.wid)
                stored = self._encode(db_key, envelope)
            else:
                new_value = value + delta
                stored = self._encode(db_key, new_value)
            size = self._size(db_key, stored)
            stamp = self._stamp(now, conn)
            conn.execute(sql.SET, (db_key, stored, row[1], stamp, size))
            self._housekeep(conn, now, {db_key}, 1)
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return new_value, envelope

    @gated
    def clear(self) -> None:
        self._write(self._clear_txn)

    def _clear_txn(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM smartcache_entry")
            marker = conn.execute(sql.LOG_MARK_CLEAR).lastrowid or 0
            # Every change before the marker is subsumed by "everything changed".
            conn.execute(sql.LOG_PRUNE, (marker - 1,))
            conn.execute(sql.LOG_RAISE_FLOOR, (marker - 1,))
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        self._state.pending.clear()

    @gated
    def stats(self) -> dict[str, Any]:
        """Entries and accounted bytes, as kept in the file's meta row."""
        size, count = self._connection().execute(sql.TOTALS).fetchone()
        return {
            "entries": count,
            "bytes_used": size,
            "max_bytes": self._max_size,
            "location": self._path,
        }


class SQLiteCache(SingleFlightMixin, TaggingMixin, BaseSQLiteCache):
    """Django cache backend storing entries in the SQLite file named by ``LOCATION``.

    With tags (``set(..., tags=[...])``, ``invalidate_tags()``): the version keys are
    entries of the same file, so an invalidation is seen by every process at once.
    ``get_or_set`` with a callable default computes once per key among the threads
    (or coroutines) of a process; single-flight comes first in the bases so a tagged
    ``get_or_set`` is both.
    """

    def _raw_get_many(
        self, keys: Iterable[str], version: int | None = None
    ) -> dict[str, Any]:
        # The store's get_many is raw already: skip TaggingMixin's copy of its result.
        return BaseSQLiteCache.get_many(self, keys, version)

    @gated
    def _delete_stale(self, writes: dict[str, str], version: int | None) -> None:
        made = self._keys(list(writes), version)
        expected = {db_key: writes[key] for db_key, key in made.items()}
        try:
            self._write(self._delete_unchanged_txn, expected)
        except sqlite3.OperationalError as exc:  # busy, read-only: the read stands
            logger.debug("SQLiteCache: stale entries kept for now (%s).", exc)

    def _delete_unchanged_txn(
        self, conn: sqlite3.Connection, expected: dict[str, str]
    ) -> int:
        """Delete each key of ``expected`` still holding the envelope written as its
        ``wid``; one statement per key compares and deletes, so a value stored since
        by any process is kept. The write id is in the pickle verbatim: SQLite
        searches the bytes (``instr``), nothing is unpickled. How many went."""
        rows = [(key, wid.encode()) for key, wid in expected.items()]
        if len(rows) == 1:
            return conn.execute(sql.DELETE_IF_HOLDS, rows[0]).rowcount
        conn.execute("BEGIN IMMEDIATE")
        try:
            gone = conn.executemany(sql.DELETE_IF_HOLDS, rows).rowcount
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return gone
