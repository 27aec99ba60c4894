"""Backends as Django's own cache tests configure them, for the upstream run.

Django's tests configure LocMemCache with LOCATIONs such as ``""`` or
``"other"``: names of in-process stores.  SQLiteCache and MultiLevelCache read
LOCATION as the path of a database file, so these subclasses map such a name to
a file in ``$SMARTCACHE_UPSTREAM_DIR`` (one per name, as LocMem keeps one store
per name).  ``MultiRedis`` is a MultiLevelCache of a SmartCache L1 over
Django's own RedisCache, one Redis database per LOCATION.

``run.py`` copies this file into the unpacked Django ``tests/`` directory as
``smartcache_shims.py``; it is not imported from the repository.
"""

from __future__ import annotations

import os
import re
from typing import Any

from django_smartcache.backends import MultiLevelCache, SQLiteCache

DATA_DIR = os.environ["SMARTCACHE_UPSTREAM_DIR"]
os.makedirs(DATA_DIR, exist_ok=True)

#: Redis keeps 16 databases unless configured otherwise.
REDIS_DATABASES = 16


def _path(location: str) -> str:
    name = location or "default"
    if os.path.isabs(name):
        return name
    return os.path.join(DATA_DIR, re.sub(r"\W", "_", name) + ".sqlite3")


class SQLite(SQLiteCache):
    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(_path(location), params)


class MultiLevel(MultiLevelCache):
    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(_path(location), params)


_REDIS_DBS: dict[str, int] = {}


class MultiRedis(MultiLevelCache):
    """SmartCache L1 over Django's RedisCache; each LOCATION gets its own Redis db."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        base = os.environ["SMARTCACHE_UPSTREAM_REDIS"]  # redis://127.0.0.1:PORT
        db = _REDIS_DBS.setdefault(location or "", len(_REDIS_DBS))
        if db >= REDIS_DATABASES:
            raise RuntimeError(
                f"more than {REDIS_DATABASES} cache LOCATIONs: {sorted(_REDIS_DBS)}"
            )
        params = dict(params)
        options = dict(params.get("OPTIONS") or {})
        options.setdefault(
            "LEVELS",
            [
                {
                    "BACKEND": "django_smartcache.backends.SmartCache",
                    "LOCATION": f"upstream-l1-{db}",
                },
                {
                    "BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": f"{base}/{db}",
                },
            ],
        )
        params["OPTIONS"] = options
        super().__init__("", params)
