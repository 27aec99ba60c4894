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
from collections.abc import Callable, Iterable, Iterator, Set as AbstractSet
from typing import Any, Self, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured

from ..core.patterns import KeyPattern, glob_to_regex, prefix_end
from ..tagging import TaggingMixin
from . import _sqlite_file as sqlite_file, _sqlite_schema as sql
from ._sqlite_options import parse
from .base import SingleFlightMixin, SmartCacheKeyMixin, ThreadedIncrMixin, dumps

logger = logging.getLogger("django_smartcache.sqlite")

#: Bytes charged per entry besides its key and value: row header, index entries.
ENTRY_OVERHEAD = 64
#: Stored ints are SQLite integers (8 bytes); the rest is pickled.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
#: Parameters per ``IN (...)`` (SQLite's historical limit is 999).
_CHUNK = 500
#: Rows inspected per eviction batch.
_VICTIM_BATCH = 64
#: Writes between two maintenance passes (log pruning, bounded purge of expired rows).
_MAINTENANCE_EVERY = 512
#: Expired rows deleted per maintenance pass (bounded so no write pays for a big purge).
_PURGE_BATCH = 256
#: Pending ``accessed`` refreshes that trigger a flush from the read path.
_ACCESS_FLUSH = 256
#: Beyond this many changes, ``changes_since`` tells the caller to drop everything.
_CHANGES_LIMIT = 10_000
#: Seconds between two checks, per thread, that ``LOCATION`` still names the file the
#: thread's connection is on (one ``os.stat``): a file moved aside or deleted by another
#: process is left within this delay (see docs/sqlite.md, "Damaged or wrong files").
FILE_CHECK_INTERVAL = 0.1
_monotonic = time.monotonic

_missing = object()
_T = TypeVar("_T")

# Every connection opened before the current generation reopens at its next use: in a
# forked child (connections must not cross a fork), and in every thread of a process
# once one thread found that a LOCATION now names another file.
_generation = 0


def _after_fork() -> None:
    # A new generation: connections reopen. And a fresh _prepare_lock, which a parent
    # thread opening a file at the moment of fork() would otherwise hold here forever.
    global _generation, _prepare_lock
    _generation += 1
    _prepare_lock = threading.Lock()


def _new_generation() -> None:
    global _generation
    with _prepare_lock:
        _generation += 1


#: A file's identity: (st_dev, st_ino). While a connection holds the file open its inode
#: cannot be reused, so another identity at LOCATION means another file.
FileId = tuple[int, int]


def _file_id(path: str) -> FileId | None:
    """The identity of the file ``path`` names now; ``None`` if there is none."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_dev, st.st_ino)


class ChangeCursor(int):
    """A change-log sequence number that remembers the file it was read from.

    An ``int`` (arithmetic and comparisons as before); ``file`` is the identity of the
    file whose log it counts, so :meth:`BaseSQLiteCache.changes_since` can tell a cursor
    of a file that was since replaced (another log, other sequence numbers) and answer
    "drop everything" instead of comparing numbers of two different logs.
    """

    file: FileId | None

    def __new__(cls, seq: int, file: FileId | None) -> Self:
        cursor = super().__new__(cls, seq)
        cursor.file = file
        return cursor

    def __repr__(self) -> str:
        return f"ChangeCursor({int(self)}, file={self.file})"


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork
    os.register_at_fork(after_in_child=_after_fork)

#: Paths whose file this process has created or checked (once per process and path).
_prepared: set[str] = set()
#: Paths this process has prepared at least once (a later failure is a runtime error).
_ever_prepared: set[str] = set()
_prepare_lock = threading.Lock()
#: Connections inherited through fork: never closed in the child, never used again.
_orphans: list[sqlite3.Connection] = []


class _ThreadState(threading.local):
    #: (connection, ``monotonic()`` time of the next check that LOCATION still names
    #: ``file``, generation it was opened in): one tuple, because the hot path pays
    #: ~50 ns per attribute read of a ``threading.local``.
    live: tuple[sqlite3.Connection | None, float, int] = (None, 0.0, -1)
    #: The process that opened the connection (one inherited through fork is left).
    pid = -1
    #: Identity of the file the connection is on (stat before connecting: never newer).
    file: FileId | None = None
    #: key -> time of a read not yet written to ``accessed``.
    pending: dict[str, float]
    #: (data_version, total_changes, cursor) of the last ``changes_since`` answer.
    seen: tuple[int, int, int] | None = None
    #: Whether the connection has ``json_each`` (``get_many`` in one statement).
    json = False

    def __init__(self) -> None:
        self.pending = {}

    @property
    def conn(self) -> sqlite3.Connection | None:
        return self.live[0]

    @conn.setter
    def conn(self, conn: sqlite3.Connection | None) -> None:
        # Only ever set to None from outside _open: the next use reopens.
        self.live = (conn, 0.0, -1)


@functools.lru_cache(maxsize=16)
def _set_rows_statement(count: int) -> str:
    return sql.set_rows(count)


def _has_json(conn: sqlite3.Connection) -> bool:
    """Whether SQLite has its JSON functions (built in since 3.38; optional before)."""
    try:
        conn.execute(sql.HAS_JSON).fetchone()
    except sqlite3.OperationalError:
        return False
    return True


#: A list of keys as a JSON array (raw UTF-8: SQLite's JSON parser takes it as is).
_json_keys: Callable[[list[str]], str] = json.JSONEncoder(ensure_ascii=False).encode


def _chunks(items: list[_T]) -> Iterator[list[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class BaseSQLiteCache(SmartCacheKeyMixin, ThreadedIncrMixin, BaseCache):
    """The SQLite store: Django's cache API on the file named by ``LOCATION``.

    Values come back exactly as stored (a tag envelope is not unwrapped): this is the
    raw level :class:`SQLiteCache` adds tags and single-flight ``get_or_set`` to.
    """

    pickle_protocol = pickle.HIGHEST_PROTOCOL

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        options = parse(location, params)
        super().__init__({**params, "OPTIONS": {}})
        self.default_timeout = options.timeout  # type: ignore[assignment]
        self._path = os.path.abspath(location)
        self._options = options
        self._max_size = options.max_size
        self._max_entries = options.max_entries  # type: ignore[assignment]
        self._cull_frequency = options.cull_frequency
        self._access_interval = options.access_interval
        self._state = _ThreadState()
        self._maintenance_lock = threading.Lock()
        self._writes = 0
        #: (time, newest log seq then), oldest first: what may be pruned, and when.
        self._checkpoints: deque[tuple[float, int]] = deque()
        self._clock: Callable[[], float] = time.time

    # -- connections -----------------------------------------------------------------

    @property
    def path(self) -> str:
        """The absolute path of the cache file."""
        return self._path

    def _connection(self) -> sqlite3.Connection:
        conn, check_at, generation = self._state.live
        if generation == _generation and _monotonic() < check_at:
            return conn  # type: ignore[return-value]  # generation -1 when None
        return self._reconnect(self._state)

    def _reconnect(
        self, state: _ThreadState, force_check: bool = False
    ) -> sqlite3.Connection:
        """The connection, after the checks ``_connection`` found due.

        At most every ``FILE_CHECK_INTERVAL`` per thread (and on every ``changes_since``):
        one ``os.stat`` of LOCATION. Another file there (moved aside as damaged by
        another process and replaced, deleted and recreated), or none: this thread and
        then every other thread of the process (a new generation) reopen on LOCATION,
        creating a fresh file if there is none. Without it, a process that never met
        the damage kept using the old file forever, invisible to the others.
        """
        conn, check_at, generation = state.live
        if conn is not None and generation == _generation:
            now = _monotonic()
            if not force_check and now < check_at:
                return conn
            try:
                same = _file_id(self._path) == state.file
            except OSError:  # cannot tell (no permission on the directory?): keep it
                same = True
            if same:
                state.live = (conn, now + FILE_CHECK_INTERVAL, generation)
                return conn
            logger.warning(
                "SQLiteCache: %s is no longer the file this process had open (moved "
                "aside or deleted by another process); reopening it.",
                self._path,
            )
            _new_generation()
            with _prepare_lock:
                _prepared.discard(self._path)
        return self._open(state)

    def _open(self, state: _ThreadState) -> sqlite3.Connection:
        old, state.conn = state.conn, None
        if old is not None:
            if state.pid != os.getpid():
                _orphans.append(old)  # inherited through fork: never closed here
            else:
                # Left for a new file: SQLite neither checkpoints nor deletes the WAL
                # of a file that was moved or unlinked (its path names another one).
                old.close()
        with _prepare_lock:
            if self._path not in _prepared:
                try:
                    sqlite_file.prepare(self._path, self._options.busy_timeout)
                except ImproperlyConfigured as exc:
                    if self._path not in _ever_prepared:
                        raise
                    # It worked before: LOCATION cannot be recreated now (its directory
                    # gone and not creatable...). An error of the level, which
                    # MultiLevelCache skips for RETRY_INTERVAL, not a configuration error
                    # raised from a get().
                    raise sqlite3.OperationalError(str(exc)) from exc
                _prepared.add(self._path)
                _ever_prepared.add(self._path)
            generation = _generation
        # Identity first: if the file is replaced before connect() opens it, the next
        # check sees a mismatch and reopens (the other order could miss it forever).
        file = _file_id(self._path)
        conn = sqlite_file.connect(
            self._path, self._options.busy_timeout, self._options.synchronous
        )
        state.live = (conn, _monotonic() + FILE_CHECK_INTERVAL, generation)
        state.pid = os.getpid()
        state.file = file
        state.pending = {}
        state.seen = None
        state.json = _has_json(conn)
        return conn

    def _on_error(self, exc: sqlite3.DatabaseError) -> None:
        """Re-raise ``exc`` unless it says the file is damaged; then start a fresh file."""
        if not sqlite_file.is_corruption(exc):
            raise exc
        state = self._state
        conn, state.conn = state.conn, None
        if conn is not None:
            conn.close()
        with sqlite_file.open_lock(self._path):
            current = _file_id(self._path)
            # Another process may already have replaced the file: then just reconnect.
            if current is not None and current == state.file:
                sqlite_file.quarantine(self._path, str(exc))
        with _prepare_lock:
            _prepared.discard(self._path)
        # The other threads of this process leave the old file too.
        _new_generation()

    def _write(self, operation: Callable[..., _T], *args: Any) -> _T:
        """Run a write; after a damaged file was replaced, run it once more on the new one."""
        try:
            return operation(self._connection(), *args)
        except sqlite3.DatabaseError as exc:
            self._on_error(exc)
        return operation(self._connection(), *args)

    def close(self, **kwargs: Any) -> None:
        """Write pending ``accessed`` refreshes; the connection stays open for reuse."""
        state = self._state
        if state.pending and state.conn is not None:
            self._write(self._flush_access_txn)

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
            # Unreadable (a class that no longer exists, a damaged value): a miss, logged.
            logger.error(
                "SQLiteCache: cannot unpickle %r in %s (%r).", key, self._path, exc
            )
            return _missing

    def _size(self, key: str, stored: Any) -> int:
        return len(key) + (8 if type(stored) is int else len(stored)) + ENTRY_OVERHEAD

    def _expiry(self, timeout: Any, now: float) -> float | None:
        ttl = self._ttl(timeout)  # a NaN raises: SQLite would store NULL, never expire
        return None if ttl is None else now + ttl

    # -- reads -----------------------------------------------------------------------

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key = self._key(key, version)
        now = self._clock()
        try:
            row = (
                self._connection()
                .execute(sql.GET_LIVE, (now - self._access_interval, key, now))
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
            sql.GET_MANY_JSON, (now - self._access_interval, encoded, now)
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
        stale_before = now - self._access_interval
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

    def has_key(self, key: Any, version: int | None = None) -> bool:
        key = self._key(key, version)
        try:
            cursor = self._connection().execute(sql.HAS_KEY, (key, self._clock()))
            return cursor.fetchone() is not None
        except sqlite3.DatabaseError as exc:
            self._on_error(exc)
            return False

    def ttl(self, key: Any, version: int | None = None) -> float | None:
        """Seconds ``key`` has left; ``None`` if it never expires; ``0.0`` if it is absent.

        As django-redis answers: "absent" and "expired" are the same (a 0 TTL), so a
        caller copying the entry elsewhere (``MultiLevelCache`` promoting a hit into L1)
        skips it either way. Reading a TTL is not an access (LRU order is unchanged).
        """
        return self.ttl_many([key], version).get(key, 0.0)

    def ttl_many(
        self, keys: Iterable[Any], version: int | None = None
    ) -> dict[Any, float | None]:
        """:meth:`ttl` of many keys in one query per 500: live keys only (absent: 0)."""
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

    def _note_access(self, key: str, now: float) -> None:
        pending = self._state.pending
        pending[key] = now
        if len(pending) >= _ACCESS_FLUSH:
            try:
                self._write(self._flush_access_txn)
            except (
                sqlite3.OperationalError
            ) as exc:  # busy past BUSY_TIMEOUT: retry later
                logger.warning("SQLiteCache: access times not written yet (%s).", exc)

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
        if (expires is not None and expires <= now) or size > self._max_size:
            if size > self._max_size:
                self._too_large(key, size)
            self._write(self._delete_txn, [key], now)
            return
        self._write(self._set_txn, [(key, stored, expires, now, size)], [], now)

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
        max_size = self._max_size
        pickle_dumps, protocol = pickle.dumps, self.pickle_protocol
        for key, original in self._keys(data, version).items():
            value = data[original]
            # _encode inlined (a function call per key is a tenth of a 100-key batch).
            if type(value) is int and _INT_MIN <= value <= _INT_MAX:
                stored: Any = value
                size = len(key) + 8 + ENTRY_OVERHEAD
            else:
                try:
                    stored = pickle_dumps(value, protocol)
                except Exception:  # noqa: BLE001 - dumps() raises the named error
                    stored = dumps(key, value)
                size = len(key) + len(stored) + ENTRY_OVERHEAD
            if size > max_size:
                self._too_large(key, size)
                failed.append(original)
                dropped.append(key)
            elif expired:
                dropped.append(key)
            else:
                rows.append((key, stored, expires, now, size))
        if rows or dropped:
            self._write(self._set_txn, rows, dropped, now)
        return failed

    def _too_large(self, key: str, size: int) -> None:
        logger.warning(
            "SQLiteCache: not storing %r: %d bytes exceed MAX_SIZE (%d); any older value "
            "was deleted.",
            key,
            size,
            self._max_size,
        )

    def _set_txn(
        self,
        conn: sqlite3.Connection,
        rows: list[tuple[str, Any, float | None, float, int]],
        dropped: list[str],
        now: float,
    ) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
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
        if size > self._max_size:
            self._too_large(key, size)
            return False
        return self._write(self._add_txn, (key, stored, expires, now, size), now)

    def _add_txn(
        self,
        conn: sqlite3.Connection,
        row: tuple[str, Any, float | None, float, int],
        now: float,
    ) -> bool:
        key, _, expires, _, _ = row
        conn.execute("BEGIN IMMEDIATE")
        try:
            if expires is not None and expires <= now:
                # Stored already expired: "added" iff nothing live was there.
                stored = conn.execute(sql.HAS_KEY, (key, now)).fetchone() is None
                if stored:
                    conn.execute(sql.DELETE_EXPIRED_ONE, (key, now))
            else:
                stored = conn.execute(sql.ADD, row).rowcount == 1
                if stored:
                    self._housekeep(conn, now, {key}, 1)
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return stored

    def touch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key = self._key(key, version)
        now = self._clock()
        expires = self._expiry(timeout, now)
        if expires is not None and expires <= now:
            # Touching with a past expiry ends the entry now, as Django's backends do.
            return self._write(self._autocommit_count, sql.DELETE_LIVE, (key, now)) > 0
        return self._write(self._autocommit_count, sql.TOUCH, (expires, key, now)) > 0

    def _autocommit_count(
        self, conn: sqlite3.Connection, statement: str, params: tuple[Any, ...]
    ) -> int:
        return conn.execute(statement, params).rowcount

    def delete(self, key: Any, version: int | None = None) -> bool:
        key = self._key(key, version)
        return self._write(self._delete_txn, [key], self._clock()) > 0

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

    def delete_pattern(
        self, pattern: str, regex: bool = False, version: int | None = None
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

    def _delete_key_pattern(self, match: KeyPattern) -> set[str]:
        """Delete the stored keys ``match`` matches; return the live ones among them.

        ``match.head`` is the literal start of the stored keys and the pattern applies
        to the rest: for ``delete_pattern()`` the head of this cache's ``KEY_PREFIX``
        and version, for a MultiLevelCache whose level this is the head of its final
        keys (so its caller's regex is matched as written, and it learns which keys
        went from every level to count each once).
        """
        if match.regex:
            op, operand = "REGEXP", match.pattern
        else:
            glob = _sqlite_glob(match.pattern)
            # A class SQLite's GLOB cannot spell ("[]^-]"...): the same test in Python.
            op, operand = (
                ("GLOB", glob)
                if glob is not None
                else ("REGEXP", r"\A" + glob_to_regex(match.pattern))
            )
        end = prefix_end(match.literal_prefix)
        template = sql.DELETE_PATTERN if end is not None else sql.DELETE_PATTERN_OPEN
        statement = template.format(op=op)
        params = {
            "low": match.literal_prefix,
            "high": end,
            "start": len(match.head) + 1,
            "pattern": operand,
        }
        return self._write(self._delete_pattern_txn, statement, params, self._clock())

    async def adelete_pattern(
        self, pattern: str, regex: bool = False, version: int | None = None
    ) -> int:
        return await sync_to_async(self.delete_pattern, thread_sensitive=True)(
            pattern, regex, version
        )

    def _delete_pattern_txn(
        self,
        conn: sqlite3.Connection,
        statement: str,
        params: dict[str, Any],
        now: float,
    ) -> set[str]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(statement, params).fetchall()
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return {key for key, e in rows if e is None or e > now}

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        db_key = self._key(key, version)
        now = self._clock()
        if type(delta) is int and _INT_MIN <= delta <= _INT_MAX:
            try:
                rows = (
                    self._connection()
                    .execute(sql.INCR, {"delta": delta, "key": db_key, "now": now})
                    .fetchall()
                )
            except sqlite3.DatabaseError as exc:
                self._on_error(exc)
                rows = []
            if rows:
                return rows[0][0]
        # Absent, pickled (a big int, a float...), or out of the 64-bit range.
        return self._write(self._incr_txn, db_key, key, delta, now)

    def _incr_txn(
        self, conn: sqlite3.Connection, db_key: str, key: Any, delta: Any, now: float
    ) -> Any:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(sql.GET, (db_key,)).fetchone()
            value = _missing
            if row is not None and (row[1] is None or row[1] > now):
                value = self._decode(row[0], db_key)
            if value is _missing:
                raise ValueError(f"Key '{key}' not found")
            new_value = value + delta
            stored = self._encode(db_key, new_value)
            size = self._size(db_key, stored)
            conn.execute(sql.SET, (db_key, stored, row[1], now, size))
            self._housekeep(conn, now, {db_key}, 1)
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return new_value

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

    # -- budget and maintenance (called inside a write transaction) -------------------

    def _housekeep(
        self,
        conn: sqlite3.Connection,
        now: float,
        protected: AbstractSet[str],
        writes: int,
    ) -> None:
        if self._state.pending:
            self._flush_access(conn)
        size, count = conn.execute(sql.TOTALS).fetchone()
        if size > self._max_size or (
            self._max_entries is not None and count > self._max_entries
        ):
            self._cull(conn, now, size, count, protected)
        with self._maintenance_lock:
            self._writes += writes
            due = self._writes >= _MAINTENANCE_EVERY
            if due:
                self._writes = 0
        if due:
            self._maintain(conn, now)

    def _cull(
        self,
        conn: sqlite3.Connection,
        now: float,
        size: int,
        count: int,
        protected: AbstractSet[str],
    ) -> None:
        """Delete expired entries, then the least recently used, until within budget."""
        excess_bytes = size - self._max_size
        excess_entries = 0
        max_entries = self._max_entries
        if max_entries is not None and count > max_entries:
            # Django's MAX_ENTRIES semantics: drop 1/CULL_FREQUENCY of the entries (0: all).
            if self._cull_frequency == 0:
                excess_entries = count
            else:
                excess_entries = max(
                    count - max_entries, (count - 1) // self._cull_frequency
                )
        limit = _VICTIM_BATCH + len(protected)
        for query, params in (
            (sql.EXPIRED_VICTIMS, (now, limit)),
            (sql.LRU_VICTIMS, (limit,)),
        ):
            while excess_bytes > 0 or excess_entries > 0:
                victims = []
                for key, victim_size in conn.execute(query, params).fetchall():
                    if key in protected:
                        continue
                    victims.append((key,))
                    excess_bytes -= victim_size
                    excess_entries -= 1
                    if excess_bytes <= 0 and excess_entries <= 0:
                        break
                if not victims:
                    break
                conn.executemany(sql.DELETE, victims)

    def _maintain(self, conn: sqlite3.Connection, now: float) -> None:
        """Bounded purge of expired rows, and pruning of the change log."""
        conn.execute(sql.PURGE_EXPIRED_SOME, (now, _PURGE_BATCH))
        (head,) = conn.execute(sql.LOG_HEAD).fetchone()
        if head is None:
            return
        with self._maintenance_lock:
            checkpoints = self._checkpoints
            checkpoints.append((now, head))
            cut = 0
            horizon = now - self._options.log_retention
            while checkpoints and checkpoints[0][0] <= horizon:
                cut = checkpoints.popleft()[1]
        cut = max(cut, head - self._options.log_max_rows)
        cut = min(cut, head - 1)  # the newest row stays: sequence numbers never go back
        if cut > 0:
            conn.execute(sql.LOG_PRUNE, (cut,))
            conn.execute(sql.LOG_RAISE_FLOOR, (cut,))

    def purge_expired(self) -> int:
        """Delete every expired entry now (through the ``expires`` index); return how many."""
        return self._write(self._autocommit_count, sql.PURGE_EXPIRED, (self._clock(),))

    def stats(self) -> dict[str, Any]:
        """Entries and accounted bytes, as kept in the file's meta row."""
        size, count = self._connection().execute(sql.TOTALS).fetchone()
        return {
            "entries": count,
            "bytes": size,
            "max_bytes": self._max_size,
            "location": self._path,
        }

    # -- coherence API (for MultiLevelCache) ------------------------------------------

    def change_cursor(self) -> ChangeCursor:
        """The sequence number of the newest change; pass it to :meth:`changes_since`.

        An ``int`` that also names the file it counts in (:class:`ChangeCursor`).
        """
        state = self._state
        conn = self._reconnect(state, force_check=True)
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        (head,) = conn.execute(sql.LOG_HEAD).fetchone()
        if head is None:
            (head,) = conn.execute(sql.LOG_FLOOR).fetchone()
        # As a changes_since answer ending at ``head``: see its own-changes rule.
        state.seen = (version, conn.total_changes, int(head))
        return ChangeCursor(int(head), state.file)

    def changes_since(
        self, cursor: int, *, skip_own: bool = False
    ) -> tuple[ChangeCursor, list[str] | None]:
        """The new cursor and the DB keys changed after ``cursor``.

        ``None`` instead of the list means "drop everything": a ``clear()`` happened, the
        log was pruned past ``cursor``, more than 10,000 keys changed, or ``cursor``
        counts in another file's log: LOCATION was replaced since (a
        :class:`ChangeCursor` of another file, or a number above this log's head).
        Checks first that LOCATION still names this thread's file (one ``os.stat``).
        When no other connection committed since this thread's last call, answering
        costs that and one ``PRAGMA data_version``. ``skip_own``: the caller made
        every write of this thread's connection itself (MultiLevelCache: its L1 has
        them), so when only this connection committed since its last answer, the
        answer is the new head and nothing to drop.
        """
        state = self._state
        conn = self._reconnect(state, force_check=True)
        file = state.file
        other_file = getattr(cursor, "file", file) != file
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        mark = (version, conn.total_changes, cursor)
        seen = state.seen
        if seen == mark and not other_file:
            return ChangeCursor(cursor, file), []
        if (
            skip_own
            and seen is not None
            and seen[0] == version
            and seen[2] == cursor
            and not other_file
        ):
            # No other connection committed since this one's last answer, which ended
            # at ``cursor``: every change after it is this connection's own, made
            # through the caller (whose L1 has them). Nothing to drop: the new head.
            (last,) = conn.execute(sql.LOG_HEAD).fetchone()
            head = max(int(last or 0), int(cursor))
            state.seen = (version, conn.total_changes, head)
            return ChangeCursor(head, file), []
        conn.execute("BEGIN")  # one snapshot for the floor, the head and the rows
        try:
            (floor,) = conn.execute(sql.LOG_FLOOR).fetchone()
            rows = (
                []
                if other_file
                else conn.execute(
                    sql.LOG_SINCE + " LIMIT ?", (cursor, _CHANGES_LIMIT + 1)
                ).fetchall()
            )
            keys: list[str] | None
            if rows and len(rows) <= _CHANGES_LIMIT and cursor >= floor:
                head = rows[-1][0]
                keys = []
                for _, key in rows:
                    if key is None:
                        keys = None
                        break
                    keys.append(key)
            else:
                (last,) = conn.execute(sql.LOG_HEAD).fetchone()
                head = max(int(last or 0), floor)
                # Nothing new, and the cursor is this file's: nothing to drop. A cursor
                # above the head counts in the log of a file since replaced.
                same = not other_file and not rows and floor <= cursor <= head
                keys = [] if same else None
                if same:
                    head = int(cursor)
        finally:
            conn.execute("COMMIT")
        if keys:
            keys = list(dict.fromkeys(keys))
        state.seen = (version, conn.total_changes, head)
        return ChangeCursor(head, file), keys


def _sqlite_glob(pattern: str) -> str | None:
    """Our glob (``core.patterns``) in SQLite's ``GLOB`` syntax, or ``None`` if it has none.

    SQLite's glob has no escape character: a literal ``*``, ``?`` or ``[`` becomes a
    one-character class. A class holding ``]``, ``^``, ``-`` or ``\\`` literally is
    left to the regex path rather than spelled in SQLite's positional rules.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch in "*?":
            out.append(ch)
        elif ch == "\\" and i < n:
            ch = pattern[i]
            i += 1
            out.append(f"[{ch}]" if ch in "*?[" else ch)
        elif ch == "[":
            start = i + 1 if pattern[i : i + 1] in ("!", "^") else i
            if pattern[start : start + 1] == "]":
                return None  # "]" as the first member
            close = pattern.find("]", start)
            if close < 0:  # no closing bracket: a literal "["
                out.append("[[]")
                continue
            body = pattern[start:close]
            if any(c in body for c in "\\^") or body[0] == "-" or body[-1] == "-":
                return None
            out.append(("[^" if start > i else "[") + body + "]")
            i = close + 1
        elif ch == "\\":
            out.append("\\")  # a trailing backslash is literal
        else:
            out.append(ch)
    return "".join(out)


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
