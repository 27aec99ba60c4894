"""A key that cannot be encoded as UTF-8 (a lone surrogate, as ``os.fsdecode`` or
``surrogateescape`` make of undecodable bytes) where keys leave the process as text.

SQLite stores keys as UTF-8 TEXT: such a key raised the driver's bare
``UnicodeEncodeError`` from deep in a statement. It is refused with Django's
``InvalidCacheKey`` (as its memcached backends refuse the keys memcached cannot store)
before anything is written, for every operation, and by a MultiLevelCache whose lower
level is such a store before L1 holds what the shared level cannot. In-process stores
keep accepting it, as LocMemCache does.
"""

from __future__ import annotations

import asyncio

import pytest
from django.core.cache.backends.base import InvalidCacheKey

from django_smartcache.backends import MultiLevelCache, SmartCache, SQLiteCache
from tests.backends.test_multilevel import REDIS

KEY = "report-\udc80.csv"
OPERATIONS = {
    "set": lambda c: c.set(KEY, 1),
    "add": lambda c: c.add(KEY, 1),
    "get": lambda c: c.get(KEY),
    "get_many": lambda c: c.get_many(["fine", KEY]),
    "set_many": lambda c: c.set_many({"fine": 1, KEY: 2}),
    "delete": lambda c: c.delete(KEY),
    "delete_many": lambda c: c.delete_many(["fine", KEY]),
    "has_key": lambda c: c.has_key(KEY),
    "touch": lambda c: c.touch(KEY),
    "incr": lambda c: c.incr(KEY),
    "get_or_set": lambda c: c.get_or_set(KEY, 1),
    "aget": lambda c: asyncio.run(c.aget(KEY)),
    "aset": lambda c: asyncio.run(c.aset(KEY, 1)),
    "delete_pattern": lambda c: c.delete_pattern("report-\udc80*"),
}


SQLITE = "django_smartcache.backends.SQLiteCache"


@pytest.fixture(params=["sqlite", "custom-key-function", "multilevel", "redis"])
def cache(request, make_cache, tmp_path):
    if request.param == "sqlite":
        return SQLiteCache(str(tmp_path / "c.sqlite3"), {})
    if request.param == "custom-key-function":
        return SQLiteCache(
            str(tmp_path / "c.sqlite3"),
            {"KEY_FUNCTION": lambda key, prefix, version: f"{prefix}-{version}-{key}"},
        )
    if request.param == "redis":
        request.applymarker(pytest.mark.redis)
        url = request.getfixturevalue("redis_url")
        return make_cache({"BACKEND": REDIS, "LOCATION": url})
    return make_cache({"BACKEND": SQLITE, "LOCATION": str(tmp_path / "l2.sqlite3")})


@pytest.mark.parametrize("operation", OPERATIONS)
def test_refused_with_invalid_cache_key_and_nothing_written(cache, operation):
    with pytest.raises(InvalidCacheKey, match="cannot be encoded as UTF-8") as caught:
        OPERATIONS[operation](cache)
    assert "\\udc80" in str(caught.value)  # the key, shown
    assert cache.get("fine") is None  # a batch refused whole: nothing written first
    if isinstance(cache, MultiLevelCache):
        assert len(cache._l1._store) == 0


def test_in_process_stores_keep_accepting_it(make_cache):
    smart = SmartCache("unencodable-keys", {})
    smart.set(KEY, 1)
    assert smart.get(KEY) == 1
    over_memory = make_cache(
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
    over_memory.set(KEY, 2)
    assert over_memory.get(KEY) == 2
