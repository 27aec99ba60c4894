"""Shared fixtures; each group lives in ``tests/fixtures/``."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.memcached_server",
    "tests.fixtures.tagged_caches",
]
