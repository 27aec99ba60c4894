"""Django's ``BaseCacheTests`` against ``MultiLevelCache``: on its default levels, and
over a real Redis L2 (SmartCache over Django's RedisCache).

The default is a SmartCache L1 over a SQLiteCache L2 whose file is ``LOCATION``; every
alias of the suite shares that file, as LocMemCache aliases share a LOCATION.

Exceptions (also in ``docs/multilevel.md``): ``test_cull`` and ``test_zero_cull``.
``MAX_ENTRIES``/``CULL_FREQUENCY`` size the SQLite L2, which culls exactly as upstream
expects (29 and 19 survivors); but a cull below does not reach into L1, whose copies are
still valid values, so through MultiLevelCache more keys may stay readable until they leave
L1 (its own budget, ``L1_MAX_TTL``). The overrides assert the L2 count exactly and that
at least those keys are readable.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import unittest
from pathlib import Path

import pytest
import redis
from django.core.cache import caches

from tests.fixtures.servers import (
    REDIS_INSTALL_HINT as INSTALL_HINT,
    RedisServer,
    find_binary,
    free_port,
)

from .suite import make_conformance_tests

_DIRECTORY = tempfile.mkdtemp(prefix="smartcache-conformance-multilevel-")
atexit.register(shutil.rmtree, _DIRECTORY, ignore_errors=True)


def _perform_cull_test(self, cull_cache_name, initial_count, final_count):
    cull_cache = caches[cull_cache_name]
    for i in range(1, initial_count):
        cull_cache.set(f"cull{i}", "value", 1000)
    lowest = cull_cache.levels[-1]
    in_l2 = sum(
        lowest.has_key(cull_cache.make_key(f"cull{i}")) for i in range(1, initial_count)
    )
    self.assertEqual(in_l2, final_count)
    readable = sum(cull_cache.has_key(f"cull{i}") for i in range(1, initial_count))
    # L1 copies may outlive the cull (until the next change check drops them, if a
    # clear elsewhere is logged meanwhile), never the reverse.
    self.assertGreaterEqual(readable, final_count)


MultiLevelCacheConformanceTests = make_conformance_tests(
    "MultiLevelCacheConformanceTests",
    "django_smartcache.backends.MultiLevelCache",
    location=os.path.join(_DIRECTORY, "cache.sqlite3"),
    options={"L1_MAX_TTL": 600},
    overrides={"_perform_cull_test": _perform_cull_test},
)


# -- over a real Redis L2 ----------------------------------------------------------------
#
# The suite's CACHES are fixed when the class is defined, so the port is chosen at import
# and the server is started by the class itself (only when its tests run). As in Django's
# own RedisCache suite, the "cull" aliases are excluded (Redis culls by maxmemory, not
# MAX_ENTRIES; upstream skips those tests with "Culling isn't implemented.").

_REDIS_BINARY = find_binary("redis-server")
_REDIS_PORT = free_port()
_REDIS_LEVELS = [
    {"BACKEND": "django_smartcache.backends.SmartCache"},
    {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{_REDIS_PORT}/0",
    },
]


def _redis_unavailable() -> str | None:
    if _REDIS_BINARY is not None:
        return None
    if os.environ.get("SMARTCACHE_REQUIRE_REDIS") == "1":
        raise RuntimeError(INSTALL_HINT + " (SMARTCACHE_REQUIRE_REDIS=1)")
    return INSTALL_HINT


@pytest.mark.redis
class MultiLevelCacheRedisConformanceTests(
    # Not bound to a module-level name: pytest would collect it without the server.
    make_conformance_tests(  # type: ignore[misc]
        "MultiLevelCacheRedisConformanceTests",
        "django_smartcache.backends.MultiLevelCache",
        options={"LEVELS": _REDIS_LEVELS, "L1_MAX_TTL": 600},
        exclude={"cull", "zero_cull"},
    )
):
    _server: RedisServer | None = None
    # As in Django's own RedisCache suite: Redis refuses INCRBY on a non-integer.
    incr_decr_type_error = redis.exceptions.ResponseError

    @classmethod
    def setUpClass(cls) -> None:
        reason = _redis_unavailable()
        if reason:
            raise unittest.SkipTest(reason)
        workdir = tempfile.mkdtemp(prefix="smartcache-conformance-redis-")
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        assert _REDIS_BINARY is not None
        cls._server = RedisServer(_REDIS_BINARY, _REDIS_PORT, Path(workdir))
        cls._server.start()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        if cls._server is not None:
            cls._server.stop()

    def test_l2_is_the_redis_server(self) -> None:
        # Not vacuous: the values really are in the redis-server this class started.
        caches["default"].set("where", "redis")
        lowest = caches["default"].levels[-1]
        self.assertEqual(type(lowest).__name__, "RedisCache")
        self.assertEqual(lowest.get(caches["default"].make_key("where")), "redis")
        # Nothing in the suite made the Redis level look down (a wrong incr() is the
        # caller's error, raised as Django's RedisCache raises it).
        self.assertEqual(caches["default"].stats()["levels"][1]["errors"], 0)
