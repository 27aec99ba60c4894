"""A process forked while another thread is inside a cache call gets a usable cache.

gunicorn ``--preload`` and multiprocessing fork a process that may have threads (a
coherence listener, a warmer, the app's own). A store lock held by one of them at the
moment of ``fork()`` would be held forever in the child, whose first cache call would
then hang. The stores' locks are held across ``fork()`` (``os.register_at_fork``), so
the child starts with every store consistent and unlocked. The same holds for a
single flight in progress (its leader is a parent thread: its followers in the child
would wait forever) and for MultiLevelCache's shared counters and level health.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from django_smartcache.backends import MultiLevelCache, SmartCache
from django_smartcache.core.singleflight import SingleFlight

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

CHILD_TIMEOUT = 10.0


def _untraced(fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` for a thread that runs without a tracer. Under coverage, every traced
    thread takes coverage's own data lock, which a child forked at that moment would
    inherit held (a hang in coverage, not here): the parent's busy threads opt out."""

    def run() -> None:
        sys.settrace(None)
        fn()

    return run


def _wait(pid: int) -> int | None:
    """The child's exit status, or None if it is still running after the timeout."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def _fork_and_run(child: Callable[[], bool]) -> int | None:
    """Run ``child()`` in a forked child: its exit code (0: True), None if it hung."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads
        pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if child() else 1)
        finally:
            os._exit(2)
    return _wait(pid)


@contextlib.contextmanager
def _held_by_another_thread(lock: Any) -> Iterator[None]:
    """``lock`` held by a (parent) thread for the duration of the block."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            holding.set()
            release.wait()

    holder = threading.Thread(target=_untraced(hold))
    holder.start()
    holding.wait()
    try:
        yield
    finally:
        release.set()
        holder.join()


def test_a_child_does_not_wait_for_a_flight_led_by_a_parent_thread() -> None:
    flight: SingleFlight = SingleFlight()
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait()
        return "parent"

    leader = threading.Thread(target=_untraced(lambda: flight.do("k", slow)))
    leader.start()
    started.wait()
    try:
        assert (
            _fork_and_run(lambda: flight.do("k", lambda: "child") == ("child", False))
            == 0
        )
    finally:
        release.set()
        leader.join()
    assert not flight.in_flight("k")


def test_a_child_gets_multilevel_stats_while_a_parent_thread_held_their_lock(
    tmp_path: Path,
) -> None:
    cache = MultiLevelCache(str(tmp_path / "l2.sqlite3"), {})
    cache.set("k", 1)
    try:
        with _held_by_another_thread(cache._tally._lock):
            code = _fork_and_run(
                lambda: cache.get("k") == 1 and "hits" in cache.stats()
            )
    finally:
        cache.close()
    assert code == 0, "None: the child hung on the tally's lock"


def test_a_child_forked_mid_call_can_use_the_cache() -> None:
    cache = SmartCache("fork-safety", {"OPTIONS": {"MAX_ENTRIES": 200}})
    stop = threading.Event()

    def hammer() -> None:  # keeps the store's lock busy: sets that evict, gets
        i = 0
        while not stop.is_set():
            cache.set(f"k{i % 1000}", i)
            cache.get(f"k{(i * 7) % 1000}")
            i += 1

    worker = threading.Thread(target=_untraced(hammer), daemon=True)
    worker.start()

    def child(round_: int) -> bool:  # one write and one read, then leave at once
        cache.set("from-child", round_)
        return bool(cache.get("from-child") == round_)

    results = []
    try:
        for round_ in range(40):
            results.append(_fork_and_run(lambda r=round_: child(r)))
            if results[-1] is None:
                break
    finally:
        stop.set()
        worker.join()
    assert results == [0] * 40, "None: a child hung on a lock held at fork()"
    assert cache.get("from-child") is None  # children's writes stay in the children


def test_a_child_opens_a_sqlite_file_while_a_parent_thread_held_the_open_lock(
    tmp_path: Path,
) -> None:
    from django_smartcache.backends import SQLiteCache, _sqlite_connection

    def child() -> bool:
        cache = SQLiteCache(str(tmp_path / "child.sqlite3"), {})
        cache.set("k", 1)
        return bool(cache.get("k") == 1)

    # As a thread opening (preparing) another file at the moment of fork(), in a
    # process that has opened one before (as that thread has begun to).
    SQLiteCache(str(tmp_path / "parent.sqlite3"), {}).set("k", 1)
    with _held_by_another_thread(_sqlite_connection._prepare_lock):
        code = _fork_and_run(child)
    assert code == 0, "None: the child hung on the file-opening lock"


def test_a_fork_during_a_new_generation_before_any_connection(tmp_path: Path) -> None:
    # close_all_connections() (Django's setting_changed, a test runner) takes the
    # file-opening lock in a process that has opened no SQLite file yet: the fork
    # hooks that renew it in a child were registered only at the first connection.
    script = f"""
import os, threading, time
import django
from django.conf import settings
settings.configure()
django.setup()
from django_smartcache.backends import SQLiteCache, _sqlite_connection

_sqlite_connection.new_generation()  # the first use of the lock in this process
holding, release = threading.Event(), threading.Event()
def hold():
    with _sqlite_connection._prepare_lock:
        holding.set()
        release.wait()
threading.Thread(target=hold, daemon=True).start()
holding.wait()
pid = os.fork()
if pid == 0:
    cache = SQLiteCache({str(tmp_path / "child.sqlite3")!r}, {{}})
    cache.set("k", 1)
    os._exit(0 if cache.get("k") == 1 else 1)
deadline = time.monotonic() + {CHILD_TIMEOUT}
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        raise SystemExit(os.waitstatus_to_exitcode(status))
    time.sleep(0.005)
os.kill(pid, 9)
raise SystemExit("the child hung on the file-opening lock")
"""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONWARNINGS": "ignore"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=4 * CHILD_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
