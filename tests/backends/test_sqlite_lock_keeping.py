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
