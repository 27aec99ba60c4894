"""MultiLevelCache's async reads: L1 hits on the event loop, the rest in a thread.

The answers and the statistics must be those of the sync methods; only where the work
runs differs. Threads are observed by wrapping the module's ``in_thread`` helper (the
levels themselves are real: SmartCache, LocMemCache, a SQLiteCache file).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from django_smartcache.backends import multilevel
from django_smartcache.backends.multilevel import MultiLevelCache

SMART = "django_smartcache.backends.SmartCache"
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
SQLITE = "django_smartcache.backends.SQLiteCache"

_names = itertools.count()


def _unique() -> str:
    return f"ml-async-{time.monotonic_ns()}-{next(_names)}"


def make(levels: list[Any] | None = None, **options: Any) -> MultiLevelCache:
    levels = levels or [{"BACKEND": SMART}, {"BACKEND": LOCMEM, "LOCATION": _unique()}]
    return MultiLevelCache(
        "", {"KEY_PREFIX": _unique(), "OPTIONS": {"LEVELS": levels, **options}}
    )


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions the async twins sent to a thread, in order."""
    seen: list[str] = []
    real = multilevel.in_thread

    def spy(fn: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return real(fn)

    monkeypatch.setattr(multilevel, "in_thread", spy)
    return seen


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_an_l1_hit_is_answered_without_a_thread(hops: list[str]) -> None:
    cache = make(L1_MAX_TTL=1000)
    cache.set("k", {"v": 1})
    cache.set("n", 2)

    async def reads() -> list[Any]:
        return [
            await cache.aget("k"),
            await cache.aget_many(["k", "n"]),
            await cache.ahas_key("k"),
            await cache.aget_or_set("n", 99),
        ]

    assert run(reads()) == [{"v": 1}, {"k": {"v": 1}, "n": 2}, True, 2]
    assert hops == []
    stats = cache.stats()
    assert stats["levels"][0]["hits"] == 4  # aget, aget_many (2), aget_or_set
    assert stats["misses"] == 0


def test_a_large_aget_many_reads_l1_in_a_thread(hops: list[str]) -> None:
    # aget_many read and unpickled every key of L1 on the event loop whatever the
    # batch: 100,000 keys stalled it 1.4 s. Above INLINE_BATCH keys, as SmartCache's
    # own batches, it runs in a thread.
    from django_smartcache.backends.smart import INLINE_BATCH

    cache = make(L1_MAX_TTL=1000)
    store = cache.levels[0]._store
    read_in: list[int] = []
    real = store.get_many

    def get_many(*args: Any, **kwargs: Any) -> Any:
        read_in.append(threading.get_ident())
        return real(*args, **kwargs)

    store.get_many = get_many
    small = {f"s{i}": i for i in range(INLINE_BATCH)}
    large = {f"l{i}": i for i in range(INLINE_BATCH + 1)}
    cache.set_many({**small, **large})

    async def reads() -> tuple[int, Any, Any]:
        return (
            threading.get_ident(),
            await cache.aget_many(iter(small)),
            await cache.aget_many(k for k in large),
        )

    loop_thread, got_small, got_large = run(reads())
    assert (got_small, got_large) == (small, large)
    assert hops == ["get_many"]  # the large one
    assert read_in[0] == loop_thread and read_in[1] != loop_thread
    assert len(read_in) == 2
    assert cache.stats()["levels"][0]["hits"] == len(small) + len(large)


def test_misses_go_below_in_a_thread_and_promote(hops: list[str]) -> None:
    cache = make(L1_MAX_TTL=1000)
    l1, l2 = cache.levels
    key = cache.make_key("k")
    l2.set(key, "from-l2", 60)

    async def reads() -> list[Any]:
        return [await cache.aget("k"), await cache.aget("absent", "dflt")]

    assert run(reads()) == ["from-l2", "dflt"]
    assert hops == ["_get_after_l1", "_get_after_l1"]
    assert l1.get(key) == "from-l2"  # promoted, as by get()
    stats = cache.stats()
    assert [level["hits"] for level in stats["levels"]] == [0, 1]
    assert stats["misses"] == 1


def test_async_and_sync_reads_agree_answers_and_statistics() -> None:
    sync, asyn = make(L1_MAX_TTL=1000), make(L1_MAX_TTL=1000)
    for cache in (sync, asyn):
        cache.set("a", 1)
        cache.set("b", [2])
        cache.levels[1].set(cache.make_key("c"), "c-below", 60)  # only in L2
        cache.set("v2", "two", version=2)

    calls = [
        ("get", ("a",), {}),
        ("get", ("c",), {}),
        ("get", ("zz", "d"), {}),
        ("get_many", (["a", "b", "c", "zz"],), {}),
        ("get_many", (["a", "c"],), {"levels": 1}),
        ("get", ("v2",), {"version": 2}),
        ("get", ("v2",), {}),
        ("has_key", ("b",), {}),
        ("has_key", ("zz",), {}),
        ("get_or_set", ("a", 7), {}),
        ("get_or_set", ("new", 8), {}),
    ]
    expected = [getattr(sync, name)(*args, **kw) for name, args, kw in calls]

    async def replay() -> list[Any]:
        return [
            await getattr(asyn, "a" + name)(*args, **kw) for name, args, kw in calls
        ]

    assert run(replay()) == expected
    for field in ("misses",):
        assert asyn.stats()[field] == sync.stats()[field]
    assert [lv["hits"] for lv in asyn.stats()["levels"]] == [
        lv["hits"] for lv in sync.stats()["levels"]
    ]
    l1_sync, l1_async = (c.levels[0].stats() for c in (sync, asyn))
    for field in ("hits", "misses"):
        assert l1_async[field] == l1_sync[field], field


def test_tagged_entries_are_checked_and_invalidations_seen(hops: list[str]) -> None:
    cache = make(L1_MAX_TTL=1000)
    cache.set("t", "tagged", tags=["books"])
    cache.set("u", "plain")

    async def before() -> list[Any]:
        return [
            await cache.aget("t"),
            await cache.aget_many(["t", "u"]),
            await cache.ahas_key("t"),
        ]

    assert run(before()) == ["tagged", {"t": "tagged", "u": "plain"}, True]
    cache.invalidate_tags("books")

    async def after() -> list[Any]:
        return [
            await cache.aget("t", "gone"),
            await cache.aget_many(["t", "u"]),
            await cache.ahas_key("t"),
            await cache.aget_or_set("t", "recomputed", tags=["books"]),
            await cache.aget("t"),
        ]

    assert run(after()) == ["gone", {"u": "plain"}, False, "recomputed", "recomputed"]


def test_a_due_coherence_poll_sends_the_whole_read_to_a_thread(
    hops: list[str],
) -> None:
    cache = make(L1_MAX_TTL=1000)
    cache.set("k", "v")
    cache._co.deadline = 0.0  # the poll is due: it may read the lower level

    assert run(cache.aget("k")) == "v"
    assert hops == ["get"]


def test_an_l1_that_is_not_in_process_is_always_read_in_a_thread(
    hops: list[str],
) -> None:
    cache = make(
        [
            {"BACKEND": LOCMEM, "LOCATION": _unique()},
            {"BACKEND": LOCMEM, "LOCATION": _unique()},
        ],
        L1_MAX_TTL=1000,
    )
    cache.set("k", "v")
    assert run(cache.aget("k")) == "v"
    assert run(cache.aget_many(["k"])) == {"k": "v"}
    assert hops == ["get", "get_many"]


#: Another process writes "new" under the final key of "k" straight into the SQLite file.
_WRITER = """
import sys
from django.conf import settings
settings.configure()
from django.core.cache.backends.base import default_key_func
from django_smartcache.backends.sqlite import SQLiteCache
level = SQLiteCache(sys.argv[1], {"KEY_FUNCTION": lambda key, *_: key})
level.set(default_key_func("k", sys.argv[2], 1), "new", 300)
"""


def test_another_process_write_is_seen_by_aget_within_the_poll_interval(
    tmp_path: Any,
) -> None:
    location = str(tmp_path / "l2.sqlite3")
    prefix = _unique()
    cache = MultiLevelCache(
        location,
        {
            "KEY_PREFIX": prefix,
            # Only the change log can tell: the L1 copy would live for 1000 s.
            "OPTIONS": {"COHERENCE_INTERVAL": 0.05, "L1_MAX_TTL": 1000},
        },
    )
    cache.set("k", "old")
    assert run(cache.aget("k")) == "old"  # in L1 now

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    subprocess.run(
        [sys.executable, "-c", _WRITER, location, prefix],
        cwd=root,
        env=env,
        check=True,
        timeout=60,
    )

    async def poll() -> Any:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            value = await cache.aget("k")
            if value == "new":
                return value
            await asyncio.sleep(0.01)
        return value

    assert run(poll()) == "new"


def test_async_edge_cases_match_the_sync_methods(hops: list[str]) -> None:
    import warnings

    from django.core.cache import CacheKeyWarning

    cache = make(L1_MAX_TTL=1000)
    cache.set("k", 1)
    cache.set("k", 2, version=2)

    async def calls() -> list[Any]:
        return [
            await cache.aget_many([]),
            await cache.aget_many(["k", "k"]),
            await cache.aget_many(["k"], version=2),
            await cache.aget("k", version=2),
        ]

    assert run(calls()) == [{}, {"k": 1}, {"k": 2}, 2]
    for levels in (0, 3, True, "1"):
        with pytest.raises(ValueError, match="levels"):
            run(cache.aget("k", levels=levels))
        with pytest.raises(ValueError, match="levels"):
            run(cache.aget_many(["k"], levels=levels))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(cache.aget("has space", "d")) == "d"
    assert any(issubclass(w.category, CacheKeyWarning) for w in caught)
    assert hops == ["_get_after_l1"]  # only the miss of the badly named key


@pytest.mark.parametrize("name", ["get_or_set", "get", "set", "add", "get_many"])
def test_async_key_warnings_are_counted_as_the_sync_methods_give_them(
    name: str,
) -> None:
    """A badly named key warns as often from ``aget_or_set`` as from ``get_or_set``
    (Django's get, add, get): the L1 fast path used to warn once more before it."""
    import warnings

    from django.core.cache import CacheKeyWarning

    cache = make()

    def call(method: Any, key: str) -> Any:
        if name == "get_many":
            return method([key, key + "2"])
        if name in ("get", "get_or_set"):
            return method(key, "d") if name == "get" else method(key, lambda: "v")
        return method(key, "v")

    counts = []
    for method, key in (
        (getattr(cache, name), "has space sync"),
        (lambda *a: run(getattr(cache, "a" + name)(*a)), "has space async"),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(method, key)
        counts.append(sum(issubclass(w.category, CacheKeyWarning) for w in caught))
    assert counts[0] == counts[1] > 0


@pytest.mark.parametrize("levels", [0, 5, -1, "x", True])
def test_a_bad_levels_raises_even_when_l1_holds_the_key(levels: Any) -> None:
    cache = make()
    cache.set("k", "v")
    for read in (
        lambda: cache.get("k", levels=levels),
        lambda: cache.has_key("k", levels=levels),
        lambda: run(cache.aget("k", levels=levels)),
        lambda: run(cache.ahas_key("k", levels=levels)),
    ):
        with pytest.raises(ValueError, match="levels must be an int"):
            read()


def test_a_cancelled_write_is_not_overtaken_by_the_tasks_next_read(tmp_path) -> None:
    """asgiref raises a cancelled call's CancelledError at once and lets its thread
    run on; the task's next read, answered from L1 on the loop, overtook the write (an
    outside probe: a cancelled aclear's values read back, then gone; a timed-out aincr
    read back as not counted, then counted). The write is waited for now, as
    SmartCache's batches are. Here the write waits for another connection's lock."""
    import asyncio
    import sqlite3
    import threading

    from asgiref.sync import ThreadSensitiveContext

    from django_smartcache.backends.multilevel import MultiLevelCache

    path = tmp_path / "c.sqlite3"
    # (BUSY_TIMEOUT 5 s; no coherence poll due, so an L1 hit is answered on the loop.)
    cache = MultiLevelCache(str(path), {"OPTIONS": {"COHERENCE_INTERVAL": 60}})
    cache.set("n", 10)
    assert cache.get("n") == 10  # (in L1)
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")  # clear() waits for this in its thread

    async def main() -> object:
        async with ThreadSensitiveContext():
            task = asyncio.ensure_future(cache.aclear())
            await asyncio.sleep(0.1)  # its thread waits for the lock now
            task.cancel()
            threading.Timer(0.2, lambda: locker.execute("ROLLBACK")).start()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await cache.aget("n")

    try:
        assert asyncio.run(main()) is None
    finally:
        locker.close()
        cache.close()
