"""SQLiteCache across fork(): SQLite itself is not fork-safe.

A child inherits SQLite's per-file lock bookkeeping of its parent, and any SQLite mutex
a parent thread held at that moment. A fork waits until no thread is inside a
SQLiteCache call, and the child closes every connection it inherited before opening
its own; these tests fork real processes on a real file.
"""

from __future__ import annotations

import inspect
import os
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from django_smartcache.backends import (
    MultiLevelCache,
    SmartCache,
    SQLiteCache,
    _sqlite_connection,
    _sqlite_file,
)
from tests.backends.test_smart_fork import _fork_and_run, _untraced

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("backend", [SQLiteCache, MultiLevelCache])
def test_children_forked_while_a_thread_writes_use_the_file_at_once(
    tmp_path: Path, backend: Any
) -> None:
    cache = backend(str(tmp_path / "cache.sqlite3"), {"TIMEOUT": None})
    cache.set("warm", 1)
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            cache.set_many({f"k{j}": i for j in range(20)})

    writer = threading.Thread(target=_untraced(write))
    writer.start()
    time.sleep(0.1)

    def child(n: int) -> bool:
        started = time.monotonic()
        cache.set(f"child{n}", n)
        # Well under BUSY_TIMEOUT (5 s): a child with a lock it does not really hold,
        # or a mutex held forever, waits it out (or hangs: None below).
        return time.monotonic() - started < 2.5 and cache.get(f"child{n}") == n

    try:
        outcomes = [_fork_and_run(lambda n=n: child(n)) for n in range(6)]
    finally:
        stop.set()
        writer.join()
    assert outcomes == [0] * 6
    assert cache.get_many([f"child{n}" for n in range(6)]) == {
        f"child{n}": n for n in range(6)
    }


_LAUNCHER = """
import os, subprocess, sys, time
import django
from django.conf import settings

location, report = sys.argv[1], sys.argv[2]
conf = {"BACKEND": "django_smartcache.backends.SQLiteCache", "LOCATION": location,
        "TIMEOUT": None}
settings.configure(CACHES={"default": conf})
django.setup()
from django.core.cache import cache

OTHER = f'''
import sys, django
from django.conf import settings
settings.configure(CACHES={{"default": {conf!r}}})
django.setup()
from django.core.cache import cache
if sys.argv[1] == "write":
    cache.set("other:" + sys.argv[2], 1)
else:
    print(len(cache.get_many([f"worker:{{i}}" for i in range(30)])))
'''

def other(*args):
    return subprocess.run([sys.executable, "-c", OTHER, *args], check=True,
                          capture_output=True, text=True).stdout.strip()

cache.set("launcher", 1)  # the launcher used the cache, then forks and exits
if os.fork():
    os._exit(0)
time.sleep(0.2)  # the launcher is gone
for i in range(30):
    cache.set(f"worker:{i}", i)
    if i % 10 == 5:
        other("write", str(i))  # opens, writes, closes: the last one out?
seen = other("read")
with open(report + ".tmp", "w") as out:
    out.write(seen)
os.replace(report + ".tmp", report)
"""


def test_a_worker_whose_launcher_exited_shares_the_file_with_other_processes(
    tmp_path: Path,
) -> None:
    """The launcher used the cache, forked a worker and exited: the worker's writes
    reach the others, and theirs survive the worker's own last close."""
    location, report = tmp_path / "cache.sqlite3", tmp_path / "report"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(location), str(report)],
        check=True,
        env=env,
        timeout=60,
    )
    deadline = time.monotonic() + 60
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert report.read_text() == "30"  # a fresh process saw every write of the worker
    time.sleep(0.5)  # the worker has exited (closed: checkpointed) by now
    cache = SQLiteCache(str(location), {})
    found = cache.get_many(
        [f"worker:{i}" for i in range(30)] + ["other:5", "other:15", "other:25"]
    )
    assert len(found) == 33


def test_no_statement_runs_outside_the_fork_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every path to SQLite is gated: a statement started with no call inside the gate
    (this test runs on one thread) is one a fork could have interrupted."""
    outside: list[str] = []
    connect = _sqlite_file.connect

    def traced(*args: Any) -> Any:
        conn = connect(*args)

        def check(statement: str) -> None:
            if not _sqlite_connection._inside:
                caller = traceback.extract_stack(limit=4)[0]
                outside.append(f"{statement} ({caller.name}, line {caller.lineno})")

        conn.set_trace_callback(check)
        return conn

    monkeypatch.setattr(_sqlite_file, "connect", traced)
    _sqlite_connection.new_generation()  # every connection reopens, traced
    sqlite = SQLiteCache(str(tmp_path / "a.sqlite3"), {"OPTIONS": {"MAX_ENTRIES": 50}})
    multi = MultiLevelCache(str(tmp_path / "b.sqlite3"), {})
    for cache in (sqlite, multi):
        cache.set("k", 1, tags=["t"])
        cache.set_many({f"m{i}": i for i in range(60)}, tags=["t"])
        cache.add("a", 1)
        cache.get("k")
        cache.get_many(["k", "m1", "nope"])
        cache.get_or_set("g", lambda: 2)
        cache.has_key("k")
        cache.incr("a")
        cache.touch("k", 100)
        cache.delete("m2")
        cache.delete_many(["m3", "m4"])
        cache.delete_pattern("m1*")
        cache.invalidate_tags("t")
        cache.get("k")  # a stale envelope: deleted if unchanged
        cache.stats()
        cache.close()
        cache.clear()
    sqlite.set("t", 1, timeout=0.01)
    time.sleep(0.02)
    sqlite.clear_expired()
    sqlite.ttl("k")
    sqlite.ttl_many(["k"])
    sqlite.changes_since(sqlite.change_cursor())
    assert outside == []


def test_every_public_sqlite_method_is_gated() -> None:
    """Each method is ``@gated`` where it is defined: a new public method of the
    SQLite classes left without it fails here, even before a test runs it through
    the tracer above. Async twins hop to a thread and call gated methods there."""
    from django_smartcache.backends._sqlite_budget import BudgetMixin
    from django_smartcache.backends._sqlite_changes import ChangeLogMixin
    from django_smartcache.backends._sqlite_connection import ConnectionMixin
    from django_smartcache.backends.sqlite import BaseSQLiteCache

    gate = _sqlite_connection.gated(lambda: None).__code__

    def is_gated(method: Any) -> bool:
        return getattr(method, "__code__", None) is gate

    ungated = [
        f"{cls.__name__}.{name}"
        for cls in (
            BaseSQLiteCache,
            SQLiteCache,
            ConnectionMixin,
            BudgetMixin,
            ChangeLogMixin,
        )
        for name, method in vars(cls).items()
        if not name.startswith("_")
        and inspect.isfunction(method)
        and not inspect.iscoroutinefunction(method)
        and not is_gated(method)
    ]
    assert ungated == []
    # Private entry points, called from outside a gated method (MultiLevelCache's
    # pattern deletes, TaggingMixin's deletes of stale envelopes).
    assert is_gated(vars(BaseSQLiteCache)["_delete_key_pattern"])
    assert is_gated(vars(SQLiteCache)["_delete_stale"])


def test_a_fork_waits_for_a_call_within_a_call_and_holds_new_calls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gate's own protocol, without forking: ``_before_fork`` returns once no call
    is inside (a nested call goes on: its thread is inside already), and a call that
    arrives meanwhile waits until ``_after_fork_in_parent``."""
    monkeypatch.setattr(_sqlite_connection, "FORK_WAIT", 5.0)
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []
    inner = _sqlite_connection.gated(lambda: order.append("inner"))

    def outer_body() -> None:
        entered.set()
        release.wait(10)
        inner()

    outer = _sqlite_connection.gated(outer_body)
    late = _sqlite_connection.gated(lambda: order.append("late"))
    first = threading.Thread(target=outer)
    first.start()
    entered.wait(10)
    forking = threading.Thread(target=_sqlite_connection._before_fork)
    forking.start()
    while not _sqlite_connection._forking:
        time.sleep(0.001)
    arriving = threading.Thread(target=late)
    arriving.start()
    time.sleep(0.05)
    release.set()
    forking.join(10)
    try:
        assert not forking.is_alive()
        assert _sqlite_connection._quiet_fork
        assert order == ["inner"]  # the late call waits for the fork
    finally:
        _sqlite_connection._after_fork_in_parent()
    arriving.join(10)
    first.join(10)
    assert order == ["inner", "late"]
    assert _sqlite_connection._inside == []


def test_a_fork_waiting_for_sqlite_keeps_no_smartcache_store_locked(
    tmp_path: Path,
) -> None:
    """The SQLite wait runs before the stores' own fork hook takes their locks: an
    in-memory read in another thread goes on while the fork waits for a SQLite write
    that waits for another connection's lock."""
    path = str(tmp_path / "cache.sqlite3")
    sqlite = SQLiteCache(path, {"TIMEOUT": None, "OPTIONS": {"BUSY_TIMEOUT": 10}})
    sqlite.set("warm", 1)
    memory = SmartCache("fork-stall", {"TIMEOUT": None})
    memory.set("x", 1)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process's write, for a while
    writer = threading.Thread(target=_untraced(lambda: sqlite.set("k", 2)))
    writer.start()
    time.sleep(0.2)  # the write waits inside the gate
    forker = threading.Thread(target=_untraced(lambda: _fork_and_run(lambda: True)))
    forker.start()
    deadline = time.monotonic() + 5
    while not _sqlite_connection._forking and time.monotonic() < deadline:
        time.sleep(0.005)
    started = time.monotonic()
    try:
        assert memory.get("x") == 1
        took = time.monotonic() - started
    finally:
        other.execute("COMMIT")
        forker.join(10)
        writer.join(10)
        other.close()
    assert took < 1.0
    assert sqlite.get("k") == 2


_HOOKS = """
import os, sys, time
os.register_at_fork(  # registered first: runs after ours before, before ours after
    before=lambda: CACHE[0].close() if CACHE else None,
    after_in_child=lambda: CACHE[0].get("warm") if CACHE else None,
)
CACHE = []
import django
from django.conf import settings
settings.configure()
django.setup()
from django_smartcache.backends import SQLiteCache
cache = SQLiteCache(sys.argv[1], {"TIMEOUT": None})
cache.set("warm", 1)
CACHE.append(cache)
pid = os.fork()
if pid == 0:
    os._exit(0 if cache.get("warm") == 1 else 1)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_cache_calls_from_other_fork_hooks_neither_hang_nor_use_the_parents(
    tmp_path: Path,
) -> None:
    """A call from a fork hook of the forking thread goes on: in the parent the other
    threads are kept out; in the child it first does the child's work."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    done = subprocess.run(
        [sys.executable, "-c", _HOOKS, str(tmp_path / "cache.sqlite3")],
        check=False,
        env=env,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "0"), done.stderr
