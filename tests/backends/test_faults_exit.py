"""A process that exits with a repair pending tries it once (outside probe, session 20).

gunicorn's ``--max-requests`` recycles workers, a reload replaces them: a worker that
wrote while the shared level was down, then exited before the level came back, took
its list of keys to repair along, and the level served the value its write had
replaced, to every process, until the key's timeout (351 reads of the old value, 0 of
the new, in the probe). Real processes (``sys.executable``) over the session's real
redis-server; the outage is the child's own (``OneProcessOutage``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
import redis

from tests.backends.test_multilevel import _unique

pytestmark = pytest.mark.redis

CHILD = textwrap.dedent(
    """
    import sys
    import django
    from django.conf import settings

    settings.configure(
        CACHES={
            "default": {
                "BACKEND": "django_smartcache.backends.MultiLevelCache",
                "KEY_PREFIX": sys.argv[2],
                "OPTIONS": {
                    "LEVELS": [
                        {"BACKEND": "django_smartcache.backends.SmartCache"},
                        {
                            "BACKEND": "tests.backends.test_faults_repair.OneProcessOutage",
                            "LOCATION": sys.argv[1],
                        },
                    ],
                    "RETRY_INTERVAL": 3600,
                },
            }
        },
        LOGGING_CONFIG=None,
    )
    django.setup()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from django.core.cache import cache
    from tests.backends.test_faults_repair import OneProcessOutage

    if sys.argv[4] == "wrote-before":
        cache.set("before", 1)  # the level took a write of this process once
    OneProcessOutage.failing = True
    cache.set("k", "new")  # missed by the level: a suspect of this process
    assert cache.get("k") == "new"  # (from L1)
    OneProcessOutage.failing = sys.argv[3] == "still-down"
    # Exits here, long before RETRY_INTERVAL, with the repair pending.
    """
)


def _child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by a new interpreter; it must exit 0 (its stderr shown if not)."""
    child = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    return child


def _run(
    redis_url: str, prefix: str, outage: str, before: str = "wrote-before"
) -> subprocess.CompletedProcess[str]:
    return _child(CHILD, redis_url, prefix, outage, before)


@pytest.fixture
def stale(redis_url: str) -> Iterator[tuple[redis.Redis, str, str]]:
    """(a client of the session's Redis, a fresh KEY_PREFIX, its key "k" made)."""
    prefix = _unique()
    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}:1:k"
    yield client, prefix, key
    client.delete(key)
    client.close()


def test_a_process_exiting_with_a_repair_pending_repairs_the_level(
    redis_url: str, stale: tuple[redis.Redis, str, str]
) -> None:
    client, prefix, key = stale
    client.set(key, b"old value, replaced by the child's write")
    child = _run(redis_url, prefix, "back")
    assert client.get(key) is None, child.stderr  # repaired: a miss, not the old
    assert "repaired as this process exits" in child.stderr


def test_a_repair_that_still_fails_at_exit_names_the_keys_left_stale(
    redis_url: str, stale: tuple[redis.Redis, str, str]
) -> None:
    client, prefix, key = stale
    client.set(key, b"old")
    child = _run(redis_url, prefix, "still-down")
    assert client.get(key) == b"old"  # nothing could be done...
    # ...but it is said, with the key, once.
    errors = [line for line in child.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, child.stderr
    assert "exits with 1 key(s)" in errors[0] and key in errors[0]
    # A level that never took a write of this process (a test run with no
    # Redis at all): said at WARNING, not as an ERROR (review).
    child = _run(redis_url, prefix, "still-down", "never-wrote")
    lines = child.stderr.splitlines()
    assert not [line for line in lines if line.startswith("ERROR")], child.stderr
    assert [line for line in lines if line.startswith("WARNING") and key in line]


HUNG = textwrap.dedent(
    """
    import socket, sys
    import django
    from django.conf import settings

    # A server that accepts connections and never answers (a hung Redis), and a
    # client with no socket timeout (redis-py before 8): the exit must not wait.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    url = "redis://127.0.0.1:%d/0" % server.getsockname()[1]
    settings.configure(
        CACHES={
            "default": {
                "BACKEND": "django_smartcache.backends.MultiLevelCache",
                "OPTIONS": {
                    "LEVELS": [
                        {"BACKEND": "django_smartcache.backends.SmartCache"},
                        {
                            "BACKEND": "tests.backends.test_faults_repair.OneProcessOutage",
                            "LOCATION": url,
                            "OPTIONS": {
                                "socket_timeout": None,
                                "socket_connect_timeout": None,
                            },
                        },
                    ],
                    "RETRY_INTERVAL": 3600,
                    "COHERENCE": "none",
                },
            }
        },
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.cache import cache
    from tests.backends.test_faults_repair import OneProcessOutage

    OneProcessOutage.failing = True
    cache.set("k", "new")
    OneProcessOutage.failing = False  # "back": the exit repair connects, and hangs
    """
)


def test_a_hung_level_does_not_hold_up_the_exit() -> None:
    """The exit repair waits EXIT_REPAIR_WAIT (2 s) at most (review: with redis-py
    5's default of no socket timeout the process never exited)."""
    started = time.monotonic()
    child = _child(HUNG)
    assert time.monotonic() - started < 20, child.stderr
    assert "not done within 2 s" in child.stderr


GONE = textwrap.dedent(
    """
    import os, shutil, tempfile
    import django
    from django.conf import settings

    directory = tempfile.mkdtemp()
    settings.configure(
        CACHES={
            "default": {
                "BACKEND": "django_smartcache.backends.MultiLevelCache",
                "OPTIONS": {
                    "LEVELS": [
                        {"BACKEND": "django_smartcache.backends.SmartCache"},
                        {
                            "BACKEND": "django_smartcache.backends.SQLiteCache",
                            "LOCATION": os.path.join(directory, "cache", "c.sqlite3"),
                        },
                    ],
                    "RETRY_INTERVAL": 3600,
                },
            }
        },
    )
    django.setup()
    from django.core.cache import cache

    cache.set("before", 1)
    # A write the file missed while down (down: no background repair before exit,
    # which would race the rmtree below and make the directory again itself).
    health = cache._health[1]
    health.failed(OSError("the test's outage"), "set")
    health.missed([cache.make_key("k")])
    shutil.rmtree(directory)
    print(directory)
    """
)


def test_a_level_whose_file_was_removed_is_not_made_again_at_exit() -> None:
    """Review: the exit repair re-created a removed temporary directory and its file
    (mode 0700). A file that is gone serves no stale value: nothing to repair."""
    child = _child(GONE)
    directory = child.stdout.strip()
    assert directory, child.stderr
    assert not os.path.exists(directory), child.stderr
    assert "repair failed" not in child.stderr  # (it said so, of a file deleted)
