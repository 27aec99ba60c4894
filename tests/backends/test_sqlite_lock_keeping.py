"""A process keeps SQLite's locks on the cache file while its connections are open.

Closing *any* descriptor of a file drops every POSIX lock the process holds on it,
SQLite's too. ``prepare()`` read the file, its ``-wal`` and ``-shm`` through
descriptors of its own, so a second alias on the same file, spelled another way (a
symlinked deploy directory), dropped the first alias's locks: another process then
took itself for the file's last user and, at its close, deleted the ``-wal`` and
``-shm`` under the live connection, which went on alone on the deleted ones (stale
reads, writes lost; outside probe). Here a real process opens both aliases and waits;
this process connects and closes: the ``-shm`` must survive, and the two must see one
history.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

_HOLDER = textwrap.dedent(
    """
    import sys
    import django
    from django.conf import settings

    real, link = sys.argv[1], sys.argv[2]
    settings.configure(CACHES={
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "a": {"BACKEND": "django_smartcache.backends.SQLiteCache", "LOCATION": real},
        "b": {"BACKEND": "django_smartcache.backends.SQLiteCache", "LOCATION": link},
    })
    django.setup()
    from django.core.cache import caches

    caches["a"].set("k", "k's own")
    caches["b"].set("m", "m's")  # the second spelling's first use: prepare()
    print("ready", flush=True)
    for line in sys.stdin:
        print(repr(caches["a"].get("k")), flush=True)
    """
)


@pytest.mark.parametrize("spelling", ["symlinked directory", "same path"])
def test_a_second_alias_on_the_file_keeps_the_first_ones_locks(
    tmp_path: Path, spelling: str
) -> None:
    real_dir = tmp_path / "releases" / "42"
    real_dir.mkdir(parents=True)
    (tmp_path / "current").symlink_to(real_dir)
    real = str(real_dir / "cache.sqlite3")
    link = (
        str(tmp_path / "current" / "cache.sqlite3")
        if spelling == "symlinked directory"
        else real
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, real, link],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"
        # Another process's whole life on the file: it opens, reads and closes. Had
        # the holder lost its locks, this close would be the file's last: it deletes
        # the -wal and -shm the holder still uses.
        other = sqlite3.connect(real)
        other.execute("SELECT count(*) FROM sqlite_master").fetchone()
        other.close()
        assert os.path.exists(real + "-shm")
        writer = sqlite3.connect(real, isolation_level=None)
        writer.execute("PRAGMA journal_mode").fetchone()
        writer.execute(
            "UPDATE smartcache_entry SET value = (SELECT value FROM smartcache_entry"
            " WHERE key = ':1:m') WHERE key = ':1:k'"
        )
        writer.close()
        holder.stdin.write("get\n")
        holder.stdin.flush()
        # The holder reads the row as this process wrote it: one history.
        assert holder.stdout.readline().strip() == '"m\'s"'
    finally:
        holder.kill()
        holder.wait()


def test_a_connection_waiting_to_read_its_file_holds_up_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new connection's first pragma reads the schema and may wait up to
    BUSY_TIMEOUT for another process's lock (a replaced file being recovered). It ran
    under the process-wide lock of the file checks: every other thread's new
    connection, to any file, waited behind it (outside probe: 4.8 s on an unrelated
    file). Only the open and its registration are under that lock now."""
    import threading
    import time

    from django_smartcache.backends import (
        SQLiteCache,
        _sqlite_connection,
        _sqlite_file as sqlite_file,
    )

    slow_path, other_path = str(tmp_path / "slow.sqlite3"), str(tmp_path / "b.sqlite3")
    for path in (slow_path, other_path):  # prepared: what is left is connecting
        cache = SQLiteCache(path, {})
        cache.set("k", 1)
        cache.close()
    _sqlite_connection._close_pool()  # no idle connection to take: each connects
    waiting = threading.Event()
    real_execute = sqlite_file.Connection.execute

    def execute(self: sqlite3.Connection, sql: str, *args: object) -> sqlite3.Cursor:
        if (
            sql.startswith("PRAGMA synchronous")
            and threading.current_thread().name == "slow"
        ):
            waiting.set()
            time.sleep(1.0)  # as if another process held the file
        return real_execute(self, sql, *args)

    monkeypatch.setattr(sqlite_file.Connection, "execute", execute)

    def slow() -> None:
        SQLiteCache(slow_path, {}).get("k")

    thread = threading.Thread(target=slow, name="slow")
    thread.start()
    assert waiting.wait(5)
    took: list[float] = []

    def other() -> None:
        start = time.monotonic()
        SQLiteCache(other_path, {}).get("k")
        took.append(time.monotonic() - start)

    other_thread = threading.Thread(target=other, name="other")
    other_thread.start()
    other_thread.join()
    thread.join()
    assert took[0] < 0.5
