"""Shared fixtures; each group lives in ``tests/fixtures/``."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.memcached_server",
    "tests.fixtures.tagged_caches",
]


def pytest_sessionfinish() -> None:
    """No exit-time repair of the levels the tests left down (their servers and files
    are gone by now): the tests of that repair run in processes of their own."""
    from django_smartcache.backends import _level_health

    for health in list(_level_health._EVERY_HEALTH):
        health.stop()
