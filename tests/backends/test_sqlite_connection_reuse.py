"""Idle SQLite connections are reused by the next thread, as under ASGI.

Django runs each ASGI request's sync code in a new thread, and its ``caches`` handler
builds new cache instances per request context: with one connection per thread and
instance, closed when the thread's state goes, every request opened a connection
(open, pragmas, JSON check) and, closing the file's last one, made SQLite checkpoint
and delete the WAL. Real files, real threads, a real fork.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from django_smartcache.backends import (
    MultiLevelCache,
    SQLiteCache,
    _sqlite_connection,
    _sqlite_file,
)
from tests.backends.test_smart_fork import _fork_and_run

_T = TypeVar("_T")


@pytest.fixture
def location(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "cache.sqlite3")
    _sqlite_connection._close_pool()  # this test's idle connections: not the next's


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the connections opened from now on (``connect`` calls)."""
    paths: list[str] = []
    connect = _sqlite_file.connect

    def counting(path: str, *args: Any) -> _sqlite_file.Connection:
        paths.append(path)
        return connect(path, *args)

    monkeypatch.setattr(_sqlite_file, "connect", counting)
    return paths


def in_new_thread(fn: Callable[[], _T]) -> _T:
    """``fn()`` in a new thread that ends before this returns (a request's thread)."""
    result: list[_T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def request(location: str, key: str, previous: str | None) -> sqlite3.Connection:
    """One request: a new instance (Django's per-context cache), a write and reads;
    the connection it used."""
    cache = SQLiteCache(location, {})
    cache.set(key, key)
    assert cache.get(key) == key
    if previous is not None:
        assert cache.get(previous) == previous  # written through another instance
    cache.close()  # request_finished
    conn = cache._state.conn
    assert conn is not None
    return conn


def test_a_thread_and_instance_per_request_reuses_one_connection(
    location: str, opened: list[str]
) -> None:
    previous = None
    used = []
    for i in range(50):
        used.append(
            in_new_thread(functools.partial(request, location, f"k{i}", previous))
        )
        previous = f"k{i}"
        # The connection is idle, not closed: SQLite neither checkpointed nor deleted
        # the WAL, which the next request would have had to recreate.
        assert os.path.exists(location + "-wal"), f"WAL deleted after request {i}"
    assert len(opened) <= 2, f"{len(opened)} connections opened for 50 requests"
    assert all(conn is used[0] for conn in used)


def test_threads_at_once_take_a_connection_each_and_the_pool_is_bounded(
    location: str, opened: list[str]
) -> None:
    n = _sqlite_connection.POOL_SIZE + 4
    cache = SQLiteCache(location, {})
    ready, go = threading.Barrier(n), threading.Event()
    conns: list[sqlite3.Connection] = []

    def work() -> None:
        cache.set(f"t{threading.get_ident()}", 1)
        conns.append(cache._state.conn)  # type: ignore[arg-type]
        ready.wait()
        go.wait()

    threads = [threading.Thread(target=work) for _ in range(n)]
    for thread in threads:
        thread.start()
    while len(conns) < n:
        time.sleep(0.001)
    assert len({id(conn) for conn in conns}) == n  # never two threads on one
    go.set()
    for thread in threads:
        thread.join()
    key = (location, cache._options.busy_timeout, cache._options.synchronous)
    idle = [entry[0] for entry in _sqlite_connection._pool[key]]
    assert len(idle) == _sqlite_connection.POOL_SIZE
    closed = [conn for conn in conns if not any(conn is i for i in idle)]
    assert len(closed) == 4
    for conn in closed:  # beyond the bound: closed, not left to the collector
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")


def test_close_all_connections_closes_idle_ones_and_they_are_not_reused(
    location: str, opened: list[str]
) -> None:
    first = in_new_thread(lambda: request(location, "a", None))
    assert in_new_thread(lambda: request(location, "b", "a")) is first
    _sqlite_connection.close_all_connections()
    with pytest.raises(sqlite3.ProgrammingError):
        first.execute("SELECT 1")
    count = len(opened)
    assert in_new_thread(lambda: request(location, "c", "b")) is not first
    assert len(opened) == count + 1


def test_connections_of_an_older_generation_are_neither_reused_nor_kept(
    location: str, opened: list[str]
) -> None:
    """A new generation (a thread found LOCATION naming another file, or a damaged
    file replaced) reopens every connection: the idle ones too, and one whose thread
    ends after it is closed, not left idle."""
    idle = in_new_thread(lambda: request(location, "a", None))
    holding, release = threading.Event(), threading.Event()
    held: list[sqlite3.Connection] = []

    def hold() -> None:
        cache = SQLiteCache(location, {})  # kept until the thread ends
        cache.set("b", "b")
        held.append(cache._state.conn)  # type: ignore[arg-type]
        holding.set()
        release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait()
    assert held[0] is idle  # taken from the pool
    other = in_new_thread(lambda: request(location, "c", "a"))  # opens a second
    _sqlite_connection.new_generation()
    release.set()
    holder.join()  # its connection is of the old generation: closed
    with pytest.raises(sqlite3.ProgrammingError):
        idle.execute("SELECT 1")
    count = len(opened)
    conn = in_new_thread(lambda: request(location, "d", "c"))
    assert conn is not idle and conn is not other
    assert len(opened) == count + 1
    with pytest.raises(sqlite3.ProgrammingError):
        other.execute("SELECT 1")  # met in the pool, of the old generation: closed


def test_an_idle_connection_is_not_reused_once_location_names_another_file(
    location: str, opened: list[str]
) -> None:
    first = in_new_thread(lambda: request(location, "a", None))
    # Deleted (as another process may, or moved aside as damaged) and made again.
    for suffix in ("", "-wal", "-shm"):
        os.unlink(location + suffix)

    def on_the_new_file() -> sqlite3.Connection:
        cache = SQLiteCache(location, {})
        assert cache.get("a") is None  # not the old file's value
        cache.set("b", 2)
        return cache._state.conn  # type: ignore[return-value]

    count = len(opened)
    assert in_new_thread(on_the_new_file) is not first
    assert len(opened) == count + 1
    with pytest.raises(sqlite3.ProgrammingError):
        first.execute("SELECT 1")  # closed when met, not kept
    raw = sqlite3.connect(location)
    try:
        assert raw.execute("SELECT count(*) FROM smartcache_entry").fetchone() == (1,)
    finally:
        raw.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_reuse_its_parents_idle_connection(
    location: str, opened: list[str]
) -> None:
    parents = in_new_thread(lambda: request(location, "a", None))

    def child() -> bool:
        if any(_sqlite_connection._pool.values()):
            return False
        cache = SQLiteCache(location, {})
        cache.set("child", 1)
        mine = in_new_thread(lambda: request(location, "c", "a"))
        return (
            cache._state.conn is not parents
            and mine is not parents
            and cache.get("child") == 1
        )

    assert _fork_and_run(child) == 0

    # The parent's idle connection is still good for the parent, and sees the child's.
    def after() -> sqlite3.Connection:
        conn = request(location, "b", "c")
        assert SQLiteCache(location, {}).get("child") == 1
        return conn

    assert in_new_thread(after) is parents


def test_a_multilevel_cache_on_a_connection_a_plain_cache_wrote_through_drops_l1(
    location: str,
) -> None:
    """A pooled connection's commits were another instance's: a MultiLevelCache that
    takes it must not count them as its own (its L1 does not have them)."""
    interval = 0.05  # MultiLevelCache's default COHERENCE_INTERVAL

    def multilevel_writes() -> sqlite3.Connection:
        ml = MultiLevelCache(location, {})
        ml.get("warm-up")  # the first poll: the cursor
        ml.set("k", 1)
        time.sleep(interval * 2)
        assert ml.get("k") == 1  # polled: its own write, kept in L1
        assert ml.get("k") == 1
        return ml._levels[-1]._state.conn  # type: ignore[no-any-return]

    def plain_writes() -> sqlite3.Connection:
        plain = SQLiteCache(location, {})
        plain.set("k", 2)
        return plain._state.conn  # type: ignore[return-value]

    def multilevel_reads() -> tuple[Any, sqlite3.Connection]:
        ml = MultiLevelCache(location, {})
        time.sleep(interval * 2)
        return ml.get("k"), ml._levels[-1]._state.conn

    conn = in_new_thread(multilevel_writes)
    assert in_new_thread(plain_writes) is conn
    value, again = in_new_thread(multilevel_reads)
    assert again is conn  # the same connection, reused by a MultiLevelCache
    assert value == 2


def test_a_connection_left_inside_a_transaction_is_closed_not_kept(
    location: str,
) -> None:
    def begin() -> sqlite3.Connection:
        cache = SQLiteCache(location, {})
        conn = cache._connection()
        conn.execute("BEGIN")
        return conn

    conn = in_new_thread(begin)
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
    assert in_new_thread(lambda: request(location, "a", None)) is not conn


class _ClosedByItsFinalizer(_sqlite_file.Connection):
    """A connection as Python 3.12 made them (and 3.13 on): closed by its finalizer."""

    def __del__(self) -> None:
        self.close()


@pytest.fixture
def finalized(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections closed by their finalizer, as from Python 3.12 on (emulated before)."""
    if not hasattr(sqlite3.Connection, "__del__"):
        monkeypatch.setattr(_sqlite_file, "Connection", _ClosedByItsFinalizer)


def test_a_connection_collected_in_a_cycle_is_pooled_open_not_closed(
    location: str, finalized: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A request's MultiLevelCache is cyclic garbage: the collector finalizes its SQLite
    level's thread state, the connection's closer and, from Python 3.12 on, the
    connection itself (its finalizer closes it), in no set order. The closer put the
    connection in the pool, where the next request took it closed: "Cannot operate on
    a closed database", the level marked down, the write lost (16 concurrent requests
    under uvicorn, 3 servers of 3). A connection a closer may pool is never garbage."""
    caplog.set_level(logging.WARNING, logger="django_smartcache")
    gc.collect()
    gc.disable()  # collected below, at moments a server's collector may pick
    try:
        for i in range(20):
            ml = MultiLevelCache(location, {})  # a request's own instance
            in_new_thread(functools.partial(ml.set, f"k{i}", i))  # sync_to_async
            gc.collect()  # a collection while the request runs (it reorders)
            ml.get(f"k{i}")
            level = ml._levels[-1]
            final = ml.make_and_validate_key(f"k{i}")
            assert in_new_thread(functools.partial(level.get, final)) is not None, (
                f"request {i}: the write did not reach the file"
            )
            del ml, level
            gc.collect()  # the request's instance is cyclic garbage
            for idle in _sqlite_connection._pool.values():
                for conn, *_ in idle:
                    conn.execute("SELECT 1")  # open, not closed
    finally:
        gc.enable()
    assert not [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
