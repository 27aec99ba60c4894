"""A thread's SQLite connection is shared by every cache instance of the file.

Django's ``caches`` is context-local: under ASGI every concurrent request (task) builds
its own instances. With a connection per instance (two descriptors, kept for the
instance's life), 300 concurrent requests that each did one ``aset`` and then awaited
something else held 300 connections, though their calls all ran in one thread; 450 on
a MultiLevelCache ran the process out of descriptors under ``ulimit -n 1024`` (EMFILE
in the server's accept(), the L2 marked down). Real files, threads and event loops.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import ThreadSensitiveContext

from django_smartcache.backends import (
    MultiLevelCache,
    SQLiteCache,
    _sqlite_connection,
    _sqlite_file,
)


@pytest.fixture
def location(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "cache.sqlite3")
    _sqlite_connection._close_pool()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    paths: list[str] = []
    connect = _sqlite_file.connect

    def counting(path: str, *args: Any) -> _sqlite_file.Connection:
        paths.append(path)
        return connect(path, *args)

    monkeypatch.setattr(_sqlite_file, "connect", counting)
    return paths


def _fds_on(location: str) -> int:
    """This process's descriptors on the cache file (and its -wal, -shm)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(location)
        except OSError:
            pass
    return count


needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc"
)


def _in_use(location: str) -> int:
    """Open connections of this process on ``location`` that a thread holds."""
    count = 0
    for conn in list(_sqlite_connection._live):
        try:
            conn.execute("SELECT 1")
        except Exception:  # noqa: BLE001, S112 - closed
            continue
        if conn.owner[1] != 0 and any(
            row[2] == location for row in conn.execute("PRAGMA database_list")
        ):
            count += 1
    return count


def test_instances_of_one_file_in_one_thread_share_one_connection(
    location: str, opened: list[str]
) -> None:
    caches = [SQLiteCache(location, {}) for _ in range(50)]
    for i, cache in enumerate(caches):
        cache.set(f"k{i}", i)
    for i, cache in enumerate(caches):
        assert cache.get(f"k{i}") == i
        assert cache.get(f"k{(i + 1) % 50}") == (i + 1) % 50
    assert len(opened) == 1
    assert len({id(cache._state.conn) for cache in caches}) == 1
    assert _in_use(location) == 1


@needs_proc
def test_concurrent_tasks_with_an_instance_each_keep_descriptors_bounded(
    location: str, opened: list[str]
) -> None:
    """As the probe: each task (an ASGI request) its own instance, an ``aset``, then
    an await of something else; their sync calls all run in asgiref's one thread."""
    n = 150
    peak = [0]

    async def request(i: int) -> None:
        cache = SQLiteCache(location, {})  # Django's per-context instance
        await cache.aset(f"k{i}", i)
        await asyncio.sleep(0.2)  # the view awaits an API, the ORM...
        peak[0] = max(peak[0], _fds_on(location))
        assert await cache.aget(f"k{i}") == i

    async def main() -> None:
        await asyncio.gather(*(request(i) for i in range(n)))

    asyncio.run(main())
    # Before: 150 connections, 301 descriptors on the file while the tasks waited.
    assert peak[0] <= 10, f"{peak[0]} descriptors on the file for {n} tasks"
    assert len(opened) <= 2


def test_requests_with_a_thread_each_hold_no_connection_while_they_await(
    location: str,
) -> None:
    """Django's ASGI handler runs each request's sync code in a thread of its own
    (ThreadSensitiveContext), alive until the request ends: a request awaiting
    something else holds no connection (before: one each, until the request ended)."""
    n = 40
    held: list[int] = []
    written = [0]

    async def request(i: int) -> None:
        async with ThreadSensitiveContext():
            cache = MultiLevelCache(location, {})
            await cache.aset(f"k{i}", i)
            written[0] += 1
            await asyncio.sleep(0.5)
            assert await cache.aget(f"k{i}") == i

    async def main() -> None:
        tasks = [asyncio.create_task(request(i)) for i in range(n)]
        while written[0] < n:  # every request has written, and awaits
            await asyncio.sleep(0.01)
        held.append(_in_use(location))
        await asyncio.gather(*tasks)

    asyncio.run(main())
    # At most the event loop's own thread's (MultiLevelCache polls from it); before: 41.
    assert held[0] <= 1, f"{held[0]} connections held by {n} waiting requests"


def test_a_plain_instance_writing_through_the_shared_connection_drops_l1(
    location: str,
) -> None:
    """The commits of another instance on the thread's shared connection are not the
    MultiLevelCache's own: its coherence poll must drop the key from L1."""
    interval = 0.05  # MultiLevelCache's default COHERENCE_INTERVAL
    ml = MultiLevelCache(location, {})
    ml.get("warm-up")  # the first poll: the cursor
    ml.set("k", 1)
    time.sleep(interval * 2)
    assert ml.get("k") == 1  # polled: its own write, kept in L1
    plain = SQLiteCache(location, {})
    plain.set("k", 2)
    assert plain._state is ml._levels[-1]._state  # one connection for both
    time.sleep(interval * 2)
    assert ml.get("k") == 2


def test_a_call_within_a_write_of_another_instance_keeps_the_outer_transaction(
    location: str,
) -> None:
    """A default computed by get_or_set that uses another instance of the file (on
    the same, shared connection) neither commits nor breaks the caller's write."""
    outer, inner = SQLiteCache(location, {}), SQLiteCache(location, {})

    def compute() -> int:
        inner.set("inner", 1)
        assert inner.get_or_set("inner2", lambda: outer.get("inner")) == 1
        return 7

    assert outer.get_or_set("outer", compute) == 7
    assert outer.get_many(["outer", "inner", "inner2"]) == {
        "outer": 7,
        "inner": 1,
        "inner2": 1,
    }
    conn = outer._state.conn
    assert conn is not None and not conn.in_transaction
