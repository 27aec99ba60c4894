"""Per-thread connections to a SQLiteCache file.

One connection per thread and file, opened lazily; reopened in a forked child
(connections must not cross a fork) and in every thread of a process once one of them
finds that ``LOCATION`` names another file (moved aside as damaged, or deleted and
recreated, by another process). Opening creates and checks the file once per process.
When a thread's state goes (the thread ended, or the cache instance was dropped), its
connection waits in a small per-process pool for the next thread that opens the same
file: a server with a thread per request (ASGI, threaded runserver) reuses them.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from . import _sqlite_file as sqlite_file, _sqlite_schema as sql
from ._sqlite_file import Connection, FileId, file_id
from ._sqlite_options import SQLiteOptions
from .base import warn_if_on_event_loop

logger = logging.getLogger("django_smartcache.sqlite")

#: Seconds between two checks, per thread, that ``LOCATION`` still names the file the
#: thread's connection is on (one ``os.stat``): a file moved aside or deleted by another
#: process is left within this delay (see docs/sqlite.md, "Damaged or wrong files").
FILE_CHECK_INTERVAL = 0.1
#: Seconds between two looks, per cache instance, at the size of the WAL after a write.
WAL_CHECK_INTERVAL = 0.1
#: A WAL file larger than this has not restarted since it grew past SQLite's
#: ``journal_size_limit`` (the same 32 MB): a writer then forces the restart.
WAL_RESTART_BYTES = sqlite_file.JOURNAL_SIZE_LIMIT
#: Seconds that forced checkpoint waits for the write lock and for readers to leave
#: the WAL (then SQLite's PASSIVE checkpoint is all it did, and a later write retries).
WAL_TRUNCATE_WAIT = 0.02
#: A WAL this many times :data:`WAL_RESTART_BYTES` that a checkpoint could not restart
#: is held by a reader: logged at WARNING, at most once per :data:`WAL_WARN_INTERVAL`
#: seconds per file and process: an ``sqlite3`` shell's open read transaction can grow
#: the WAL by 1.3 GB in 30 s, which DEBUG lines alone would not make known.
WAL_WARN_FACTOR = 8
WAL_WARN_INTERVAL = 60.0
_wal_warned: dict[str, float] = {}
_monotonic = time.monotonic
_get_ident = threading.get_ident
_T = TypeVar("_T")
_P = ParamSpec("_P")

# Every connection opened before the current generation reopens at its next use: in a
# forked child (connections must not cross a fork), and in every thread of a process
# once one thread found that a LOCATION now names another file.
_generation = 0


# -- fork() ---------------------------------------------------------------------------
# SQLite is not fork-safe: a child inherits the parent's per-file lock bookkeeping, and
# any mutex a parent thread held inside SQLite at that moment (held forever in the
# child: its calls hang). A new connection in the child shares that bookkeeping: it
# believes it holds the parent's locks and takes no real ones, so another process can
# checkpoint and delete the WAL under it (two histories; committed writes lost). So a
# fork waits until no thread is inside a SQLiteCache call (the gate), and the child
# closes every connection it inherited before it opens its own, which drops that
# bookkeeping (the parent's real locks are its own: closing in the child keeps them).

#: Seconds a fork() waits for threads inside SQLiteCache calls (a write waits up to
#: ``BUSY_TIMEOUT`` for the file's lock); then it forks anyway, as before, and logs.
FORK_WAIT = 30.0

#: The thread of each call inside SQLite now: ``list.append``/``remove`` are atomic
#: under the GIL, and ~4x cheaper than taking a lock twice (a get is ~6 us).
_inside: list[int] = []
#: Set by a fork waiting for the calls inside to finish: new calls wait for it.
_forking = False
_fork_done = threading.Event()
_fork_done.set()
#: Every connection open in this process: closed in a forked child.
_live: weakref.WeakSet[Connection] = weakref.WeakSet()
#: Whether the last fork() happened with no thread inside SQLite.
_quiet_fork = True
#: (thread, process) of the fork in progress: that thread's own calls (from another
#: fork hook) go on; in the child they first do the child's work (``_after_fork``).
_forker: tuple[int, int] | None = None


def gated(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """``method`` (one that uses SQLite) runs with fork() kept out.

    The order matters: a call counts itself in, then looks for a fork; a fork raises
    its flag, then waits for the count to drop. Whichever comes second sees the other.
    """

    @functools.wraps(method)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        me = _get_ident()
        _inside.append(me)
        if _forking:
            _wait_for_fork(me)
        try:
            return method(*args, **kwargs)
        finally:
            try:
                _inside.remove(me)
            except ValueError:  # (a child forked, unquiet, from inside this call)
                pass

    return run


def _wait_for_fork(me: int) -> None:
    """A call arrived while a fork waits: step out until it is done, then in again;
    unless the thread is inside already (a call within a call): the fork waits for
    the outer one to finish, which needs this one to go on."""
    if _inside.count(me) > 1:
        return
    forker = _forker
    if forker is not None and forker[0] == me:
        # The forking thread itself, from another fork hook: the others are kept out.
        if forker[1] != os.getpid():
            _after_fork()  # in the child, before our own hook: its work first
        return
    while _forking:
        _inside.remove(me)
        _fork_done.wait()
        _inside.append(me)


def _before_fork() -> None:
    """Keep new calls out, and wait (at most ``FORK_WAIT``) for those inside SQLite."""
    global _forking, _quiet_fork, _forker
    _forker = (_get_ident(), os.getpid())
    _fork_done.clear()
    _forking = True
    deadline = _monotonic() + FORK_WAIT
    while _inside:
        if _monotonic() > deadline:
            _quiet_fork = False
            return
        time.sleep(0.001)
    _quiet_fork = True


def _after_fork_in_parent() -> None:
    global _forking, _forker
    _forker = None
    _forking = False
    _fork_done.set()


def _after_fork() -> None:
    # A new generation: connections reopen. And a fresh _prepare_lock, which a parent
    # thread opening a file at the moment of fork() would otherwise hold here forever.
    global _generation, _prepare_lock, _forking, _fork_done, _forker
    if _forker is None:
        return  # done already, by a call from a fork hook that ran before this one
    _forker = None
    _generation += 1
    _prepare_lock = threading.Lock()
    _inside.clear()  # the calls of the parent's other threads do not exist here
    _forking, _fork_done = False, threading.Event()
    _fork_done.set()
    inherited = list(_live)
    # The parent's idle connections: in ``inherited`` (held there, so dropping them
    # here never closes one the unquiet case below must keep as an orphan).
    _pool.clear()
    _live.clear()
    _held.clear()
    if not _quiet_fork:
        logger.warning(
            "SQLiteCache: this process was forked while a thread of its parent was "
            "inside SQLite for over %s s; its inherited connections are left open, "
            "and SQLite's locks in this process may not be real (see docs/sqlite.md).",
            FORK_WAIT,
        )
        _orphans.extend(inherited)
        return
    for conn in inherited:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - nothing to save: the child opens its own
            _orphans.append(conn)


def new_generation() -> None:
    global _generation
    # It takes _prepare_lock, maybe before this process's first connection (from
    # close_all_connections()): a fork at that moment must find the hooks that renew it.
    _register_fork_hooks()
    with _prepare_lock:
        _generation += 1


# -- CACHES changed ---------------------------------------------------------------------
# When CACHES changes (override_settings), Django closes the cache instances and drops
# them from its handler, but each stays alive in the asgiref Local it was kept in (a
# context variable's value outlives the variable), and close() keeps SQLite connections
# for reuse: unless closed here, every override with a SQLiteCache (a MultiLevelCache's
# default level too) leaves three open files (the file, -wal, -shm), until "Too many
# open files".


def _caches_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES":
        close_all_connections()


def close_all_connections() -> None:
    """Close every SQLiteCache connection of this process; each thread opens a new one
    at its next use (a new generation).

    A thread inside a SQLiteCache call now keeps its connections: it leaves them at its
    next call, which reopens. Anyone else's are closed here.
    """
    from django.core.cache import caches

    # Django closes the caches when CACHES changes; first, here, so that their pending
    # writes (``accessed`` refreshes) go out before their connections are closed, not
    # reopen a connection afterwards (receivers run in no guaranteed order).
    caches.close_all()
    # First the new generation, then who is inside: a call that starts later sees the
    # new generation and opens a new connection instead of using one closed here.
    new_generation()
    _close_pool()
    busy = set(_inside)
    me = os.getpid()
    for conn in list(_live):
        pid, thread = conn.owner
        # Thread 0: idle in the pool (closed just above), or being taken from it by a
        # thread that has not yet written its name: that thread's next call reopens.
        if pid != me or thread in busy or thread == 0:
            continue
        _live.discard(conn)
        try:
            conn.close()
        except Exception:  # closing only: nothing to save
            logger.debug("SQLiteCache: could not close a connection", exc_info=True)


setting_changed.connect(
    _caches_changed, dispatch_uid="django_smartcache.sqlite.caches_changed"
)


def _unprepared(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` says the file lacks our tables (SQLite's "no such table")."""
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(
        "no such table: smartcache_"
    )


_hooks_lock = threading.Lock()
_hooks_registered = False


def _register_fork_hooks() -> None:
    """Registered at the first use of ``_prepare_lock``, not at import: ``before``
    hooks run in the reverse order of registration, and the SmartCache stores' hook
    (which holds every store's lock across the fork) must run after this one's wait
    for SQLite calls, not hold those locks through it."""
    global _hooks_registered
    with _hooks_lock:
        if _hooks_registered or not hasattr(os, "register_at_fork"):
            return
        _hooks_registered = True
        os.register_at_fork(
            before=_before_fork,
            after_in_parent=_after_fork_in_parent,
            after_in_child=_after_fork,
        )


#: Paths whose file this process has created or checked (once per process and path).
_prepared: set[str] = set()
#: Paths this process has prepared at least once (a later failure is a runtime error).
_ever_prepared: set[str] = set()
_prepare_lock = threading.Lock()
#: Connections inherited through a fork that could not be closed: never used again.
_orphans: list[sqlite3.Connection] = []


#: Idle connections kept per (absolute path, busy_timeout, synchronous) at most.
POOL_SIZE = 8

#: (absolute path, busy_timeout, synchronous): connections alike, as ``connect`` makes them.
PoolKey = tuple[str, float, str]
#: (connection, pid and generation it was opened in, identity of its file, has_json).
_Idle = tuple[sqlite3.Connection, int, int, FileId | None, bool]

#: Idle connections of this process: a thread's connection, when its state goes (the
#: thread ended, or the cache instance was dropped), waits here for the next thread
#: opening the same file. Under ASGI each request runs in a new thread (and Django
#: builds new cache instances per request context): opening a connection there cost
#: 4-20 ms per request, and closing the file's last one deleted its WAL each time.
#: No lock: ``dict.setdefault``, ``list.append`` and ``list.pop`` are atomic under the
#: GIL, and ``_Closer.__del__`` may run anywhere (even where this thread holds a lock).
_pool: dict[PoolKey, list[_Idle]] = {}

#: Every connection a thread's state holds, until its ``_Closer`` runs: kept reachable
#: from here so that it is never garbage itself. A request's cache instance is often
#: cyclic garbage (a MultiLevelCache always is), and the collector finalizes all that
#: garbage in no set order: the connection too, whose finalizer (Python 3.12 on) closes
#: it, maybe after its closer has put it in the pool; the next thread would take
#: it closed ("Cannot operate on a closed database", the level marked down, the
#: write lost).
#: Only its closer lets it go (to the pool, or closed): no connection stays open longer.
_held: set[sqlite3.Connection] = set()


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001, S110 - closing only: nothing to save
        pass


def _close_pool() -> None:
    """Close the idle connections of this process (a connection popped here is ours
    alone: a thread taking one pops it too)."""
    me = os.getpid()
    for idle in list(_pool.values()):
        while idle:
            try:
                conn, pid, *_ = idle.pop()
            except IndexError:
                break
            if pid == me:
                _close_quietly(conn)


#: Set at exit: from then on a thread's connection is closed, not kept idle.
_exiting = False


def _at_exit() -> None:
    # Python 3.13 warns (ResourceWarning) about a sqlite3 connection left unclosed;
    # the instances still alive drop their connections after this (closed, not kept).
    global _exiting
    _exiting = True
    _close_pool()


atexit.register(_at_exit)


def _take(key: PoolKey, generation: int, file: FileId | None) -> _Idle | None:
    """An idle connection for ``key`` opened in this process and ``generation`` on the
    file ``file`` (LOCATION's identity now), with ``key``'s busy_timeout set again (a
    failed restore after a shorter wait would otherwise stay), or ``None``. Others met
    are closed; a closed one (which should never be idle) is passed over."""
    idle = _pool.get(key)
    me = os.getpid()
    while idle:
        try:
            entry = idle.pop()
        except IndexError:
            return None
        conn, pid, opened_in, on_file = entry[:4]
        if (
            pid == me
            and opened_in == generation
            and file is not None
            and on_file == file
        ):
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(key[1] * 1000)}")
            except sqlite3.ProgrammingError:  # closed: nothing to close or reuse
                logger.debug("SQLiteCache: a closed connection was idle; skipped.")
                continue
            return entry
        if pid == me:
            _close_quietly(conn)
    return None


class _Closer:
    """Hands a thread's connection back when the thread's state goes (the thread ended,
    or the cache instance was dropped): to the pool, or closes it. Left to the garbage
    collector, each one was an open file descriptor until a collection, and a
    ResourceWarning on Python 3.13."""

    __slots__ = ("conn", "file", "generation", "json", "key", "pid")

    def __init__(
        self,
        conn: sqlite3.Connection,
        key: PoolKey,
        generation: int,
        file: FileId | None,
        json: bool,
    ) -> None:
        self.conn = conn
        self.key = key
        self.pid = os.getpid()
        self.generation = generation
        self.file = file
        self.json = json

    def __del__(self) -> None:
        # Never in a forked child: an inherited connection is closed after the fork
        # (or kept as an orphan when the fork could not wait for the calls inside).
        # Never a lock here: this may run at any point, in any thread.
        try:
            conn, pid = self.conn, self.pid
            _held.discard(conn)  # now ours to pool or close
            if pid != os.getpid():
                return
            # (A closed connection, left after damage or for a new generation, raises.)
            if (
                self.generation == _generation
                and not _exiting
                and not conn.in_transaction
            ):
                idle = _pool.setdefault(self.key, [])
                if len(idle) < POOL_SIZE:
                    conn.owner = (pid, 0)  # type: ignore[attr-defined]  # nobody's
                    entry = (conn, pid, self.generation, self.file, self.json)
                    idle.append(entry)
                    if self.generation == _generation:
                        return
                    # close_all_connections() ran since the check above: its pool
                    # closing missed this one. Taken meanwhile: its taker closes it.
                    idle.remove(entry)
            conn.close()
        except Exception:  # noqa: BLE001, S110 - at teardown: nothing to report to
            pass


class ThreadState(threading.local):
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
    #: Closes the connection when this thread's state goes.
    closer: _Closer | None = None

    def __init__(self) -> None:
        self.pending = {}

    @property
    def conn(self) -> sqlite3.Connection | None:
        return self.live[0]

    @conn.setter
    def conn(self, conn: sqlite3.Connection | None) -> None:
        # Only ever set to None from outside _open: the next use reopens.
        self.live = (conn, 0.0, -1)


#: Seconds ahead of the wall clock beyond which a file's newest ``accessed`` is not
#: followed: one written under a clock set a year ahead would freeze the stamps.
MAX_ACCESS_AHEAD = 86400.0


def newest_access(conn: sqlite3.Connection, now: float) -> float:
    """The file's newest ``accessed`` (an indexed lookup) that is at most
    :data:`MAX_ACCESS_AHEAD` ahead of ``now`` (the cache's clock); 0 if none."""
    try:
        row = conn.execute(sql.NEWEST_ACCESS, (now + MAX_ACCESS_AHEAD,)).fetchone()
    except sqlite3.DatabaseError:
        return 0.0  # (the next query reports it)
    return 0.0 if row is None else float(row[0])


def has_json(conn: sqlite3.Connection) -> bool:
    """Whether SQLite has its JSON functions (built in since 3.38; optional before)."""
    try:
        conn.execute(sql.HAS_JSON).fetchone()
    except sqlite3.OperationalError:
        return False
    return True


class ConnectionMixin:
    """The cache's connection for the calling thread: ``_connection()`` on the hot path.

    Needs ``_path`` (absolute LOCATION), ``_options`` and ``_state`` (a ``ThreadState``).
    """

    _path: str
    _options: SQLiteOptions
    _state: ThreadState
    #: ``monotonic()`` time after which a write looks at the WAL's size again.
    _wal_check_at = 0.0

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
        self, state: ThreadState, force_check: bool = False
    ) -> sqlite3.Connection:
        """The connection, after the checks ``_connection`` found due.

        At most every ``FILE_CHECK_INTERVAL`` per thread (and on every ``changes_since``):
        one ``os.stat`` of LOCATION. Another file there (moved aside as damaged by
        another process and replaced, deleted and recreated), or none: this thread and
        then every other thread of the process (a new generation) reopen on LOCATION,
        creating a fresh file if there is none. Without it, a process that never met
        the damage kept using the old file forever, invisible to the others.
        """
        # (Here, not per call: a thread's first call, then every FILE_CHECK_INTERVAL.)
        if not getattr(self, "_loop_io_reported_above", False):
            warn_if_on_event_loop(type(self).__name__, self._path)
        conn, check_at, generation = state.live
        if conn is not None and generation == _generation:
            now = _monotonic()
            if not force_check and now < check_at:
                return conn
            try:
                same = file_id(self._path) == state.file
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
            new_generation()
            with _prepare_lock:
                _prepared.discard(self._path)
        return self._open(state)

    def _open(self, state: ThreadState) -> sqlite3.Connection:
        _register_fork_hooks()
        old, state.conn = state.conn, None
        # One inherited through fork was closed after it (or kept as an orphan). One of
        # this process's is left for a new file: SQLite neither checkpoints nor deletes
        # the WAL of a file that was moved or unlinked (its path names another one).
        if old is not None and state.pid == os.getpid():
            old.close()
        with _prepare_lock:
            # Prepared once per process, but a file deleted since (its directory with
            # it) is made again: a connection of a new thread would otherwise open a
            # path that no longer exists, and fail on every call.
            if self._path not in _prepared or not os.path.exists(self._path):
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
            # Identity first: if the file is replaced before connect() opens it, the
            # next check sees a mismatch and reopens (the other order could miss it
            # forever).
            file = file_id(self._path)
            options = self._options
            key = (self._path, options.busy_timeout, options.synchronous)
            idle = _take(key, generation, file)
        if idle is None:
            # Opened and registered under the lock (``sqlite_file.in_use``), its
            # pragmas outside it (``sqlite_file.connect``).
            conn = sqlite_file.connect(
                self._path, options.busy_timeout, options.synchronous, _prepare_lock
            )
            json = has_json(conn)
        else:
            # Another thread's, left idle: the same file, opened since the last fork
            # or new generation (``_take`` set its busy_timeout as connect() did).
            conn, json = idle[0], idle[4]
        conn.owner = (os.getpid(), _get_ident())
        _live.add(conn)
        _held.add(conn)  # (before the closer: its creation may run an old one's)
        state.live = (conn, _monotonic() + FILE_CHECK_INTERVAL, generation)
        state.pid = os.getpid()
        state.file = file
        state.pending = {}
        # Whatever the connection did for another instance is not this one's: its
        # own-writes bookkeeping (``changes_since(skip_own=True)``) starts afresh.
        state.seen = None
        state.json = json
        state.closer = _Closer(conn, key, generation, file, json)
        return conn

    def _on_error(self, exc: sqlite3.DatabaseError) -> None:
        """Re-raise ``exc`` unless it says the file is damaged (then start a fresh file)
        or lacks our tables (then prepare it again at the next use).

        A file this process cannot write (made read-only since it was opened: a new
        thread's connection opens it read-only) raises an ``OperationalError`` naming
        ``LOCATION`` and the OS error, not SQLite's bare "attempt to write a readonly
        database": an error of the level, as for a ``LOCATION`` that became unusable.
        """
        # A file without our tables: made by another process that is installing them
        # now (a thread of ours reached a replaced file first, past the prepare that
        # waits for that install under the ``.lock``), or emptied by hand. Prepared
        # again at the next use, as after damage, without moving it aside.
        unprepared = _unprepared(exc)
        if not unprepared and not sqlite_file.is_corruption(exc):
            if sqlite_file.result_code(exc) == sqlite_file.READONLY_CODE:
                with _prepare_lock:  # (see sqlite_file.in_use)
                    denied = sqlite_file.write_denied(self._path)
                error = sqlite3.OperationalError(
                    f"SQLiteCache LOCATION {self._path!r} cannot be written by this "
                    f"process: {denied or exc}. Make the file, its -wal and -shm and "
                    f"their directory writable by this process's user."
                )
                error.sqlite_errorcode = exc.sqlite_errorcode  # type: ignore[attr-defined]
                error.sqlite_errorname = exc.sqlite_errorname  # type: ignore[attr-defined]
                raise error from exc
            raise exc
        state = self._state
        conn, state.conn = state.conn, None
        if conn is not None:
            conn.close()
        if unprepared:
            logger.info("SQLiteCache: %s: %s; preparing it again.", self._path, exc)
        else:
            with sqlite_file.open_lock(self._path):
                current = file_id(self._path)
                # Another process may already have replaced the file: then just
                # reconnect.
                if current is not None and current == state.file:
                    try:
                        sqlite_file.quarantine(self._path, str(exc))
                    except sqlite_file.NotRegularFileError as refused:
                        raise ImproperlyConfigured(
                            f"SQLiteCache LOCATION {self._path!r} is damaged ({exc}) "
                            f"and cannot be moved aside: {refused}."
                        ) from exc
        with _prepare_lock:
            _prepared.discard(self._path)
        if not unprepared:
            # The other threads of this process leave the old file too.
            new_generation()

    def _write(self, operation: Callable[..., _T], *args: Any) -> _T:
        """Run a write; after a damaged file was replaced, run it once more on the new one."""
        try:
            result = operation(self._connection(), *args)
        except sqlite3.DatabaseError as exc:
            self._on_error(exc)
            result = operation(self._connection(), *args)
        if _monotonic() >= self._wal_check_at:
            self._bound_wal()
        return result

    def _bound_wal(self) -> None:
        """Restart a WAL that outgrew :data:`WAL_RESTART_BYTES`, if that is quick.

        SQLite's automatic checkpoint is PASSIVE, and the WAL starts again from its
        beginning only when a write begins with every frame checkpointed. With two
        processes writing without pause, the other one's write has always begun by
        the time the committer's checkpoint ends: every checkpoint completed, and the
        WAL still grew to 100-245 MB (docs/sqlite.md). A TRUNCATE checkpoint takes
        the write lock, so nothing is appended while it finishes. Run after a PASSIVE
        one (which copies the bulk without blocking anyone), it holds that lock for
        the few frames written since; it waits :data:`WAL_TRUNCATE_WAIT` at most for
        the lock and the readers, then is a PASSIVE checkpoint (a later write retries).
        """
        self._wal_check_at = _monotonic() + WAL_CHECK_INTERVAL
        try:
            size = os.stat(sqlite_file.real_path(self._path) + "-wal").st_size
        except OSError:
            return
        if size <= WAL_RESTART_BYTES:
            return
        conn = self._state.conn
        if conn is None or conn.in_transaction:
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            busy, frames, done = self._truncate_wal(conn)
        except sqlite3.DatabaseError as exc:  # only an upkeep: the write is done
            logger.debug("SQLiteCache: no checkpoint of %s (%s).", self._path, exc)
            return
        if busy:
            logger.debug(
                "SQLiteCache: the WAL of %s is busy, not restarted (%s of %s frames "
                "checkpointed); a later write retries.",
                self._path,
                done,
                frames,
            )
            if size > WAL_WARN_FACTOR * WAL_RESTART_BYTES and 0 <= done < frames:
                # (Frames left uncopied: a reader's snapshot. All copied, it was the
                # other writers' lock, which the next try usually gets.)
                self._warn_wal_held(size, frames, done)

    def _warn_wal_held(self, size: int, frames: int, done: int) -> None:
        now = _monotonic()
        if now < _wal_warned.get(self._path, 0.0):
            return
        _wal_warned[self._path] = now + WAL_WARN_INTERVAL
        logger.warning(
            "SQLiteCache: the WAL of %s is %d MB and cannot be restarted (%s of %s "
            "frames checkpointed): a connection holds a read transaction open (an "
            "sqlite3 shell, a backup, a script that never commits), and every write "
            "adds to the WAL until it ends. End that transaction; the WAL is "
            "restarted by the next write after it (logged at most once a minute).",
            self._path,
            size // 1_000_000,
            done,
            frames,
        )

    def _truncate_wal(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """``PRAGMA wal_checkpoint(TRUNCATE)``, retried for :data:`WAL_TRUNCATE_WAIT`.

        SQLite does not wait for another connection's checkpoint (busy, -1 frames):
        the other writers' automatic checkpoints, one after each of their commits
        while the WAL is long, hold that lock often; a retry a millisecond later
        finds it free.
        """
        deadline = _monotonic() + WAL_TRUNCATE_WAIT
        try:
            while True:
                left = max(1, int((deadline - _monotonic()) * 1000))
                conn.execute(f"PRAGMA busy_timeout = {left}")
                busy, frames, done = conn.execute(
                    "PRAGMA wal_checkpoint(TRUNCATE)"
                ).fetchone()
                if not busy or _monotonic() >= deadline:
                    return busy, frames, done
                time.sleep(0.001)
        finally:
            conn.execute(
                f"PRAGMA busy_timeout = {int(self._options.busy_timeout * 1000)}"
            )
