"""The SQLite change-log poll bounds L1 by ``COHERENCE_INTERVAL`` itself.

One thread polls; others that found the deadline passed served L1 while it polled,
and the next deadline was counted from the poll's end: another worker read the old
value 72-120 ms after the change (ASGI probe, 4 gunicorn workers, the 50 ms default,
polls of up to 19 ms under load). A reader now waits for the poll under way, and the
deadline counts from its start. Real SQLite file; the other process's write is made
by a real process; the poll is made slow (a disk under load) by a subclass.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
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


_WRITE = """
import sys
import django
from django.conf import settings
settings.configure()
django.setup()
from django_smartcache.backends import SQLiteCache
identity = {"KEY_FUNCTION": lambda key, prefix, version: key}  # a final key
SQLiteCache(sys.argv[1], identity).set(sys.argv[2], "new", None)
"""


def test_a_reader_waits_for_the_poll_under_way(tmp_path: Any) -> None:
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
    cache.set("k", "old", None)
    assert cache.get("k") == "old"  # in L1
    subprocess.run(
        [sys.executable, "-c", _WRITE, location, cache.make_key("k")],
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    time.sleep(0.1)  # the deadline has passed
    SlowChangeLog.slow = True
    try:
        poller = threading.Thread(target=cache.get, args=("k",))
        poller.start()  # polls, for 0.3 s
        time.sleep(0.1)
        assert cache.get("k") == "new"  # waited for that poll: not L1's "old"
        poller.join()
    finally:
        SlowChangeLog.slow = False
        cache.close()
