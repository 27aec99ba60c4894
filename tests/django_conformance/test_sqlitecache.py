"""Django's ``BaseCacheTests`` against ``SQLiteCache`` on a real file, with no exception.

SQLiteCache keeps Django's MAX_ENTRIES/CULL_FREQUENCY arithmetic, so even upstream's
exact cull counts (29 and 19 survivors) hold unchanged.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from .suite import make_conformance_tests

#: Every alias of the suite shares one file, as LocMemCache aliases share a LOCATION.
_DIRECTORY = tempfile.mkdtemp(prefix="smartcache-conformance-")
atexit.register(shutil.rmtree, _DIRECTORY, ignore_errors=True)

SQLiteCacheConformanceTests = make_conformance_tests(
    "SQLiteCacheConformanceTests",
    "django_smartcache.backends.SQLiteCache",
    location=os.path.join(_DIRECTORY, "cache.sqlite3"),
)
