"""The background repair of a level that was down: one at a time.

No server: a stand-in level whose ``delete_many`` blocks until the test lets it go, so
what starts while a repair is running is seen deterministically.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from django_smartcache.backends._level_health import LevelHealth
from tests.fixtures.waiting import eventually


class _Level:
    """Records each ``delete_many`` (keys, whether this instance was closed, how many
    ran at once) and holds it until ``release`` is set."""

    def __init__(self, calls: list[tuple[list[str], bool, int]], release: Any) -> None:
        self.calls = calls
        self.release = release
        self.closed = False

    running = 0
    lock = threading.Lock()

    def delete_many(self, keys: list[str]) -> None:
        with _Level.lock:
            _Level.running += 1
            self.calls.append((sorted(keys), self.closed, _Level.running))
        try:
            self.release.wait(10)
        finally:
            with _Level.lock:
                _Level.running -= 1

    def clear(self) -> None:
        raise AssertionError("no clear was missed")

    def close(self) -> None:
        self.closed = True


def test_one_background_repair_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repair running cleared the timer, so ``reachable()`` (the listener subscribed
    again) and ``missed()`` armed another: two repairs ran at once on the one level
    instance, and the first to end closed it, the other then calling ``None.close()``
    (AttributeError in a timer thread; reviewer's rev_concurrent_repairs.py). Now what
    arrives during a repair waits for it, and is repaired after it."""
    errors: list[BaseException | None] = []
    monkeypatch.setattr(
        threading, "excepthook", lambda args: errors.append(args.exc_value)
    )
    calls: list[tuple[list[str], bool, int]] = []
    release = threading.Event()
    health = LevelHealth(
        "L2",
        retry=0.2,
        log_interval=60.0,
        max_suspects=100,
        rebuild=lambda: _Level(calls, release),  # type: ignore[arg-type,return-value]
    )
    try:
        health.failed(ConnectionError("down"), "set")
        health.missed(["k"])  # a repair at the end of the retry interval
        assert eventually(lambda: len(calls) == 1, 10.0)  # it runs, held in delete_many
        assert health.claim_probe(time.monotonic())  # a caller tries the level
        health.missed(["k2"])  # a write the level missed meanwhile
        health.reachable()  # the coherence channel reached the level
        assert not eventually(lambda: len(calls) > 1, 1.0)  # no second repair meanwhile
        release.set()
        assert eventually(lambda: not (health.suspects or health._repairing), 10.0)
    finally:
        release.set()
        health.stop()
    assert errors == []
    assert [keys for keys, _, _ in calls] == [["k"], ["k2"]]  # k2: after the first
    assert all(not closed and running == 1 for _, closed, running in calls)
