"""A process that exits with a repair pending tries it once (outside probe, session 20).

gunicorn's ``--max-requests`` recycles workers, a reload replaces them: a worker that
wrote while the shared level was down, then exited before the level came back, took
its list of keys to repair along, and the level served the value its write had
replaced, to every process, until the key's timeout (351 reads of the old value, 0 of
the new, in the probe). Real processes (``sys.executable``) over the session's real
redis-server; the outage is the child's own (``OneProcessOutage``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

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

    OneProcessOutage.failing = True
    cache.set("k", "new")  # missed by the level: a suspect of this process
    assert cache.get("k") == "new"  # (from L1)
    OneProcessOutage.failing = sys.argv[3] == "still-down"
    # Exits here, long before RETRY_INTERVAL, with the repair pending.
    """
)


def _run(redis_url: str, prefix: str, outage: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, redis_url, prefix, outage],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_a_process_exiting_with_a_repair_pending_repairs_the_level(
    redis_url: str,
) -> None:
    prefix = _unique()
    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}:1:k"
    try:
        client.set(key, b"old value, replaced by the child's write")
        child = _run(redis_url, prefix, "back")
        assert client.get(key) is None, child.stderr  # repaired: a miss, not the old
        assert "repaired as this process exits" in child.stderr
    finally:
        client.delete(key)
        client.close()


def test_a_repair_that_still_fails_at_exit_names_the_keys_left_stale(
    redis_url: str,
) -> None:
    prefix = _unique()
    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}:1:k"
    try:
        client.set(key, b"old")
        child = _run(redis_url, prefix, "still-down")
        assert client.get(key) == b"old"  # nothing could be done...
        # ...but it is said, with the key, once.
        errors = [
            line for line in child.stderr.splitlines() if line.startswith("ERROR")
        ]
        assert len(errors) == 1, child.stderr
        assert "exits with 1 key(s)" in errors[0] and key in errors[0]
    finally:
        client.delete(key)
        client.close()
