"""A process forked while another thread is inside a SmartCache call gets a usable cache.

gunicorn ``--preload`` and multiprocessing fork a process that may have threads (a
coherence listener, a warmer, the app's own). A store lock held by one of them at the
moment of ``fork()`` would be held forever in the child, whose first cache call would
then hang. The stores' locks are held across ``fork()`` (``os.register_at_fork``), so
the child starts with every store consistent and unlocked.
"""

from __future__ import annotations

import os
import threading
import time
import warnings

import pytest

from django_smartcache.backends import SmartCache

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

CHILD_TIMEOUT = 10.0


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


def test_a_child_forked_mid_call_can_use_the_cache() -> None:
    cache = SmartCache("fork-safety", {"OPTIONS": {"MAX_ENTRIES": 200}})
    stop = threading.Event()

    def hammer() -> None:  # keeps the store's lock busy: sets that evict, gets
        i = 0
        while not stop.is_set():
            cache.set(f"k{i % 1000}", i)
            cache.get(f"k{(i * 7) % 1000}")
            i += 1

    worker = threading.Thread(target=hammer, daemon=True)
    worker.start()
    results = []
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that fork() with threads may deadlock: what this tests.
            warnings.simplefilter("ignore", DeprecationWarning)
            for round_ in range(40):
                pid = os.fork()
                if pid == 0:  # the child: one write and one read, then leave at once
                    try:
                        cache.set("from-child", round_)
                        ok = cache.get("from-child") == round_
                        os._exit(0 if ok else 1)
                    finally:
                        os._exit(2)
                results.append(_wait(pid))
                if results[-1] is None:
                    break
    finally:
        stop.set()
        worker.join()
    assert results == [0] * 40, "None: a child hung on a lock held at fork()"
    assert cache.get("from-child") is None  # children's writes stay in the children
