"""Django's ``BaseCacheTests`` against ``MultiLevelCache`` on its default levels.

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

from django.core.cache import caches

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
