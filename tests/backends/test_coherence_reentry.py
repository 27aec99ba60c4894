"""An ``entry_evicted`` receiver may use the cache whose L1 evicted (the signal's
documented promise), from inside that cache's write or promotion (review, session 20).

A MultiLevelCache writes L1 under its coherence lock, in step with the generation
(a promotion, and since session 20 every write), and the L1's eviction is delivered
in the same thread before the lock is released: a receiver writing the same cache
took that lock again, and a plain lock hung the process (reads already, every write
after the change). Real SQLite file, real threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_smartcache.backends.multilevel import MultiLevelCache
from django_smartcache.signals import entry_evicted
from tests.backends.test_multilevel import SMART, _unique

SQLITE = "django_smartcache.backends.SQLiteCache"


@pytest.fixture
def counting(tmp_path: Path) -> Iterator[MultiLevelCache]:
    """A MultiLevelCache whose 5-entry L1 evicts, with a receiver counting the
    evictions in the same cache."""
    cache = MultiLevelCache(
        "",
        {
            "OPTIONS": {
                "LEVELS": [
                    {
                        "BACKEND": SMART,
                        "LOCATION": _unique(),
                        "OPTIONS": {"MAX_ENTRIES": 5},
                    },
                    {"BACKEND": SQLITE, "LOCATION": str(tmp_path / "c.sqlite3")},
                ]
            }
        },
    )

    def count(sender: Any, **kwargs: Any) -> None:
        if not cache.add("evictions", 1):
            cache.incr("evictions")

    entry_evicted.connect(count)
    try:
        yield cache
    finally:
        entry_evicted.disconnect(count)
        cache.close()


def _within(seconds: float, work: Any) -> None:
    done = threading.Event()

    def run() -> None:
        work()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert done.wait(seconds), "the cache call hung (the coherence lock taken twice)"


def test_a_receiver_writing_the_cache_during_its_writes(
    counting: MultiLevelCache,
) -> None:
    _within(10, lambda: [counting.set(f"k{i}", i) for i in range(20)])
    assert counting.get("evictions", levels=None) >= 1


def test_a_receiver_writing_the_cache_during_its_promotions(
    counting: MultiLevelCache,
) -> None:
    level = counting.levels[1]
    level.set_many({counting.make_key(f"k{i}"): i for i in range(20)})
    # Each read misses the 5-entry L1 and promotes from the file: L1 evicts.
    _within(10, lambda: [counting.get(f"k{i}") for i in range(20)])
    assert counting.get("evictions") >= 1
