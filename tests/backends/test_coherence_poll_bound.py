"""The SQLite change-log poll bounds L1 by ``COHERENCE_INTERVAL`` plus one poll.

One thread polls; the others serve L1 meanwhile. The next deadline was counted from
the poll's end, which stretched the bound by up to two polls: another worker read the
old value 72-120 ms after the change (ASGI probe, 4 gunicorn workers, the 50 ms
default, polls of up to 19 ms under load). It counts from the poll's start now. Real
SQLite file; the other writer is another connection; the poll is made slow (a disk
under load) by a subclass.
"""

from __future__ import annotations

import time
from typing import Any

from django_smartcache.backends import SQLiteCache
from django_smartcache.backends.multilevel import MultiLevelCache


class SlowChangeLog(SQLiteCache):
    """A SQLiteCache whose change-log read takes 0.3 s while ``slow`` is set."""

    slow = False

    def changes_since(self, cursor: Any, *, skip_own: bool = False) -> Any:
        if SlowChangeLog.slow:
            time.sleep(0.3)
        return super().changes_since(cursor, skip_own=skip_own)


def test_the_next_poll_is_due_an_interval_after_the_last_one_started(
    tmp_path: Any,
) -> None:
    location = str(tmp_path / "l2.sqlite3")
    cache = MultiLevelCache(
        "",
        {
            "KEY_PREFIX": "poll",
            "OPTIONS": {
                "LEVELS": [
                    {"BACKEND": "django_smartcache.backends.SmartCache"},
                    {"BACKEND": f"{__name__}.SlowChangeLog", "LOCATION": location},
                ],
                "COHERENCE_INTERVAL": 0.05,
            },
        },
    )
    # Another connection (as another process's): its commits are not this L1's own.
    other = SQLiteCache(location, {"KEY_FUNCTION": lambda key, prefix, version: key})
    cache.set("k", "old", None)
    assert cache.get("k") == "old"  # in L1
    time.sleep(0.1)
    SlowChangeLog.slow = True
    try:
        cache.get("k")  # a poll of 0.3 s: nothing new
    finally:
        SlowChangeLog.slow = False
    other.set(cache.make_key("k"), "new", None)
    # Due since the last poll started 0.3 s ago: polled now, not 50 ms after its end.
    assert cache.get("k") == "new"
    other.close()
    cache.close()
