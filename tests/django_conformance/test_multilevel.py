"""Django's ``BaseCacheTests`` against ``MultiLevelCache`` on its default levels.

The default is a SmartCache L1 over a SQLiteCache L2 whose file is ``LOCATION``; every
alias of the suite shares that file, as LocMemCache aliases share a LOCATION.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from .suite import make_conformance_tests

_DIRECTORY = tempfile.mkdtemp(prefix="smartcache-conformance-multilevel-")
atexit.register(shutil.rmtree, _DIRECTORY, ignore_errors=True)

MultiLevelCacheConformanceTests = make_conformance_tests(
    "MultiLevelCacheConformanceTests",
    "django_smartcache.backends.MultiLevelCache",
    location=os.path.join(_DIRECTORY, "cache.sqlite3"),
)
